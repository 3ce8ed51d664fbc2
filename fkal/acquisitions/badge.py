"""BADGE: batch active learning by diverse gradient embeddings (Ash, Zhang, Krishnamurthy, Langford, Agarwal,
ICLR 2020).

Each unlabeled image x has the gradient of the cross-entropy, under its predicted label y^(x), with respect to the
last layer's weights: ``g_x = (p(x) - e_y^(x)) (outer) h(x)``, p the softmax outputs, h the penultimate features.
The batch is the k-means++ seeding of {g_x}: the first center is the image with the largest ||g_x|| (the authors'
``init_centers``, both the original and the current version: ``argmax`` of the norms), each next one is drawn with
probability proportional to D^2(x), the squared distance to the nearest center chosen so far.

The C x d embeddings are never built. With ``a = e_y^ - p`` (g = -a (outer) h; the sign changes no distance),

    ||g_x - g_y||^2 = ||a_x||^2 ||h_x||^2 + ||a_y||^2 ||h_y||^2 - 2 <a_x, a_y> <h_x, h_y>,
    <a_x, a_y> = [y^_x = y^_y] - p_x[y^_y] - p_y[y^_x] + <p_x, p_y>,   ||a_x||^2 = 1 - 2 p_x[y^_x] + ||p_x||^2,

so a new center costs one product with the softmax rows and one with the features (as LabelBench's and the authors'
current code do), and the pruning below needs no more than the inputs plus O(N) with many classes; with few, it
keeps ``a`` (the size of the softmax outputs) and a float16 copy of the features.

Most points are not moved by a new center c, and a cheap lower bound on ||g_x - g_c||^2 shows it: with A = <a_x, a_c>
(exact from one product with a stored copy of the rows ``e_y^ - p`` when C <= ``EXACT_A_CLASSES``, a copy the size
of the softmax outputs; else an upper bound from each row's ``TOP_M`` largest probabilities and the mass left over)
and Cauchy-Schwarz on the features,

    ||g_x - g_c||^2 >= ||g_x||^2 + ||g_c||^2 - 2 max(A, 0) ||h_x|| ||h_c||     (features >= 0, e.g. after a ReLU),

with |A| in place of max(A, 0) for features of either sign. Cauchy-Schwarz is loose on wide features (two ReLU
feature vectors are far from parallel), so with few classes (C <= ``EXACT_A_CLASSES``) the points whose bound falls
below their D^2 (with a safety margin for rounding) meet a second, tight bound: a float16 copy q of the features,
scaled by a power of two to keep every product in range, gives ``<h_x, h_c> = 2^-2s <q_x, q_c> + r`` with
``|r| <= eps_x ||h_c|| + ||q_x|| eps_c`` plus the rounding of the float16 product (float32 accumulation, a float16
result), eps_x an a-priori bound on ``||h_x - 2^-s q_x||`` (2^-11 of ``||h_x||``). With slack_x the sum of these,

    ||g_x - g_c||^2 >= ||g_x||^2 + ||g_c||^2 - 2 (A 2^-2s <q_x, q_c> + |A| slack_x).

It reads half the bytes of the float32 features. On the synthetic SVHN-size pool of
``benchmarks/successors_scale.py`` (N = 500,000, C = 10, d = 512, 1,250 picks) Cauchy-Schwarz keeps 9.4M rows over
the picks, the float16 bound 0.75M of those, and 99% of these do move. The copy costs ``N d`` x 2 bytes: with many
classes the softmax outputs dominate the memory and the top-M bound on A is the loose part, so it is not kept
there; the kept points are then dropped too when ``||g_c - g_n(x)|| >= 2 D(x)`` (n(x): x's nearest center; the
triangle inequality). Only the rest get the exact distance. The others cannot move, so the result is exactly
k-means++.

Sampling: one uniform u (float64) from the generator per pick after the first; the pick is the first candidate
whose cumulative D^2 exceeds u times the total (cumulated by blocks of ``BLOCK`` points, the block sums kept up to
date). If every candidate is at distance zero (duplicates of the centers, zero gradients), the pick is uniform
among the candidates with the same u. Chosen and labeled images are never drawn, so no image is picked twice,
duplicated points included.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .coreset import penultimate_outputs

MARGIN = 1e-4             # relative safety margin of the pruning test (float32 products carry ~1e-7 relative error)
ROW_BLOCK = 1 << 15       # rows converted to float64 at a time when computing norms
BLOCK = 1024              # points per block of the sampling sums
EXACT_A_CLASSES = 64      # up to this many classes <a_x, a_c> is computed exactly for the bound
TOP_M = 4                 # largest probabilities kept per row for the bound beyond that
SKETCH_NORM = 2.0 ** 7    # the float16 copy is scaled so that no row's norm exceeds this (products < 2^14)


def gradient_norms_sq(probs: torch.Tensor, features: torch.Tensor, row_block: int = ROW_BLOCK,
                      feature_norms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``||g_x||^2 = ||a_x||^2 ||h_x||^2`` with ``||a_x||^2 = 1 - 2 max_c p_x + ||p_x||^2``: ``[N]`` float64, computed
    in row blocks at the inputs' precision (no float64 copy of the inputs). ``feature_norms``: ``||h_x||`` ``[N]``
    float64, when the caller has them."""
    out = torch.empty(len(probs), dtype=torch.float64)
    for r in range(0, len(probs), row_block):
        p = probs[r:r + row_block]
        a2 = (1.0 - 2.0 * p.max(1).values.double() + (p * p).sum(1).double()).clamp(min=0)
        h2 = ((features[r:r + row_block] ** 2).sum(1).double() if feature_norms is None
              else feature_norms[r:r + row_block] ** 2)
        out[r:r + row_block] = a2 * h2
    return out


def take_rows(mat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``mat[rows]`` for a CPU matrix ``[N, k]``: NumPy's ``take`` copies scattered rows about twice as fast as
    ``index_select`` on one core (1.2 against 0.5 ms for 8,000 float16 rows of 512), and the pruned passes are
    mostly such copies."""
    if mat.device.type == "cpu" and mat.is_contiguous() and mat.dtype != torch.bfloat16:
        return torch.from_numpy(np.take(mat.numpy(), rows.numpy(), axis=0))
    return mat.index_select(0, rows)


class GradientEmbeddings:
    """The gradient embeddings of a pool in factorised form: predicted classes, squared norms and feature norms,
    computed once; distances to a center on demand. probs ``[N, C]``, features ``[N, d]``.

    With C <= ``EXACT_A_CLASSES``, ``a = e_y^ - p`` is stored as ``a_cols`` ``[C, N]`` and ``inner_a(center)``
    gives ``<a_x, a_center>`` for every x at the precision of probs; the three distance functions accept it so that
    one product per center serves them all. ``sketch=True`` (the default, same case only) also keeps the float16
    copy of the features for ``sketch_lower_bounds_sq``."""

    def __init__(self, probs: torch.Tensor, features: torch.Tensor, row_block: int = ROW_BLOCK,
                 sketch: bool = True):
        if features.shape[0] != probs.shape[0]:
            raise ValueError(f"probs has {probs.shape[0]} rows, features {features.shape[0]}")
        self.probs, self.features = probs, features
        n, c = probs.shape
        self.pred = probs.argmax(1)                                           # [N] y^
        self.feat_norms = torch.empty(n, dtype=torch.float64)                 # [N] ||h_x||
        nonneg = True
        for r in range(0, n, row_block):
            f = features[r:r + row_block]
            self.feat_norms[r:r + row_block] = torch.linalg.vector_norm(f, dim=1).double()
            nonneg = nonneg and bool((f >= 0).all())
        self.nonneg = nonneg
        if not bool(torch.isfinite(self.feat_norms).all()) or not bool(torch.isfinite(probs.sum())):
            raise ValueError("probs or features hold NaN or inf (a model that diverged?): no gradient embedding "
                             "can be measured")
        self.norms_sq = gradient_norms_sq(probs, features, row_block, self.feat_norms)     # [N] float64
        self.norms_sq_w = self.norms_sq.to(probs.dtype)                       # working copies for the bounds
        self.feat_norms_w = self.feat_norms.to(probs.dtype)
        self.exact_a = c <= EXACT_A_CLASSES
        self.sketch = None
        if self.exact_a:                                                      # a = e_y^ - p, stored [C, N]:
            self.a_cols = (-probs).T.contiguous()                             # one product per center reads
            self.a_cols[self.pred, torch.arange(n)] += 1.0                    # it in order
            if sketch:
                self._build_sketch(row_block)
        else:                                                                 # top-M summary of every row
            m = min(TOP_M, c)
            self.top_val = torch.empty(n, m, dtype=probs.dtype)
            self.top_idx = torch.empty(n, m, dtype=torch.long)
            for r in range(0, n, row_block):
                v, i = torch.topk(probs[r:r + row_block], m, dim=1)
                self.top_val[r:r + row_block], self.top_idx[r:r + row_block] = v, i
            self.rest = (1.0 - self.top_val.sum(1)).clamp(min=0)              # [N] mass outside the top M

    def _build_sketch(self, row_block: int) -> None:
        """The float16 copy ``q = fp16(h 2^s)`` ``[N, d]``, 2^s putting the largest row norm just under
        ``SKETCH_NORM``, and an a-priori bound on its error per row, ``||h_x - q_x 2^-s|| <= eps_x``: rounding to
        float16 moves an entry by at most 2^-11 of itself, or 2^-25 in float16's subnormal range, so
        ``eps_x = 2^-11 ||h_x|| + 2^-25 sqrt(d) 2^-s`` (widened by the rounding of ``||h_x||``)."""
        feats = self.features
        top = float(self.feat_norms.max())
        if not top > 0 or not np.isfinite(top):
            return
        scale = float(2.0 ** np.floor(np.log2(SKETCH_NORM / top)))            # a power of two: exact scaling
        d = feats.shape[1]
        self.sketch = torch.empty(feats.shape, dtype=torch.float16)
        buf = torch.empty(min(row_block, len(feats)), d, dtype=feats.dtype)  # one buffer: no page faults
        for r in range(0, len(feats), row_block):
            block = feats[r:r + row_block]
            torch.mul(block, scale, out=buf[:len(block)])
            self.sketch[r:r + row_block].copy_(buf[:len(block)])
        widen = 1.0 + 4.0 * d * float(torch.finfo(feats.dtype).eps)
        eps = (2.0 ** -11 * self.feat_norms + 2.0 ** -25 * d ** 0.5 / scale) * widen       # [N] float64
        self.sketch_eps_w = eps.to(self.probs.dtype)
        self.sketch_norms_w = (self.feat_norms + eps).to(self.probs.dtype)    # >= ||q_x|| 2^-s
        self.sketch_rows = torch.stack([self.norms_sq_w, self.sketch_eps_w, self.sketch_norms_w], 1)   # [N, 3]
        self.sketch_scale = scale
        # the float16 product itself: float32 accumulation over d terms and a float16 result (half an ulp,
        # 2^-11), relative to ||q_x|| ||q_c||; plus 2^-24 absolute for a result among float16's subnormals
        self.sketch_rounding = 2.0 ** -11 + 2.0 * d * 2.0 ** -24
        self.sketch_floor = 2.0 ** -24 / scale ** 2

    def inner_a(self, center: int, rows: Optional[torch.Tensor] = None,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``<a_x, a_center>`` for ``rows`` (default all) from the stored a (C <= ``EXACT_A_CLASSES`` only):
        ``[len(rows)]`` at the precision of probs, into ``out`` when given."""
        cols = self.a_cols if rows is None else self.a_cols.index_select(1, rows)
        if out is None:
            return self.a_cols[:, center] @ cols
        torch.mm(self.a_cols[None, :, center], cols, out=out[None])             # [1, C] @ [C, N] into [1, N]
        return out

    def distances_sq(self, center: int, rows: Optional[torch.Tensor] = None,
                     inner_a: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``||g_x - g_center||^2`` for ``rows`` (default all): float64, clamped at 0. Rows are gathered only when
        they are few; otherwise the products run over the whole matrices (no copy) and are indexed. ``inner_a``:
        ``inner_a(center)`` for these rows, when the caller has it."""
        probs, feats, pred = self.probs, self.features, self.pred
        n = len(probs)
        full = rows is None or 4 * len(rows) > n

        def rows_times(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:     # (mat @ vec)[rows]
            if rows is None:
                return torch.mv(mat, vec)
            return torch.mv(mat, vec)[rows] if full else torch.mv(take_rows(mat, rows), vec)

        if inner_a is not None:
            inner_a = inner_a.double()
        elif self.exact_a:                                                    # <a_x, a_c> from the stored a
            inner_a = self.inner_a(center, None if full else rows)
            inner_a = (inner_a if rows is None or not full else inner_a[rows]).double()
        else:
            pc = probs[center]
            yc = int(pred[center])
            rp = pred if rows is None else pred[rows]
            p_yc = probs[:, yc] if rows is None else probs[rows, yc]
            inner_a = ((rp == yc).double() - p_yc.double() - pc[rp].double()
                       + rows_times(probs, pc).double())
        hh = rows_times(feats, feats[center]).double()
        n2 = self.norms_sq if rows is None else self.norms_sq[rows]
        return (n2 + self.norms_sq[center] - 2.0 * inner_a * hh).clamp(min=0)

    def lower_bounds_sq(self, center: int, inner_a: Optional[torch.Tensor] = None,
                        out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A lower bound of ``||g_x - g_center||^2`` for every x, in O(N C) (C <= ``EXACT_A_CLASSES``) or
        O(N TOP_M), at the precision of probs: ``[N]`` (see the module docstring; callers leave a margin), into
        ``out`` when given (a per-pick buffer spares the allocator). ``inner_a``: ``inner_a(center)``, when the
        caller has it."""
        probs, pred = self.probs, self.pred
        pc = probs[center]
        yc = int(pred[center])
        if self.exact_a:
            a = self.inner_a(center) if inner_a is None else inner_a          # <a_x, a_c> exactly
            a_hi, a_lo = a, a
        else:
            idx, val = self.top_idx, self.top_val
            inner_lo = (val * pc[idx]).sum(1)                                 # <top_M(p_x), p_c> <= <p_x, p_c>
            inner_hi = inner_lo + self.rest * pc.max()
            px_yc_lo = (val * (idx == yc)).sum(1)                             # p_x[y^_c] if in the top M, else 0
            px_yc_hi = torch.where((idx == yc).any(1), px_yc_lo, self.rest)
            same = (pred == yc).to(probs.dtype)
            pc_yx = pc[pred]                                                  # p_c[y^_x]
            a_hi = same - px_yc_lo - pc_yx + inner_hi
            a_lo = same - px_yc_hi - pc_yx + inner_lo
        coef = (torch.clamp(a_hi, min=0, out=out) if self.nonneg
                else torch.maximum(a_hi.abs(), a_lo.abs(), out=out))
        coef *= self.feat_norms_w
        coef *= -2.0 * float(self.feat_norms_w[center])
        coef += self.norms_sq_w
        coef += float(self.norms_sq_w[center])
        return coef

    def sketch_lower_bounds_sq(self, center: int, rows: torch.Tensor, inner_a: torch.Tensor) -> torch.Tensor:
        """A lower bound of ``||g_x - g_center||^2`` for ``rows`` from the float16 copy of the features (module
        docstring), given ``inner_a(center)`` for these rows: ``[len(rows)]`` at the precision of probs, within
        about 1e-3 of ``||g_x|| ||g_c||`` of the distance (callers leave a margin). Needs the sketch."""
        hq = torch.mv(take_rows(self.sketch, rows), self.sketch[center]).to(inner_a.dtype)
        hq *= 1.0 / self.sketch_scale ** 2                                    # <q_x, q_c> 2^-2s ~ <h_x, h_c>
        per_row = take_rows(self.sketch_rows, rows)                           # [R, 3]: ||g_x||^2, eps_x, ~||q_x||
        eps_c, qn_c = float(self.sketch_eps_w[center]), float(self.sketch_norms_w[center])
        # slack_x = ||e_x|| ||h_c|| + ||q_x|| (||e_c|| + rounding ||q_c||) + floor
        slack = per_row[:, 1:] @ torch.tensor([float(self.feat_norms_w[center]), eps_c + self.sketch_rounding * qn_c],
                                              dtype=per_row.dtype)
        slack += self.sketch_floor
        slack *= inner_a.abs()
        slack += inner_a * hq                                                 # max of A <h_x, h_c> over the box
        slack *= -2.0
        slack += per_row[:, 0]
        slack += float(self.norms_sq_w[center])
        return slack


def gradient_distances_sq(probs: torch.Tensor, features: torch.Tensor, center: int,
                          rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``||g_x - g_center||^2`` for the ``rows`` (default all) of probs ``[N, C]`` / features ``[N, d]``, from the
    factorisation in the module docstring: ``[len(rows)]`` float64, clamped at 0."""
    return GradientEmbeddings(probs, features).distances_sq(center, rows)


class _BlockSampler:
    """Weights ``[N]`` float64 with their sums by blocks, for inverse-CDF draws in O(N / BLOCK + BLOCK)."""

    def __init__(self, weights: torch.Tensor, block: int = BLOCK):
        self.n, self.block = len(weights), block
        nb = -(-self.n // block)
        self.w = torch.zeros(nb * block, dtype=torch.float64)
        self.w[:self.n] = weights
        self.sums = self.w.view(nb, block).sum(1)                             # [nb]

    def set(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        delta = values - self.w[rows]
        self.w[rows] = values
        self.sums.index_add_(0, torch.div(rows, self.block, rounding_mode="floor"), delta)

    def draw(self, u: float) -> Optional[int]:
        """First index whose cumulative weight exceeds u * total, or None when the total is 0.

        ``set`` keeps the block sums by differences, so a block whose weights all went to 0 can keep a rounding
        residue (0.1 + 0.2 - 0.1 - 0.2 = 2.8e-17): a draw that lands in such a block sets its sum to the exact 0
        and draws again with the same u, so that residues neither crash a draw nor make an all-zero total look
        positive."""
        while True:
            total = float(self.sums.sum())
            if not total > 0:
                return None
            x = u * total
            cs = torch.cumsum(self.sums, 0)
            b = min(int(torch.searchsorted(cs, torch.tensor([x], dtype=torch.float64), right=True)[0]),
                    len(cs) - 1)
            while b > 0 and not self.sums[b] > 0:                             # rounding put x at the very end
                b -= 1
            w = self.w[b * self.block:(b + 1) * self.block]
            if not bool((w > 0).any()):                                       # a residue: no weight left there
                self.sums[b] = 0.0
                continue
            before = float(cs[b - 1]) if b > 0 else 0.0
            i = int(torch.searchsorted(torch.cumsum(w, 0), torch.tensor([x - before], dtype=torch.float64),
                                       right=True)[0])
            if i >= self.block or not w[i] > 0:                               # rounding: take the last positive
                i = int(torch.nonzero(w > 0).flatten()[-1])
            return b * self.block + i


def badge_select(probs: torch.Tensor, features: torch.Tensor, budget: int, generator: torch.Generator,
                 labeled: Optional[torch.Tensor] = None, prune: bool = True, sketch: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding on the gradient embeddings: (indices ``[budget]`` int64 in the order chosen, the D^2 of
    each when it was drawn ``[budget]`` float64; nan for the first).

    probs ``[N, C]``, features ``[N, d]`` (penultimate, after the ReLU); labeled ``[N]`` bool: rows never drawn
    (default none; the authors run BADGE on the unlabeled rows only). ``prune=False`` computes every distance to
    every new center (same result, for checking); ``sketch=False`` skips the float16 bound (same result).
    """
    n = len(probs)
    if features.shape[0] != n:
        raise ValueError(f"probs has {n} rows, features {features.shape[0]}")
    cand = torch.ones(n, dtype=torch.bool) if labeled is None else ~labeled.bool()
    available = int(cand.sum())
    if budget < 0 or budget > available:
        raise ValueError(f"budget {budget} is not in [0, {available}] (the number of unlabeled images)")
    if budget == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    emb = GradientEmbeddings(probs, features, sketch=sketch and prune)
    norms_sq = emb.norms_sq
    first = int(torch.argmax(torch.where(cand, norms_sq, torch.full_like(norms_sq, -1.0))))
    picks, drawn = [first], [float("nan")]
    cand[first] = False
    d2 = emb.distances_sq(first)                                              # [N] to the nearest center
    d2[first] = 0.0
    tol = MARGIN * 1e-2 * float(norms_sq.max())                               # absolute slack for rounding
    # pruning threshold per point: d2 with a margin, -inf where the point can no longer be drawn
    thr = (d2 * (1 + MARGIN) + tol).to(probs.dtype)
    thr[~cand] = float("-inf")
    nearest = torch.zeros(n, dtype=torch.long)                                # each point's nearest center (t)
    picks_t = torch.zeros(budget, dtype=torch.long)
    picks_t[0] = first
    sampler = _BlockSampler(torch.where(cand, d2, torch.zeros_like(d2)))
    a_all = torch.empty(n, dtype=probs.dtype) if emb.exact_a else None      # per-pick buffers, reused
    bound, below = torch.empty(n, dtype=probs.dtype), torch.empty(n, dtype=torch.bool)
    for t in range(1, budget):
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        c = sampler.draw(u)
        if c is None:                                                         # all candidates at distance 0
            free = torch.nonzero(cand).flatten()
            c = int(free[min(int(u * len(free)), len(free) - 1)])
        picks.append(c)
        picks_t[t] = c
        drawn.append(float(d2[c]))
        cand[c] = False
        thr[c] = float("-inf")
        sampler.set(torch.tensor([c]), torch.zeros(1, dtype=torch.float64))
        if t == budget - 1:
            break
        if prune:
            a = emb.inner_a(c, out=a_all) if emb.exact_a else None            # [N] <a_x, a_c>, once per center
            emb.lower_bounds_sq(c, a, out=bound)
            rows = torch.nonzero(torch.lt(bound, thr, out=below)).flatten()
            if len(rows) and emb.sketch is not None:                          # the float16 bound
                rows = rows[emb.sketch_lower_bounds_sq(c, rows, a[rows]) < thr[rows]]
            elif len(rows):                                                   # triangle inequality via centers
                near = nearest[rows]
                used, inv = torch.unique(near, return_inverse=True)
                cc = emb.distances_sq(c, rows=picks_t[used])                  # to those rows' nearest centers
                rows = rows[cc[inv] < 4.0 * (d2[rows] * (1 + MARGIN) + tol)]
            a_rows = a[rows] if a is not None else None
        else:
            rows, a_rows = torch.nonzero(cand).flatten(), None
        if len(rows):
            new = emb.distances_sq(c, rows=rows, inner_a=a_rows)
            closer = new < d2[rows]
            sel = rows[closer]
            d2[sel] = new[closer]
            thr[sel] = (new[closer] * (1 + MARGIN) + tol).to(thr.dtype)
            nearest[sel] = t
            sampler.set(sel, new[closer])
        d2[c] = 0.0
    return torch.tensor(picks, dtype=torch.long), torch.tensor(drawn, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------------------------

def badge_query(ctx: QueryContext) -> QueryResult:
    """BADGE on ``models[0]``: softmax outputs and relu(penultimate tap) of the unlabeled images; scores are each
    pick's D^2 when it was drawn (nan for the first, the largest gradient)."""
    unlabeled = np.asarray(ctx.unlabeled)
    logits, feats = penultimate_outputs(ctx.models[0], ctx.data.pool_source, ctx.data.split.pool[unlabeled],
                                        ctx.device, ctx.batch_size, desc=ctx.describe("gradient embeddings"))
    for r in range(0, len(logits), 1 << 16):                                  # softmax in place
        logits[r:r + (1 << 16)] = torch.softmax(logits[r:r + (1 << 16)], 1)
    picks, d2 = badge_select(logits, feats, ctx.budget, ctx.generator)
    return QueryResult(unlabeled[picks.numpy()], d2.numpy())


SPECS = (AcquisitionSpec("badge", badge_query, title="BADGE", example=Example("badge", bars=("gradient embeddings",))),)
