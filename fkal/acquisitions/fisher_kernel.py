"""The paper's acquisition (Algorithm 1): ``pcc`` (R_z, eq. 6), ``pfk`` (R_zg, eq. 12) and ``pfk-sum`` (R_z + R_g,
the authors' code release).

Distribution matching between the misclassified validation images and the unlabeled pool. The scores are pure
functions elsewhere (``fkal.kernels``, ``fkal.selection``, ``fkal.pseudo_labels``); this module wires them to the
model and the data.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ..data import ALData
from ..descriptors import extract
from ..kernels import KERNELS, NEEDS_FISHER, Features, topk_similar
from ..models import taps_for
from ..pseudo_labels import build_estimator
from ..selection import kcenter_greedy, merge_by_rank
from .contract import QueryContext, QueryResult


def pool_descriptors(model: nn.Module, data: ALData, unlabeled: np.ndarray, taps: tuple[str, ...],
                     pseudo: Optional[str], val_std: Features, fisher: bool, device: torch.device, batch_size: int,
                     k: int, generator: torch.Generator, desc: Optional[str] = None) -> tuple[Features, torch.Tensor]:
    """Descriptors (and Fisher scores) of the unlabeled pool positions with the pseudo-labels S (Algorithm 1,
    line 8). ``val_std``: standardized validation features for the estimators that match against D_v.
    Returns the raw features and the labels used ``[len(unlabeled)]`` (-1 where none was needed)."""
    estimator = None if pseudo in (None, "y") else build_estimator(
        pseudo, val_std, torch.as_tensor(data.val_labels, device=device), data.spec.num_classes, taps, k, generator)
    given = data.split.pool_labels[unlabeled] if pseudo == "y" else None
    feats, _, used = extract(model, data.pool_source, data.split.pool[unlabeled], taps, device, batch_size,
                             labels=given, estimator=estimator, fisher=fisher, desc=desc)
    return feats, used


def fisher_kernel_query(ctx: QueryContext) -> QueryResult:
    """Algorithm 1: distribution matching between misclassified validation images and the unlabeled pool.

    1. descriptors and Fisher scores of D_v with its true labels; M^ = the misclassified subset (line 3-4)
    2. if |M^| > P, k-center greedy picks P centers among M^ under the same kernel (lines 5-7)
    3. descriptors and Fisher scores of the unlabeled pool with the pseudo-labels S (line 8)
    4. kernel R_z (pcc, eq. 6), R_zg (pfk, eq. 12) or R_z + R_g (pfk-sum) between centers and pool (line 9),
       top-K per center, merged by rank into P distinct images (line 10)
    """
    cfg, data, model = ctx.config, ctx.data, ctx.models[0]
    kernel = KERNELS[cfg.acquisition]
    taps = taps_for(model, cfg.L)
    needs_g = NEEDS_FISHER[cfg.acquisition]
    pseudo = cfg.pseudo_label
    if needs_g and pseudo is None:
        raise ValueError(f"{cfg.name}: the Fisher kernel needs a pseudo-label estimator (e.g. {cfg.acquisition}-phat)")
    val_labels = data.val_labels
    val_feats, val_probs, _ = extract(model, data.val_source, data.split.val, taps, ctx.device, ctx.batch_size,
                                      labels=val_labels, fisher=needs_g or pseudo == "phat-g",
                                      desc=ctx.describe("validation descriptors"))
    val_std = val_feats.standardized().to(ctx.device)
    wrong = np.flatnonzero(val_probs.argmax(1).numpy() != val_labels)
    if len(wrong) == 0:                       # nothing misclassified: match the whole validation set
        wrong = np.arange(len(val_labels))
    centers = val_std.rows(wrong)
    if len(wrong) > ctx.budget:
        first = int(torch.randint(len(wrong), (1,), generator=ctx.generator))
        pick = kcenter_greedy(lambda i: kernel(centers.rows([i]), centers)[0], len(wrong), ctx.budget, first)
        centers = centers.rows(pick)

    pool_feats, used = pool_descriptors(model, data, ctx.unlabeled, taps, pseudo, val_std, needs_g, ctx.device,
                                        ctx.batch_size, cfg.K or 32, ctx.generator,
                                        desc=ctx.describe("pool descriptors"))
    pl_acc = None
    if pseudo is not None:
        true = data.pool_source.labels[data.split.pool[ctx.unlabeled]]
        pl_acc = float(100.0 * (used.numpy() == true).mean())
    pool_std = pool_feats.standardized().to(ctx.device)

    k = max(4, 2 * math.ceil(ctx.budget / len(centers)))
    while True:
        values, ranked = topk_similar(kernel, centers, pool_std, k)          # [C, k]
        picked = merge_by_rank(ranked, values, ctx.budget)
        if len(picked) >= ctx.budget or k >= len(pool_std):
            break
        k *= 2
    # each pick's best similarity over all centers, [C, P] -> [P] (a pick is in the top k of some centers only)
    scores = kernel(centers, pool_std.rows(picked)).max(0).values.cpu().numpy()
    return QueryResult(np.asarray(ctx.unlabeled)[picked], scores, pl_acc)
