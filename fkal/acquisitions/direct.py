"""DIRECT: deep active learning under imbalance and label noise (Nuggehalli, Zhang, Jain, Nowak, arXiv 2312.09196).

DIRECT reduces each class to one-dimensional active learning on the one-vs-rest ranking that GALAXY uses
(``galaxy.OvrRankings``, most k-like first). Along class k's ranking every image carries a weight w: +1 labeled k,
-1 labeled another class, 0 unlabeled; a threshold t in 0..N ("the first t images are k") scores

    acc(t) = sum_{i < t} w_i - sum_{i >= t} w_i,

the number of labeled images it classifies right minus those it gets wrong. A single wrong label moves acc by 2 on
one side of it, so argmax acc is robust to label noise, unlike GALAXY's nearest pair of opposite labels.

Phase A, per class (version-space reduction, budget ``min(60, P // (2 C))`` each, B1 = 20 "parallel annotators"):
the uncertain interval [I, J] runs from the last labeled k before the first labeled other class to the first
labeled other class after the last labeled k. Repeat while budget B2 is left: draw min(B1, B2) unlabeled images of
[I, J] uniformly without replacement, reveal their labels, then shrink [I, J] to ``ceil(D / D^(1/b))`` unlabeled
images (D: unlabeled images left in it, b = B2 // B1; no shrink when b <= 1) by moving, one place at a time, the end
whose threshold has the lower acc (a tie: a fair coin); B2 -= min(B1, B2).
Phase B: the rest of the budget, split over the classes in a random order (``rem * (i + 1) // C - rem * i // C``
for the i-th), each querying the unlabeled images nearest its best threshold t* = argmax acc, outward:
t* - 1, t*, t* - 2, t* + 1, ...

Every revealed label (``oracle``) is used by the later classes of the same batch, in both phases.

We follow LabelBench's ``strategy_impl/direct.py`` (the authors' released code) where it is more specific than the
paper: the phase-A classes go in descending order of their labeled count (LabelBench's ``argsort(-class_freq)``;
ties here by class index, numpy's quicksort leaves them unspecified), b is computed from the budget left *before*
the round's draws, a class's B2 is capped by the number of unlabeled images, and phase A's leftover budget (an
interval with no unlabeled image left) goes to phase B. LabelBench's C = 2 margin uses ``1e-8 p_0`` for both classes
(ordering the images predicted as class 1 backwards); here ``1e-8 max_j p_j`` serves every class (docs/acquisitions/direct.md).

Cost: one stable sort of N margins per class (cached, packed), O(N) per class and phase for its weights and acc,
and per shrink O(N) plus a short Python loop over the labeled images inside [I, J].
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

import torch

from ..arguments import integer
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .galaxy import OvrRankings, _ask, _check_pool, annotator, pool_softmax

Oracle = Callable[[int], int]

B1_DEFAULT = 20          # LabelBench configs/strategy/direct_sampling.json "B1"
MAX_CLASS_BUDGET = 60    # LabelBench "min_budget_per_class"


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces on one class's ranking
# ---------------------------------------------------------------------------------------------------------------

def phase_a_budget(budget: int, num_classes: int, cap: int = MAX_CLASS_BUDGET) -> int:
    """Per-class budget of phase A: ``min(cap, P // C // 2)`` (LabelBench gives every class this amount: when
    P // C // 2 >= cap its ``eff_class = P // (2 cap)`` is at least C)."""
    return min(cap, budget // num_classes // 2)


def acc_curve(w: torch.Tensor) -> torch.Tensor:
    """``acc[t] = sum_{i<t} w_i - sum_{i>=t} w_i`` for t = 0..N: ``[N + 1]`` int64, from weights ``[N]``."""
    w = w.long()
    before = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(w, 0)])     # sum_{i<t} w_i
    return 2 * before - before[-1]


def uncertain_interval(w: torch.Tensor) -> tuple[int, int]:
    """[I, J] of weights ``[N]`` (+1 / -1 / 0): I = the last labeled k before the first labeled other (0 if the
    first labeled is another class or nothing is labeled; the last labeled k if no other is labeled); J = the first
    labeled other after the last labeled k (N - 1 if the last labeled is k or nothing is labeled; the first labeled
    other if no k is labeled)."""
    n = len(w)
    lab = torch.nonzero(w != 0).flatten()
    pos = w[lab] > 0
    if len(lab) == 0:
        return 0, n - 1
    neg_idx = torch.nonzero(~pos).flatten()
    pos_idx = torch.nonzero(pos).flatten()
    if len(neg_idx) == 0:
        i = int(lab[-1])
    else:
        f = int(neg_idx[0])
        i = int(lab[f - 1]) if f > 0 else 0
    if len(pos_idx) == 0:
        j = int(lab[0])
    else:
        last = int(pos_idx[-1])
        j = int(lab[last + 1]) if last + 1 < len(lab) else n - 1
    return i, j


def shrink_interval(acc: torch.Tensor, labeled: torch.Tensor, i: int, j: int, target: int,
                    coins: torch.Tensor) -> tuple[int, int]:
    """Move the ends of [i, j] inward until ``target`` unlabeled images remain in it; return the new (i, j).

    Each step compares acc[i] with acc[j] (thresholds) and moves the end with the lower value (i += 1 or j -= 1),
    passing the image at that end; a tie takes the next coin of ``coins`` (bool, False: move i), one coin per tied
    step, as LabelBench's loop does with np.random. acc ``[N + 1]``, labeled ``[N]`` bool (ranking order).

    Done a stretch at a time rather than a step at a time: acc is constant between labeled images, so a head keeps
    its value until it passes a labeled image; a stretch where one side is lower moves in one jump, and a tied
    stretch is a walk decided by a block of coins. The loop runs about once per labeled image inside [i, j].
    """
    n = len(labeled)
    free = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum((~labeled).long(), 0)])  # [N+1] unlabeled < t
    lab = torch.nonzero(labeled).flatten()
    need = int(free[j + 1] - free[i]) - target          # unlabeled images still to pass
    used = 0                                            # coins consumed
    while need > 0:
        fl = int(torch.searchsorted(lab, torch.tensor([i]))[0])                  # first labeled >= i
        run_l = int(lab[fl]) - i + 1 if fl < len(lab) else n - i + 1             # steps with head acc[i]
        ll = int(torch.searchsorted(lab, torch.tensor([j]))[0]) - 1              # last labeled <= j - 1
        run_r = j - int(lab[ll]) if ll >= 0 else j + 1                           # steps with head acc[j]
        vl, vr = int(acc[i]), int(acc[j])
        if vl < vr:          # left moves: passes images i, i+1, ...; needs smallest s with free[i+s]-free[i] >= need
            s = int(torch.searchsorted(free, free[i] + need)) - i
            s = min(s, run_l)
            need -= int(free[i + s] - free[i])
            i += s
        elif vl > vr:        # right moves: passes images j, j-1, ...; free[j+1] - free[j+1-s]
            t_max = int(torch.searchsorted(free, free[j + 1] - need, right=True)) - 1
            s = min(j + 1 - t_max, run_r)
            need -= int(free[j + 1] - free[j + 1 - s])
            j -= s
        else:                # tie: a coin per step, until a head changes value or enough images are passed
            m = min(run_l + run_r - 1, need + 2, len(coins) - used)
            c = coins[used:used + m].long()                                      # 1: right, 0: left
            right = torch.cumsum(c, 0)                                           # [m] right steps after k+1 coins
            left = torch.arange(1, m + 1) - right
            dec = (free[(i + left).clamp(max=n)] - free[i]) + (free[j + 1] - free[(j + 1 - right).clamp(min=0)])
            stop = (left == run_l) | (right == run_r) | (dec >= need)
            k = int(torch.nonzero(stop)[0, 0])
            i, j = i + int(left[k]), j - int(right[k])
            need -= int(dec[k])
            used += k + 1
    return i, j


def outward_positions(unlabeled: torch.Tensor, t: int, count: int) -> torch.Tensor:
    """The first ``count`` unlabeled positions of t - 1, t, t - 2, t + 1, t - 3, ... (positions outside 0..N-1
    skipped): ``[<= count]`` int64. unlabeled ``[N]`` bool (ranking order)."""
    n = len(unlabeled)
    width = max(8, count)
    while True:
        left = torch.arange(t - 1, t - 1 - width, -1)
        right = torch.arange(t, t + width)
        seq = torch.stack([left, right], 1).flatten()                            # t-1, t, t-2, t+1, ...
        seq = seq[(seq >= 0) & (seq < n)]
        hits = seq[unlabeled[seq]]
        if len(hits) >= count or (t - width < 0 and t + width >= n):
            return hits[:count]
        width *= 2


def sample_without_replacement(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k of range(n) uniformly without replacement, ``[k]`` int64 (the first k of a random permutation)."""
    return torch.randperm(n, generator=generator)[:k]


# ---------------------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------------------

def direct_select(probs: torch.Tensor, labels: torch.Tensor, budget: int, oracle: Oracle,
                  generator: torch.Generator, b1: int = B1_DEFAULT,
                  per_class_budget: Optional[int] = None) -> torch.Tensor:
    """DIRECT's batch: ``budget`` distinct unlabeled image indices ``[budget]`` int64 (phase A's picks, then
    phase B's).

    probs ``[N, C]`` softmax outputs of the pool; labels ``[N]`` class or -1; oracle(i) -> class of image i;
    b1: images drawn per round of phase A; per_class_budget: phase A's budget per class (default
    :func:`phase_a_budget`; 0 skips phase A). Randomness only from ``generator``: per phase-A round one
    ``randperm`` of the interval's unlabeled images and, where it shrinks, ``j - i + 1`` coins; one ``randperm(C)``
    for phase B's class order.
    """
    revealed = _check_pool(probs, labels, budget).clone()
    if b1 < 1:
        raise ValueError(f"b1 must be >= 1, got {b1}")
    n, c = probs.shape
    b2_default = phase_a_budget(budget, c) if per_class_budget is None else int(per_class_budget)
    if b2_default < 0:
        raise ValueError(f"per_class_budget must be >= 0, got {per_class_budget}")
    rankings = OvrRankings(probs)
    picks: list[int] = []

    def reveal(image: int) -> int:
        y = _ask(oracle, image, c)
        revealed[image] = y
        picks.append(image)
        return y

    def weights(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = rankings.order(k)
        lab = revealed[order]                                                    # [N] labels in ranking order
        w = torch.where(lab < 0, 0, torch.where(lab == k, 1, -1))
        return order, w

    freq = torch.bincount(revealed[revealed >= 0], minlength=c)
    class_rank = torch.sort(-freq, stable=True).indices                          # most labeled first
    if b2_default > 0:
        for k in class_rank.tolist():
            if len(picks) >= budget:
                break
            order, w = weights(k)
            b2 = min(b2_default, int((w == 0).sum()), budget - len(picks))
            _reduce_version_space(order, w, k, b2, b1, reveal, generator)
    rem = budget - len(picks)
    for i, k in enumerate(torch.randperm(c, generator=generator).tolist()):
        quota = rem * (i + 1) // c - rem * i // c
        if quota == 0:
            continue
        order, w = weights(k)
        acc = acc_curve(w)
        t_best = int(torch.argmax(acc))                                          # first maximum
        for p in outward_positions(w == 0, t_best, quota).tolist():
            reveal(int(order[p]))
    return torch.tensor(picks, dtype=torch.long)


def _reduce_version_space(order: torch.Tensor, w: torch.Tensor, k: int, b2: int, b1: int,
                          reveal: Callable[[int], int], generator: torch.Generator) -> None:
    """Phase A for class k (LabelBench's ``version_space_reduction``, unrolled); updates ``w`` in place."""
    i, j = uncertain_interval(w)
    while b2 > 0:
        take = min(b1, b2)
        cand = torch.nonzero(w[i:j + 1] == 0).flatten() + i                    # unlabeled positions in [i, j]
        if len(cand) == 0:
            return
        for p in cand[sample_without_replacement(len(cand), min(take, len(cand)), generator)].tolist():
            w[p] = 1 if reveal(int(order[p])) == k else -1
        diam = int((w[i:j + 1] == 0).sum())
        b = b2 // b1
        if diam > 0 and b > 1:
            target = math.ceil(diam / diam ** (1 / b))
            if target < diam:
                coins = torch.randint(0, 2, (j - i + 1,), generator=generator).bool()
                i, j = shrink_interval(acc_curve(w), w != 0, i, j, target, coins)
        b2 -= take


# ---------------------------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------------------------

OPTIONS = ("direct_b1", "direct_class_budget")   # argparse dests that shape DIRECT's picks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("DIRECT (configuration direct)")
    g.add_argument("--direct-b1", type=integer(1), default=B1_DEFAULT,
                   help="phase A: images drawn per round inside a class's uncertain interval (LabelBench's B1, "
                        "its 'parallel annotators')")
    g.add_argument("--direct-class-budget", type=integer(0), default=None,
                   help="phase A's budget per class; unset: min(60, P // 2C) as LabelBench; 0 skips phase A")


def direct_query(ctx: QueryContext) -> QueryResult:
    """DIRECT on ``models[0]``'s softmax over the pool, labels revealed from ``ctx.data.split.pool_labels`` as it
    picks; B1 and the per-class budget of phase A from ``--direct-b1`` and ``--direct-class-budget``."""
    probs, labels, keep = pool_softmax(ctx, "pool softmax")
    b1 = ctx.options.get("direct_b1") or B1_DEFAULT
    picks = direct_select(probs, labels, ctx.budget, annotator(ctx, keep), ctx.generator, b1=b1,
                          per_class_budget=ctx.options.get("direct_class_budget"))
    return QueryResult(keep[picks.numpy()])


SPECS = (AcquisitionSpec("direct", direct_query, title="DIRECT", options=OPTIONS, add_arguments=add_arguments,
                         reveals_labels=True, needs=frozenset({"pool_labels"}),
                         example=Example("direct", bars=("pool softmax",))),)
