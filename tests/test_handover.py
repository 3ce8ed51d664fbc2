"""pfk-base: the split of the batch computed by hand from D_v, and the picks recomputed from the two acquisitions
it hands over between (each tested against brute force in its own file)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.base import base_query
from fkal.acquisitions.fisher_kernel import match
from fkal.acquisitions.handover import class_accuracy, handover_split, pfk_base_query
from fkal.training import predict


def split_by_hand(pred, labels, C, budget, margin, reference="best"):
    acc = []
    for c in range(C):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        acc.append(100.0 * sum(pred[i] == c for i in rows) / len(rows) if rows else None)
    present = [a for a in acc if a is not None]
    ref = max(present) if reference == "best" else sum(present) / len(present)
    lagging = [a is not None and a < ref - margin for a in acc]
    wrong = [i for i in range(len(labels)) if pred[i] != labels[i]]
    share = sum(lagging[labels[i]] for i in wrong) / len(wrong) if wrong else 0.0
    return int(round(budget * share)), lagging, share


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.0, 5.0, 30.0])
@pytest.mark.parametrize("reference", ["best", "mean"])
def test_the_split_is_the_share_of_misclassified_validation_images_in_lagging_classes(seed, margin, reference):
    g = torch.Generator().manual_seed(seed)
    C = 5
    labels = torch.randint(0, C - 1, (60,), generator=g)          # class 4 never in D_v: never lags
    pred = torch.where(torch.rand(60, generator=g) < 0.3 + 0.15 * labels, torch.randint(0, C, (60,), generator=g),
                       labels)                                    # higher classes more often wrong
    m, lagging, share = handover_split(pred, labels, C, 125, margin, reference)
    m2, lagging2, share2 = split_by_hand(pred.tolist(), labels.tolist(), C, 125, margin, reference)
    assert (m, lagging.tolist(), share) == (m2, lagging2, pytest.approx(share2))
    assert not lagging[4]
    assert torch.isnan(class_accuracy(pred, labels, C)[4])


def test_a_model_that_knows_no_class_yet_matches_against_the_best_class_not_the_mean():
    """Every class near chance (the first iteration: a random classifier layer): against the mean no class lags and
    the whole batch would go to BASE; against the best class the classes under it lag and the batch is matched."""
    right = [20, 15, 12, 10, 10, 8, 8, 7, 6, 6]                                # of 100 a class: mean 10.2
    labels = torch.arange(10).repeat_interleave(100)
    pred = torch.cat([torch.where(torch.arange(100) < k, c, (c + 1) % 10) for c, k in enumerate(right)])
    assert class_accuracy(pred, labels, 10).tolist() == [float(k) for k in right]
    m_mean, lag_mean, _ = handover_split(pred, labels, 10, 125, 5.0, "mean")
    assert (m_mean, int(lag_mean.sum())) == (0, 0)                              # every class within 5 of 10.2
    m_best, lag_best, share = handover_split(pred, labels, 10, 125, 5.0, "best")
    assert lag_best.tolist() == [False, False] + [True] * 8                    # under 20 - 5 = 15
    wrong_lagging = sum(100 - k for k in right[2:])
    assert share == pytest.approx(wrong_lagging / sum(100 - k for k in right)) and m_best == round(125 * share)
    assert (m_best, lag_best.tolist()) == split_by_hand(pred.tolist(), labels.tolist(), 10, 125, 5.0)[:2]
    with pytest.raises(ValueError, match="reference must be one of"):
        handover_split(pred, labels, 10, 125, 5.0, "median")


def test_nothing_misclassified_hands_the_whole_batch_to_base():
    labels = torch.arange(10) % 3
    m, lagging, share = handover_split(labels, labels, 3, 40)
    assert m == 0 and share == 0.0 and not lagging.any()


def test_the_picks_are_the_restricted_matching_then_base_on_the_rest(tiny_mnist):
    """A context where 0 < m < P: the first m picks are the Fisher-kernel matching with the misclassified images
    of lagging classes as centers, the rest BASE's picks among the images not taken, and the record's fields say
    the split."""
    ctx = trained_context(tiny_mnist, "pfk-base-phat-L80", n_labeled=40, epochs=10, budget=12,
                          options={"handover_margin": 30.0})
    pred = predict(ctx.models[0], ctx.data.val_source, ctx.data.split.val, ctx.device, ctx.batch_size).argmax(1)
    m, lagging, share = split_by_hand(pred.tolist(), ctx.data.val_labels.tolist(), 10, ctx.budget, 30.0)
    assert 0 < m < ctx.budget                                     # both halves at work
    generator_state = ctx.generator.get_state()
    result = pfk_base_query(ctx)
    picked = check_contract(ctx, result)

    ctx.generator.set_state(generator_state)
    lag = np.asarray(lagging)
    matched = match(ctx, m, "pfk", centers_among=lambda labels: lag[labels])
    rest = ctx.unlabeled[~np.isin(ctx.unlabeled, matched.indices)]
    boundary = base_query(replace(ctx, unlabeled=rest, budget=ctx.budget - m))
    np.testing.assert_array_equal(picked, np.concatenate([matched.indices, boundary.indices]))
    np.testing.assert_allclose(result.scores, np.concatenate([matched.scores, boundary.scores]))
    assert result.extras == {"handover_share": pytest.approx(share), "handover_matched": m,
                             "handover_lagging": [c for c in range(10) if lagging[c]]}
    # the matching's centers are lagging classes' misclassified images only: with no class lagging the whole
    # batch is BASE's
    ctx.generator.set_state(generator_state)
    ctx.options = {**ctx.options, "handover_margin": 1000.0}
    all_base = pfk_base_query(ctx)
    np.testing.assert_array_equal(all_base.indices, base_query(ctx).indices)
    assert all_base.extras["handover_matched"] == 0
