"""Core-set baseline: k-center greedy on penultimate features (Sener and Savarese, "Active Learning for
Convolutional Neural Networks: A Core-Set Approach", ICLR 2018, Algorithm 1, the greedy 2-approximation).

The labeled set is the initial set of centers; each of the P new centers is the unlabeled image farthest (in
Euclidean distance) from its nearest center. Features are the model's penultimate layer (the tap named by
``type(model).penultimate``, ``fc1`` for LeNet) after its ReLU, which is the embedding the reference code takes:
the input of the classifier layer, before dropout. Taps are pre-activation (``fkal.models``), so the ReLU is
applied here; a tap with spatial axes is global-average-pooled to a vector.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed as D
from ..data import TensorSource
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult

CHUNK_ELEMENTS = 1 << 24   # distances computed per block when finding each unlabeled point's nearest labeled point


@torch.no_grad()
def penultimate_features(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                         batch_size: int = 1000, desc: Optional[str] = None) -> torch.Tensor:
    """relu(penultimate tap) of ``source[idx]``: ``[N, D]`` float32 on ``device`` (eval mode, no dropout); under
    several processes each rank computes its batches and every rank gets all rows."""
    local, where = penultimate_shard(model, source, idx, device, batch_size, desc)
    if not len(idx):
        return torch.empty(0, 0, device=device)
    return D.gather_rows(local, where, len(idx))


@torch.no_grad()
def penultimate_shard(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                      batch_size: int = 1000, desc: Optional[str] = None) -> tuple[torch.Tensor, np.ndarray]:
    """``penultimate_features`` of this rank's batches: ``(features [n_local, D], positions into idx)``."""
    name = getattr(type(model), "penultimate", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} names no penultimate tap (class attribute 'penultimate')")
    model.eval()
    batches = D.sharded(source, idx, batch_size)
    if desc and D.is_main():
        batches = tqdm(batches, total=len(D.my_batches(len(idx), batch_size)), desc=desc, leave=False)
    out, where = [], []
    for _, pos, x in batches:
        h = F.relu(model(x.to(device, non_blocking=True))[1][name].float())   # [B, D] or [B, D, H, W]
        out.append(h.flatten(2).mean(2) if h.dim() > 2 else h)                # [B, D]
        where.append(pos)
    if not out:
        return torch.empty(0, 0, device=device), np.zeros(0, dtype=np.int64)
    return torch.cat(out), np.concatenate(where)


@torch.no_grad()
def penultimate_outputs(model: nn.Module, source: TensorSource, idx: np.ndarray, device: torch.device,
                        batch_size: int = 1000, features: bool = True, desc: Optional[str] = None
                        ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One pass over ``source[idx]`` (eval mode): the logits ``[N, C]`` and, with ``features``, relu(penultimate
    tap) ``[N, D]`` (the classifier layer's input, as ``penultimate_features``), float32 on the CPU. For the
    acquisitions that read the classifier layer (BASE, BADGE) or the pool's softmax (GALAXY, DIRECT). Under several
    processes each rank computes its batches and every rank gets all rows."""
    name = getattr(type(model), "penultimate", None)
    if features and name is None:
        raise ValueError(f"{type(model).__name__} names no penultimate tap (class attribute 'penultimate')")
    if not len(idx):
        return torch.empty(0, 0), (torch.empty(0, 0) if features else None)
    model.eval()
    batches = D.sharded(source, idx, batch_size)
    if desc and D.is_main():
        batches = tqdm(batches, total=len(D.my_batches(len(idx), batch_size)), desc=desc, leave=False)
    logits, feats, where = [], [], []
    for _, pos, x in batches:
        z, taps = model(x.to(device, non_blocking=True))
        logits.append(z.float().cpu())                                        # [B, C]
        if features:
            h = F.relu(taps[name].float())                                    # [B, D] or [B, D, H, W]
            feats.append((h.flatten(2).mean(2) if h.dim() > 2 else h).cpu())  # [B, D]
        where.append(pos)
    where = np.concatenate(where) if where else np.zeros(0, dtype=np.int64)

    def gathered(parts: list) -> torch.Tensor:                               # [N, ...] in idx's order, on the CPU
        return D.gather_rows(torch.cat(parts) if parts else torch.empty(0, 0), where, len(idx)).cpu()
    return gathered(logits), (gathered(feats) if features else None)


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
    covering radius it removed). With no labeled points the first center is ``first`` (radius nan). Ties go to
    the lower position. Each step updates every point's nearest-center distance with the new center only
    (incremental, O(N_u * D)).
    """
    n = len(unlabeled_feats)
    return _kcenter(labeled_feats, unlabeled_feats, np.arange(n), n, budget, first, chunk_elements, collective=False)


def coreset_select_shard(labeled_feats: torch.Tensor, local_feats: torch.Tensor, local_positions: np.ndarray,
                         n: int, budget: int, first: Optional[int] = None,
                         chunk_elements: int = CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """``coreset_select`` over a pool of ``n`` unlabeled points spread over the ranks: this rank holds the rows
    ``local_feats`` at ``local_positions`` and their nearest-center distances; each greedy step costs one
    all-reduce of a ``[world, D + 2]`` table (each rank's farthest point: distance, position, features). Every
    rank returns the same picks, equal to ``coreset_select`` on all the rows."""
    return _kcenter(labeled_feats, local_feats, np.asarray(local_positions), n, budget, first, chunk_elements,
                    collective=True)


def _kcenter(labeled: torch.Tensor, local: torch.Tensor, positions: np.ndarray, n: int, budget: int,
             first: Optional[int], chunk_elements: int, collective: bool) -> tuple[np.ndarray, np.ndarray]:
    budget = min(budget, n)
    if budget == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    world, rank = (D.world(), D.rank()) if collective else (1, 0)
    width = max(D.all_gather_object(local.shape[1] if len(local) else 0)) if collective else local.shape[1]
    pos_t = torch.as_tensor(positions, dtype=torch.long, device=local.device)

    def farthest(nearest: torch.Tensor) -> tuple[float, int, torch.Tensor]:
        """The point farthest from its nearest center, over every rank: (distance, position, features)."""
        table = torch.zeros(world, width + 2, dtype=torch.float64)
        table[rank, 0] = -math.inf
        if len(local):
            j = int(nearest.argmax())                          # the first of equal maxima: the lower position
            table[rank, 0], table[rank, 1] = float(nearest[j]), float(positions[j])
            table[rank, 2:] = local[j].double().cpu()
        if collective:
            D.all_reduce_sum(table)                            # every other row is zero: a gather by all-reduce
        best = max(range(world), key=lambda q: (table[q, 0].item(), -table[q, 1].item()))
        return table[best, 0].item(), int(table[best, 1].item()), table[best, 2:].to(local.device, local.dtype)

    def update(nearest: torch.Tensor, center: torch.Tensor, position: int) -> torch.Tensor:
        if len(local):
            nearest = torch.minimum(nearest, torch.linalg.vector_norm(local - center, dim=1))
            nearest[pos_t == position] = -1.0                  # chosen: never again
        return nearest

    picked, radius = [], []
    if len(labeled) > 0:
        nearest = nearest_distance(local, labeled, chunk_elements) if len(local) else torch.zeros(0)
    else:
        if first is None:
            raise ValueError("with no labeled points the first center must be given")
        table = torch.zeros(world, width + 1, dtype=torch.float64)     # the first center, from its rank
        mine = (pos_t == first).nonzero().flatten()
        if len(mine):
            table[rank, 0] = 1.0
            table[rank, 1:] = local[int(mine[0])].double().cpu()
        if collective:
            D.all_reduce_sum(table)
        center = table[int(table[:, 0].argmax()), 1:].to(local.device, local.dtype)
        nearest = update(torch.full((len(local),), math.inf, device=local.device), center, first)
        picked.append(first)
        radius.append(math.nan)
    while len(picked) < budget:
        value, position, center = farthest(nearest)
        picked.append(position)
        radius.append(value)
        nearest = update(nearest, center, position)
    return np.asarray(picked, dtype=np.int64), np.asarray(radius, dtype=np.float64)


def coreset_query(ctx: QueryContext) -> QueryResult:
    """P unlabeled images by k-center greedy on ``models[0]``'s penultimate features; scores are the radii."""
    data, model = ctx.data, ctx.models[0]
    labeled, unlabeled = np.asarray(ctx.labeled), np.asarray(ctx.unlabeled)
    feats_u, where = penultimate_shard(model, data.pool_source, data.split.pool[unlabeled], ctx.device,
                                       ctx.batch_size, ctx.describe("unlabeled features"))   # this rank's [n, D]
    feats_l = penultimate_features(model, data.pool_source, data.split.pool[labeled], ctx.device, ctx.batch_size,
                                   ctx.describe("labeled features"))                         # all [N_l, D]
    first = int(torch.randint(len(unlabeled), (1,), generator=ctx.generator)) if len(labeled) == 0 else None
    picked, radius = coreset_select_shard(feats_l, feats_u, where, len(unlabeled), ctx.budget, first=first)
    return QueryResult(unlabeled[picked], radius)


SPECS = (AcquisitionSpec("coreset", coreset_query, title="core-set",
                         example=Example("coreset", bars=("unlabeled features", "labeled features"))),)
