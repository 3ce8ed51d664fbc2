"""Imbalance metrics on hand-made predictions, against scikit-learn and by hand."""
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from fkal.metrics import class_scores, imbalance_metrics, pseudo_label_rare_scores


def test_hand_made_three_classes():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    acc, f1 = class_scores(preds, labels, 3)
    np.testing.assert_allclose(acc, [3 / 4, 1 / 2, 1 / 2])
    # class 0: TP 3, FP 1 (a 1 predicted 0), FN 1 -> 6/8; class 1: TP 1, FP 2, FN 1 -> 2/5; class 2: TP 1, FN 1 -> 2/3
    np.testing.assert_allclose(f1, [6 / 8, 2 / 5, 2 / 3])
    m = imbalance_metrics(acc, f1, rare_classes=[1, 2], labeled_labels=np.array([0, 0, 0, 2]))
    assert m["balanced_accuracy"] == pytest.approx(100 * (0.75 + 0.5 + 0.5) / 3)
    assert m["worst_class"] == 1 and m["worst_class_accuracy"] == pytest.approx(50.0)   # first of the tied
    assert m["best_class_accuracy"] == pytest.approx(75.0)
    assert m["per_class_accuracy_std"] == pytest.approx(100 * np.std([0.75, 0.5, 0.5]))
    assert m["rare_class_accuracy"] == pytest.approx(50.0)
    assert (m["labeled_min_class_count"], m["labeled_max_class_count"]) == (0, 3)     # class 1 has no label


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 300)
    preds = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 6, 300))
    acc, f1 = class_scores(preds, labels, 6)
    m = imbalance_metrics(acc, f1)
    assert m["balanced_accuracy"] == pytest.approx(100 * balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(100 * f1_score(labels, preds, average="macro", labels=range(6),
                                                         zero_division=0))
    assert m["rare_class_accuracy"] is None and m["labeled_min_class_count"] is None


def test_a_class_absent_from_the_test_set_scores_zero():
    acc, f1 = class_scores(np.array([0, 1, 1]), np.array([0, 1, 1]), 3)
    assert acc.tolist() == [1.0, 1.0, 0.0] and f1.tolist() == [1.0, 1.0, 0.0]
    assert imbalance_metrics(acc, f1)["worst_class"] == 2


def test_pseudo_label_rare_precision_and_recall():
    true = np.array([0, 0, 0, 5, 6, 1, 1, 7])
    pseudo = np.array([5, 0, 6, 5, 5, 1, 9, 7])      # rare said at 0, 2, 3, 4, 6, 7; right at 3 and 7
    s = pseudo_label_rare_scores(pseudo, true, [5, 6, 7, 8, 9])
    assert s["pseudo_label_rare_precision"] == pytest.approx(100 * 2 / 6)        # image 4, a 6, called 5: wrong
    assert s["pseudo_label_rare_recall"] == pytest.approx(100 * 2 / 3)
    assert s["pseudo_label_rare_count"] == 6
    none = pseudo_label_rare_scores(np.array([0, 1]), np.array([0, 1]), [5])
    assert none["pseudo_label_rare_precision"] is None and none["pseudo_label_rare_recall"] is None
