"""``pfk-base``: the Fisher-kernel matching for the classes the model still gets wrong, BASE's boundary picks for
the rest of the batch, split by what the validation set D_v says each iteration.

Why. Matching the pool to the misclassified validation images (Algorithm 1) finds the rare classes while the
model has not learned them: at IR = 100 its first batches hold 12-26% rare images where uncertainty- and
diversity-based methods pick 3-7%. Once every class is learned it keeps sending picks to the neighbours of the
misclassified validation images, where class-balanced picks at each class's decision boundary (BASE, Emam et
al.) do as well or better. ``pfk-base`` hands the batch over from one to the other as D_v says the classes are
learned, never looking at the test set:

1. Per-class accuracy on D_v, ``acc_c`` (percent). A class *lags* when ``acc_c < ref - margin``
   (``--handover-margin``, points; classes absent from D_v never lag), ``ref`` the best class's accuracy
   (``--handover-reference best``, the default) or the mean over classes (``mean``). Against the mean, a model
   that knows no class yet (the first iteration: a random classifier layer, every class near chance) has no
   lagging class and would hand the whole first batch to BASE; against the best class, it matches.
2. The matching share ``s``: the fraction of the misclassified validation images M^ whose true class lags.
   Early on M^ is the rare classes, all lagging: ``s`` near 1. Once no class lags, ``s = 0``.
3. ``m = round(P s)`` images by the Fisher-kernel matching (``fisher_kernel.match``, kernel R_zg of eq. 12 with
   the configuration's pseudo-labels and L) whose centers are the misclassified images of lagging classes; the
   other ``P - m`` by BASE (``base.base_select``) among the images not picked yet.

Each record holds ``handover_share`` (s), ``handover_matched`` (m) and ``handover_lagging`` (the lagging classes).
Scores: the matching's similarity for the first m picks, BASE's distance for the rest (two units, in order).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from ..arguments import number
from ..training import predict
from .base import base_query
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult, always
from .fisher_kernel import match, monte_carlo_pseudo_labels

DEFAULT_MARGIN = 5.0
DEFAULT_REFERENCE = "best"
REFERENCES = ("best", "mean")
OPTIONS = ("handover_margin", "handover_reference")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--handover-margin", type=number(0), default=DEFAULT_MARGIN, metavar="POINTS",
                        help="pfk-base: a class lags while its accuracy on D_v is more than this many points under "
                             "the reference of --handover-reference; the misclassified validation images of lagging "
                             "classes are matched, the rest of the batch goes to BASE's boundary picks")
    parser.add_argument("--handover-reference", choices=REFERENCES, default=DEFAULT_REFERENCE,
                        help="pfk-base: what a class's D_v accuracy is held against: the best class's (best) or "
                             "the mean over classes (mean, which hands the first batch to BASE when every class "
                             "is near chance)")


def class_accuracy(val_pred: torch.Tensor, val_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C]`` float64 accuracy (percent) of each class on D_v; nan for a class with no validation image."""
    val_pred, val_labels = torch.as_tensor(val_pred).long(), torch.as_tensor(val_labels).long()
    counts = torch.bincount(val_labels, minlength=num_classes).double()
    right = torch.bincount(val_labels[val_pred == val_labels], minlength=num_classes).double()
    return torch.where(counts > 0, 100.0 * right / counts.clamp_min(1), torch.full_like(counts, float("nan")))


def handover_split(val_pred: torch.Tensor, val_labels: torch.Tensor, num_classes: int, budget: int,
                   margin: float = DEFAULT_MARGIN,
                   reference: str = DEFAULT_REFERENCE) -> tuple[int, torch.Tensor, float]:
    """How a batch of ``budget`` is split, from D_v alone.

    Args:
        val_pred: ``[M]`` the model's predicted class of each validation image.
        val_labels: ``[M]`` their true classes.
        num_classes: C.
        budget: P.
        margin: points under the reference at which a class lags.
        reference: ``"best"`` (the best class's accuracy) or ``"mean"`` (the mean over the classes present).

    Returns:
        ``(m, lagging, share)``: m in ``[0, P]`` images for the matching, ``lagging`` ``[C]`` bool, and the share of
        misclassified validation images whose class lags (0 when none is misclassified).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    acc = class_accuracy(val_pred, val_labels, num_classes)
    present = ~torch.isnan(acc)
    if not present.any():
        ref = float("nan")
    else:
        ref = float(acc[present].max()) if reference == "best" else float(acc[present].mean())
    lagging = present & (acc < ref - margin)
    labels = torch.as_tensor(val_labels).long()
    wrong = torch.as_tensor(val_pred).long() != labels
    share = float(lagging[labels[wrong]].double().mean()) if wrong.any() else 0.0
    return int(round(budget * share)), lagging, share


def pfk_base_query(ctx: QueryContext) -> QueryResult:
    """``m`` picks by the matching restricted to lagging classes, ``P - m`` by BASE (see the module docstring)."""
    data, model = ctx.data, ctx.models[0]
    margin = DEFAULT_MARGIN if ctx.options.get("handover_margin") is None else float(ctx.options["handover_margin"])
    probs = predict(model, data.val_source, data.split.val, ctx.device, ctx.batch_size)
    reference = ctx.options.get("handover_reference") or DEFAULT_REFERENCE
    m, lagging, share = handover_split(probs.argmax(1), torch.as_tensor(data.val_labels), data.spec.num_classes,
                                       ctx.budget, margin, reference)
    lag = lagging.numpy()
    parts, scores, stats = [], [], {}
    if m > 0:
        matched = match(ctx, m, "pfk", centers_among=lambda labels: lag[labels])
        parts.append(np.asarray(matched.indices))
        scores.append(np.asarray(matched.scores, dtype=np.float64))
        stats = {"pseudo_label_accuracy": matched.pseudo_label_accuracy, "pseudo_labels": matched.pseudo_labels}
    if m < ctx.budget:
        taken = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        rest = np.asarray(ctx.unlabeled)[~np.isin(ctx.unlabeled, taken)]
        boundary = base_query(replace(ctx, unlabeled=rest, budget=ctx.budget - m))
        parts.append(np.asarray(boundary.indices))
        scores.append(np.asarray(boundary.scores, dtype=np.float64))
    return QueryResult(np.concatenate(parts), np.concatenate(scores), **stats,
                       extras={"handover_share": share, "handover_matched": m,
                               "handover_lagging": [int(c) for c in np.flatnonzero(lag)]})


SPECS = (AcquisitionSpec("pfk-base", pfk_base_query, title="R_zg on lagging classes + BASE", options=OPTIONS,
                         add_arguments=add_arguments, ours=True, needs=frozenset({"val"}), default_L=always,
                         batch_seeded=monte_carlo_pseudo_labels,
                         example=Example("pfk-base-phat-L80",
                                         bars=("validation descriptors", "pool descriptors"))),)
