"""Test-set metrics of a biased problem, computed once per iteration and kept in every results record.

Overall accuracy hides what matters when the pool is biased: the imbalance-aware methods are judged by balanced
accuracy, macro F1 and the worst class (LabelBench's metrics; docs/results/successors.md, "Metrics"). Definitions, for C classes:

  acc_c                    share of the test images of class c predicted c (a class absent from the test set: 0)
  balanced_accuracy        mean_c acc_c
  macro_f1                 mean_c F1_c, F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), 0 where the denominator is 0
                           (scikit-learn's ``f1_score(average="macro", labels=range(C), zero_division=0)``)
  worst_class_accuracy     min_c acc_c, and ``worst_class`` = its class (the lowest index among ties)
  best_class_accuracy      max_c acc_c
  per_class_accuracy_std   std_c acc_c (ddof 0)
  rare_class_accuracy      mean of acc_c over the protocol's rare classes (None without rare classes)
  labeled_min/max_class_count   labeled images of the least and the most labeled class (all C classes count)

Accuracies and F1 are percentages, like ``test_accuracy``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

METRIC_FIELDS = ("balanced_accuracy", "macro_f1", "worst_class_accuracy", "worst_class", "best_class_accuracy",
                 "per_class_accuracy_std", "rare_class_accuracy", "labeled_min_class_count",
                 "labeled_max_class_count")


def confusion(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts: row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def class_scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy and F1 (fractions), each ``[C]``, of predictions ``[N]`` against ``labels`` ``[N]``."""
    m = confusion(predictions, labels, num_classes).astype(np.float64)
    support = m.sum(1)                                               # [C] test images per class
    tp = np.diag(m)
    acc = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    f1_den = 2 * tp + (m.sum(0) - tp) + (support - tp)               # 2 TP + FP + FN
    f1 = np.divide(2 * tp, f1_den, out=np.zeros(num_classes), where=f1_den > 0)
    return acc, f1


def imbalance_metrics(acc: np.ndarray, f1: np.ndarray, rare_classes: Optional[Sequence[int]] = None,
                      labeled_labels: Optional[np.ndarray] = None) -> dict:
    """The metrics of the module docstring from per-class accuracy and F1 ``[C]`` (``class_scores``; for an
    ensemble, the members' means, so that the fields agree with the record's mean ``per_class_accuracy``);
    ``labeled_labels`` are the labels of the labeled set (for its smallest and largest class)."""
    acc, f1 = np.asarray(acc, dtype=np.float64), np.asarray(f1, dtype=np.float64)
    worst = int(np.argmin(acc))
    rare = list(rare_classes) if rare_classes is not None else []
    out = {
        "balanced_accuracy": 100.0 * float(acc.mean()),
        "macro_f1": 100.0 * float(f1.mean()),
        "worst_class_accuracy": 100.0 * float(acc[worst]),
        "worst_class": worst,
        "best_class_accuracy": 100.0 * float(acc.max()),
        "per_class_accuracy_std": 100.0 * float(acc.std()),
        "rare_class_accuracy": 100.0 * float(acc[rare].mean()) if rare else None,
        "labeled_min_class_count": None,
        "labeled_max_class_count": None,
    }
    if labeled_labels is not None:
        counts = np.bincount(np.asarray(labeled_labels, dtype=np.int64), minlength=len(acc))
        out["labeled_min_class_count"] = int(counts.min())
        out["labeled_max_class_count"] = int(counts.max())
    return out


def pseudo_label_rare_scores(pseudo: np.ndarray, true: np.ndarray, rare_classes: Sequence[int]) -> dict:
    """Precision and recall (%) of the pseudo-labels ``[N]`` on the rare classes, against the true labels ``[N]``:
    precision = rare pseudo-labels that equal the true label / rare pseudo-labels; recall = rare images whose
    pseudo-label equals their label / rare images. None where the denominator is 0. A common image called rare
    lowers the precision (the Fisher-kernel method's weak point); a rare image called common, the recall."""
    pseudo, true = np.asarray(pseudo), np.asarray(true)
    said = np.isin(pseudo, rare_classes)
    is_rare = np.isin(true, rare_classes)
    hits = int((said & (pseudo == true)).sum())
    return {"pseudo_label_rare_precision": 100.0 * hits / said.sum() if said.any() else None,
            "pseudo_label_rare_recall": 100.0 * hits / is_rare.sum() if is_rare.any() else None,
            "pseudo_label_rare_count": int(said.sum())}
