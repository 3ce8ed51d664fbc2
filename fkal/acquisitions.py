"""Acquisition functions behind one contract: ``query(ctx) -> QueryResult``.

Every acquisition receives the same context (models, data, labeled and unlabeled positions, budget,
generator) and returns exactly ``budget`` distinct unlabeled pool positions, plus its scores where it has any.
Positions index ``ctx.data.split.pool``. Scores are pure functions elsewhere (kernels, selection); this module
only wires them to models and data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from .config import Config
from .datasets import ALData
from .descriptors import extract
from .kernels import KERNELS, NEEDS_FISHER, Features, topk_similar
from .models import taps_for
from .pseudo_labels import build_estimator
from .selection import kcenter_greedy, merge_by_rank
from .training import ExtraLoss


@dataclass
class QueryContext:
    models: list[nn.Module]     # the E trained members (eval mode); single-model acquisitions use models[0]
    data: ALData
    labeled: np.ndarray         # [N_l] positions into data.split.pool
    unlabeled: np.ndarray       # [N_u] positions into data.split.pool
    budget: int                 # P
    generator: torch.Generator  # the iteration's seeded generator
    device: torch.device
    config: Config
    iteration: int              # b, 1-based
    batch_size: int = 1000      # inference batch
    progress: bool = True
    options: dict = field(default_factory=dict)  # the command line's options (e.g. uncertainty_first_random)


@dataclass
class QueryResult:
    indices: np.ndarray                        # [budget] distinct positions, all in ctx.unlabeled
    scores: Optional[np.ndarray] = None        # [budget] the acquisition's score of each, if any
    pseudo_label_accuracy: Optional[float] = None  # percent, where pseudo-labels were used


Acquisition = Callable[[QueryContext], QueryResult]
ACQUISITIONS: dict[str, Acquisition] = {}


@dataclass(frozen=True)
class TaskHooks:
    """How an acquisition changes the task model and its training (learning loss, TA-VAAL).

    wrap(model, spec) -> model: adds an auxiliary head; the wrapped forward still returns ``(logits, taps)``.
    extra_loss(options, spec) -> ExtraLoss: the term added to the cross-entropy of every training batch (see
    ``fkal.training.ExtraLoss``), built from the command line's options (the same dict as ``ctx.options``).
    """

    wrap: Callable[[nn.Module, object], nn.Module]
    extra_loss: Callable[[dict, object], ExtraLoss]


TASK_HOOKS: dict[str, TaskHooks] = {}

# Functions that add an acquisition's own options to the command line: add(parser) -> None. Their values
# reach the acquisition as ctx.options[dest].
ARGUMENT_GROUPS: list[Callable] = []


def register(*names: str):
    def deco(fn: Acquisition) -> Acquisition:
        for n in names:
            ACQUISITIONS[n] = fn
        return fn
    return deco


def _desc(ctx: QueryContext, what: str) -> Optional[str]:
    return f"{ctx.config.name} b={ctx.iteration}: {what}" if ctx.progress else None


@register("random")
def random_query(ctx: QueryContext) -> QueryResult:
    """P unlabeled images drawn uniformly."""
    pick = torch.randperm(len(ctx.unlabeled), generator=ctx.generator)[:ctx.budget].numpy()
    return QueryResult(np.asarray(ctx.unlabeled)[pick])


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


@register("pcc", "pfk", "pfk-sum")
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
                                      desc=_desc(ctx, "validation descriptors"))
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
                                        desc=_desc(ctx, "pool descriptors"))
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
    best: dict[int, float] = {}                                           # each picked image's best similarity
    for i, v in zip(ranked.flatten().tolist(), values.flatten().tolist()):
        best[i] = max(v, best.get(i, -math.inf))
    scores = np.array([best[int(i)] for i in picked])
    return QueryResult(np.asarray(ctx.unlabeled)[picked], scores, pl_acc)


# The baselines register themselves on import; importing them here completes the registry.
from . import coreset, uncertainty  # noqa: E402,F401
try:
    import vaal.acquisitions  # noqa: E402,F401
except ImportError as e:  # only when vaal/ itself is absent
    if e.name not in ("vaal", "vaal.acquisitions"):
        raise
