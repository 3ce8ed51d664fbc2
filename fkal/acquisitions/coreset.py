"""Core-set baseline: k-center greedy on penultimate features (Sener and Savarese, "Active Learning for
Convolutional Neural Networks: A Core-Set Approach", ICLR 2018, Algorithm 1, the greedy 2-approximation).

The labeled set is the initial set of centers; each of the P new centers is the unlabeled image farthest (in
Euclidean distance) from its nearest center. Features are the model's penultimate layer (the tap named by
``type(model).penultimate``, ``fc1`` for LeNet) after its ReLU, which is the embedding the reference code takes:
the input of the classifier layer, before dropout. Taps are pre-activation (``fkal.models``), so the ReLU is
applied here; a tap with spatial axes is global-average-pooled to a vector.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import TensorSource
from ..selection import kcenter_greedy_distance
from .contract import QueryContext, QueryResult

CHUNK_ELEMENTS = 1 << 24   # distances computed per block when finding each unlabeled point's nearest labeled point


@torch.no_grad()
def penultimate_features(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                         batch_size: int = 1000, desc: Optional[str] = None) -> torch.Tensor:
    """relu(penultimate tap) of ``source[idx]``: ``[N, D]`` float32 on ``device`` (eval mode, no dropout)."""
    name = getattr(type(model), "penultimate", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} names no penultimate tap (class attribute 'penultimate')")
    model.eval()
    batches = source.batches(idx, batch_size)
    if desc:
        batches = tqdm(batches, total=-(-len(idx) // batch_size), desc=desc, leave=False)
    out = []
    for _, x in batches:
        h = F.relu(model(x.to(device, non_blocking=True))[1][name].float())   # [B, D] or [B, D, H, W]
        out.append(h.flatten(2).mean(2) if h.dim() > 2 else h)                # [B, D]
    if not out:
        return torch.empty(0, 0, device=device)
    return torch.cat(out)


@torch.no_grad()
def penultimate_outputs(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                        batch_size: int = 1000, features: bool = True, desc: Optional[str] = None
                        ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One pass over ``source[idx]`` (eval mode): the logits ``[N, C]`` and, with ``features``, relu(penultimate
    tap) ``[N, D]`` (the classifier layer's input, as ``penultimate_features``), float32 on the CPU. For the
    acquisitions that read the classifier layer (BASE, BADGE) or the pool's softmax (GALAXY, DIRECT)."""
    name = getattr(type(model), "penultimate", None)
    if features and name is None:
        raise ValueError(f"{type(model).__name__} names no penultimate tap (class attribute 'penultimate')")
    model.eval()
    batches = source.batches(idx, batch_size)
    if desc:
        batches = tqdm(batches, total=-(-len(idx) // batch_size), desc=desc, leave=False)
    logits, feats = [], []
    for _, x in batches:
        z, taps = model(x.to(device, non_blocking=True))
        logits.append(z.float().cpu())                                        # [B, C]
        if features:
            h = F.relu(taps[name].float())                                    # [B, D] or [B, D, H, W]
            feats.append((h.flatten(2).mean(2) if h.dim() > 2 else h).cpu())  # [B, D]
    if not logits:
        return torch.empty(0, 0), (torch.empty(0, 0) if features else None)
    return torch.cat(logits), (torch.cat(feats) if features else None)


def nearest_distance(points: torch.Tensor, centers: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Euclidean distance of each point ``[N, D]`` to its nearest center ``[M, D]``: ``[N]``, in blocks of about
    ``chunk_elements`` distances (memory O(chunk_elements), not O(N*M))."""
    n, m = len(points), len(centers)
    best = torch.full((n,), float("inf"), device=points.device)
    if m == 0:
        return best
    cols = max(1, min(m, chunk_elements))
    rows = max(1, chunk_elements // cols)
    for r in range(0, n, rows):
        block = points[r:r + rows]                                            # [rows, D]
        for c in range(0, m, cols):
            d = _euclidean(block, centers[c:c + cols]).min(1).values          # [rows]
            best[r:r + rows] = torch.minimum(best[r:r + rows], d)
    return best


def _euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances ``[A, B]`` (cdist without the matrix-product shortcut, which loses precision)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def coreset_select(labeled_feats: torch.Tensor, unlabeled_feats: torch.Tensor, budget: int,
                   first: Optional[int] = None, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """k-center greedy with the labeled points as initial centers (Sener and Savarese, Algorithm 1).

    labeled_feats [N_l, D], unlabeled_feats [N_u, D] -> (picked [budget] positions into the unlabeled rows, in the
    order chosen; radius [budget], each pick's distance to its nearest center when it was chosen, i.e. the
    covering radius it removed). With no labeled points the first center is ``first`` (radius nan).
    Each step updates every point's nearest-center distance with the new center only (incremental, O(N_u * D)).
    """
    n = len(unlabeled_feats)
    budget = min(budget, n)
    if budget == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)

    def distance_to(i: int) -> torch.Tensor:                                  # [N_u]
        return torch.linalg.vector_norm(unlabeled_feats - unlabeled_feats[i], dim=1)

    if len(labeled_feats) > 0:
        initial = nearest_distance(unlabeled_feats, labeled_feats, chunk_elements)
        picked = kcenter_greedy_distance(distance_to, n, budget, initial=initial)
    else:
        if first is None:
            raise ValueError("with no labeled points the first center must be given")
        initial = distance_to(first)
        initial[first] = -1.0                                                 # never chosen again
        picked = np.concatenate([[first], kcenter_greedy_distance(distance_to, n, budget - 1, initial=initial)])
    return picked.astype(np.int64), _pick_radius(labeled_feats, unlabeled_feats, picked, chunk_elements)


def _pick_radius(labeled_feats: torch.Tensor, unlabeled_feats: torch.Tensor, picked: np.ndarray,
                 chunk_elements: int) -> np.ndarray:
    """Distance of pick j to the labeled points and picks 0..j-1: ``[budget]`` (nan for a first pick with no
    labeled points)."""
    sel = unlabeled_feats[torch.as_tensor(picked, device=unlabeled_feats.device)]   # [P, D]
    to_labeled = nearest_distance(sel, labeled_feats, chunk_elements)              # [P], inf if none
    pair = _euclidean(sel, sel)                                                    # [P, P]
    earlier = torch.ones_like(pair, dtype=torch.bool).tril(-1)                     # i < j
    to_picks = pair.masked_fill(~earlier, float("inf")).min(1).values              # [P]
    radius = torch.minimum(to_labeled, to_picks)
    return radius.masked_fill(torch.isinf(radius), float("nan")).cpu().numpy()


def coreset_query(ctx: QueryContext) -> QueryResult:
    """P unlabeled images by k-center greedy on ``models[0]``'s penultimate features; scores are the radii."""
    data, model = ctx.data, ctx.models[0]
    labeled, unlabeled = np.asarray(ctx.labeled), np.asarray(ctx.unlabeled)
    feats_u = penultimate_features(model, data.pool_source, data.split.pool[unlabeled], ctx.device, ctx.batch_size,
                                   ctx.describe("unlabeled features"))                                    # [N_u, D]
    feats_l = penultimate_features(model, data.pool_source, data.split.pool[labeled], ctx.device, ctx.batch_size,
                                   ctx.describe("labeled features"))                                      # [N_l, D]
    first = int(torch.randint(len(unlabeled), (1,), generator=ctx.generator)) if len(labeled) == 0 else None
    picked, radius = coreset_select(feats_l, feats_u, ctx.budget, first=first)
    return QueryResult(unlabeled[picked], radius)
