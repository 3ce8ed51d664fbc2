"""SIMILAR (Kothawade, Beck, Killamsetty and Iyer, NeurIPS 2021): the batch that maximizes a submodular mutual
information with a query set Q, here its facility-location instance FLQMI.

The paper defines the submodular mutual information of a set function f as I_f(A; Q) = f(A) + f(Q) - f(A u Q)
(its section 2) and lists the instances it uses in its Table 1; the FLQMI row is

    I(A; Q) = sum_{q in Q} max_{a in A} s(q, a)  +  eta * sum_{a in A} max_{q in Q} s(q, a).

The first term rewards covering every query item by some picked image (query coverage), the second rewards each
picked image for being close to some query item (query relevance); eta trades the two. SIMILAR's Algorithm 1
maximizes I(A; Q) subject to |A| <= P with the greedy algorithm (the authors' DISTIL calls submodlib's lazy greedy,
which returns the same picks as the plain greedy below up to ties). For rare classes, Q holds labeled images of
the rare classes.

How this reading relates to the authors' code (submodlib ``FacilityLocationVariantMutualInformation``, "FL2MI",
called by DISTIL's ``SMI`` strategy with ``smi_function='fl2mi'``):

* The formula and the place of eta are the same (submodlib's ``queryDiversityEta`` multiplies the second term).
* Range of the similarity: DISTIL maps cosine similarity to [0, 1] with (1 + s) / 2 before handing it over. An
  increasing affine map s -> alpha s + beta (alpha > 0) changes every greedy gain of one step by the same constant
  (|Q| beta at the first step plus eta beta at every step, all times alpha), so it changes no pick: the
  greedy below on raw cosine similarities picks what DISTIL picks.
* Negative similarities: submodlib itself never sees them under DISTIL's map. Given raw similarities it clamps
  them: its memoized "nearest in A" value per query starts at 0 and its per-image "max over Q" starts at the
  smallest positive float, so a negative s(q, a) counts as 0 in both terms. Here the formula is taken as written
  (f(empty set) = 0, no clamping), which is what matters for R_zg, a sum of products of correlations that is often
  negative: a clamp at 0 would make every image whose similarities to Q are all negative worth the same.
* Ties: submodlib walks an unordered set; here the lowest pool index wins.

The similarity is a callable ``block(start, stop) -> [|Q|, stop - start]`` giving s(q, a) for the pool images
``start:stop``, so any kernel plugs in: the practical Fisher kernel R_zg on standardized features of the FK
method, or cosine similarity on penultimate features (``cosine_blocks``).

In this project (``similar_query``) Q is the FK method's weak supervision: the misclassified validation images M^
(by default reduced to the FK method's P centers by the same k-center greedy, so that SIMILAR and the FK method
differ only in how they select against the same centers), and the kernel is ``--similar-kernel pfk`` (R_zg of
eq. 12 of the FK paper, needs a pseudo-label estimator and L in the configuration name, e.g.
``similar-phat-L80``) or ``cosine`` (penultimate features, configuration ``similar``).
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional

import numpy as np
import torch

from ..arguments import number
from ..descriptors import extract
from ..kernels import pfk
from ..models import taps_for
from ..training import predict
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .coreset import penultimate_features
from .fisher_kernel import (kcenter_centers, misclassified, monte_carlo_pseudo_labels, pool_descriptors,
                            pseudo_label_stats)

# (start, stop) -> [|Q|, stop - start]: similarities of every query item to the pool images start:stop
SimilarityBlocks = Callable[[int, int], torch.Tensor]


def cosine_blocks(query: torch.Tensor, pool: torch.Tensor, eps: float = 1e-12) -> SimilarityBlocks:
    """Cosine similarity blocks between ``query [|Q|, d]`` and ``pool [N, d]`` (e.g. penultimate features)."""
    qn = query / query.norm(dim=1, keepdim=True).clamp_min(eps)
    pn = pool / pool.norm(dim=1, keepdim=True).clamp_min(eps)
    return lambda start, stop: qn @ pn[start:stop].T


def flqmi_value(sim: torch.Tensor, picked, eta: float = 1.0) -> float:
    """I(A; Q) of Table 1 (FLQMI) from scratch: ``sim [|Q|, N]``, ``picked`` indices A into the N columns.
    The empty set is worth 0."""
    picked = list(picked)
    if not picked:
        return 0.0
    s = sim[:, picked].double()                                             # [|Q|, |A|]
    return float(s.max(1).values.sum() + eta * s.max(0).values.sum())


def flqmi_greedy(block: SimilarityBlocks, n: int, budget: int, eta: float = 1.0, chunk: int = 8192,
                 cache_bytes: int = 1 << 30) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximization of FLQMI (Table 1) over a pool of ``n`` images: ``budget`` picks and their gains.

    Each step adds the image with the largest marginal gain (Algorithm 1's greedy step)

        gain(a | A) = sum_q [max(c_q, s(q, a)) - c_q] + eta * m(a),    c_q = max_{a' in A} s(q, a'),
                                                                         m(a) = max_q s(q, a),

    and at the first step (A empty, f(empty) = 0) gain(a) = sum_q s(q, a) + eta * m(a). The gain of every
    candidate is computed at once per step, chunk by chunk: ``[|Q|, chunk]`` at a time. When the whole
    ``[|Q|, n]`` similarity fits in ``cache_bytes`` its blocks are computed once and kept; otherwise every step
    streams the blocks again (memory O(|Q| * chunk), time O(budget * |Q| * n) kernel evaluations).
    Ties go to the lowest index. Returns ``(picks [budget], gains [budget])``; a non-finite similarity is a
    ValueError.
    """
    budget = min(budget, n)
    starts = list(range(0, n, chunk))
    first = block(0, min(chunk, n))
    nq, device = first.shape[0], first.device
    keep = nq * n * first.element_size() <= cache_bytes
    cache: list[Optional[torch.Tensor]] = [None] * len(starts)

    def get(i: int) -> torch.Tensor:
        if cache[i] is not None:
            return cache[i]
        s = first if i == 0 else block(starts[i], min(starts[i] + chunk, n))
        if keep:
            cache[i] = s
        return s

    maxima, bad = [], 0                                                          # per chunk: m(a), non-finite columns
    for i in range(len(starts)):
        s = get(i)
        maxima.append(s.max(0).values)
        bad += int((~torch.isfinite(s)).any(0).sum())
    relevance = torch.cat(maxima)                                                # m(a): [n]
    if bad:                                  # a NaN gain compares false with all: it would hide its whole chunk
        raise ValueError(f"{bad} of the {n} pool images have a non-finite similarity to the query set (NaN or inf "
                         f"in the features or the kernel; a model that diverged?): no gain can be ranked")
    covered: Optional[torch.Tensor] = None                                       # c_q: [|Q|], None while A empty
    taken = torch.zeros(n, dtype=torch.bool, device=device)
    picks, gains = [], []
    for _ in range(budget):
        best_v, best_i = -float("inf"), -1
        for i, start in enumerate(starts):
            s = get(i)                                                           # [|Q|, c]
            if covered is None:
                coverage = s.sum(0)                                              # first term, A empty
            else:
                c = covered.unsqueeze(1)
                coverage = (torch.maximum(s, c) - c).sum(0)                      # first term's gain
            gain = coverage + eta * relevance[start:start + s.shape[1]]          # [c]
            gain = gain.masked_fill(taken[start:start + s.shape[1]], -float("inf"))
            v, j = gain.max(0)                                                   # first max: lowest index
            if float(v) > best_v:
                best_v, best_i = float(v), start + int(j)
        picks.append(best_i)
        gains.append(best_v)
        taken[best_i] = True
        ci = best_i // chunk
        col = get(ci)[:, best_i - starts[ci]]                                    # s(q, a*): [|Q|]
        covered = col.clone() if covered is None else torch.maximum(covered, col)
    return np.asarray(picks, dtype=np.int64), np.asarray(gains)


KERNELS = ("pfk", "cosine")
QUERY_SETS = ("centers", "all")
# the options (argparse dests) that shape SIMILAR's picks: recorded with its results, compared on resume
OPTIONS = ("similar_kernel", "similar_eta", "similar_query")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--similar-kernel", choices=KERNELS, default="pfk",
                        help="SIMILAR's similarity: pfk = R_zg of the FK method on standardized descriptors and Fisher "
                             "scores (the configuration names S and L, e.g. similar-phat-L80), cosine = cosine "
                             "similarity of penultimate features (configuration 'similar')")
    parser.add_argument("--similar-eta", type=number(0.0), default=1.0,
                        help="SIMILAR's eta: weight of the query-relevance term of FLQMI against query coverage")
    parser.add_argument("--similar-query", choices=QUERY_SETS, default="centers",
                        help="SIMILAR's query set Q: centers = the FK method's P k-center centers among the "
                             "misclassified validation images, all = every misclassified validation image")


def similar_query(ctx: QueryContext) -> QueryResult:
    """SIMILAR (FLQMI, greedy) with Q = the misclassified validation images; scores are the greedy gains."""
    cfg, data, model = ctx.config, ctx.data, ctx.models[0]
    kernel = ctx.options.get("similar_kernel") or "pfk"
    eta = 1.0 if ctx.options.get("similar_eta") is None else float(ctx.options["similar_eta"])
    query_set = ctx.options.get("similar_query") or "centers"
    unlabeled = np.asarray(ctx.unlabeled)
    stats = {}
    if kernel == "pfk":
        if cfg.pseudo_label is None or cfg.L is None:
            raise ValueError(f"{cfg.name}: SIMILAR with --similar-kernel pfk needs a pseudo-label estimator and L in "
                             "the configuration name, e.g. similar-phat-L80")
        taps = taps_for(model, cfg.L)
        val_feats, val_probs, _ = extract(model, data.val_source, data.split.val, taps, ctx.device, ctx.batch_size,
                                          labels=data.val_labels, fisher=True,
                                          desc=ctx.describe("validation descriptors"))
        val_std = val_feats.standardized().to(ctx.device)
        wrong = misclassified(val_probs, data.val_labels)
        query = val_std.rows(wrong)
        if query_set == "centers" and len(wrong) > ctx.budget:
            query = query.rows(kcenter_centers(lambda i: pfk(query.rows([i]), query)[0], len(wrong), ctx.budget,
                                               ctx.generator))
        pool_feats, used = pool_descriptors(model, data, unlabeled, taps, cfg.pseudo_label, val_std, True,
                                            ctx.device, ctx.batch_size, cfg.K or 32, ctx.generator,
                                            desc=ctx.describe("pool descriptors"))
        stats = pseudo_label_stats(data, unlabeled, used)
        pool_std = pool_feats.standardized().to(ctx.device)
        block = lambda start, stop: pfk(query, pool_std.rows(slice(start, stop)))       # [|Q|, chunk]
    elif kernel == "cosine":
        val_probs = predict(model, data.val_source, data.split.val, ctx.device, ctx.batch_size)
        wrong = misclassified(val_probs, data.val_labels)
        hq = penultimate_features(model, data.val_source, data.split.val[wrong], ctx.device, ctx.batch_size,
                                  ctx.describe("validation features"))                  # [|M^|, d]
        if query_set == "centers" and len(wrong) > ctx.budget:
            unit = hq / hq.norm(dim=1, keepdim=True).clamp_min(1e-12)
            hq = hq[torch.as_tensor(kcenter_centers(lambda i: unit @ unit[i], len(wrong), ctx.budget,
                                                    ctx.generator))]
        hu = penultimate_features(model, data.pool_source, data.split.pool[unlabeled], ctx.device, ctx.batch_size,
                                  ctx.describe("pool features"))                         # [N_u, d]
        block = cosine_blocks(hq, hu)
    else:
        raise ValueError(f"unknown SIMILAR kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
    picks, gains = flqmi_greedy(block, len(unlabeled), ctx.budget, eta=eta)
    return QueryResult(unlabeled[picks], gains, **stats)


def _with_pseudo_label(cfg) -> bool:
    """SIMILAR's R_zg kernel (a pseudo-label estimator in its name) takes the model's default L."""
    return cfg.pseudo_label is not None


SPECS = (AcquisitionSpec("similar", similar_query, title="SIMILAR (FLQMI)", options=OPTIONS,
                         add_arguments=add_arguments, needs=frozenset({"val"}), default_L=_with_pseudo_label,
                         batch_seeded=monte_carlo_pseudo_labels,
                         example=Example("similar-phat-L80", bars=("validation descriptors", "pool descriptors"))),)
