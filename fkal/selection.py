"""Selection pieces of Algorithm 1: k-center greedy over a similarity, and the merge of per-center rankings."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def kcenter_greedy(similarity_to: Callable[[int], torch.Tensor], n: int, k: int, first: int = 0) -> np.ndarray:
    """k-center greedy (farthest point) under a similarity: the next center is the point least similar to
    its most similar chosen center.

    ``similarity_to(i)`` returns the similarities ``[n]`` of point i to every point. Each point keeps its best
    similarity to the chosen centers, updated once per new center: O(k * n) similarities in all.
    Returns ``k`` distinct indices in the order they were chosen, starting with ``first``.
    """
    k = min(k, n)
    chosen = [first]
    best = similarity_to(first).clone().float()                               # [n]
    taken = torch.zeros(n, dtype=torch.bool, device=best.device)
    taken[first] = True
    for _ in range(k - 1):
        nxt = int(best.masked_fill(taken, float("inf")).argmin())
        chosen.append(nxt)
        taken[nxt] = True
        best = torch.maximum(best, similarity_to(nxt).float())
    return np.asarray(chosen)


def kcenter_greedy_distance(distance_to: Callable[[int], torch.Tensor], n: int, k: int,
                            initial: torch.Tensor | None = None) -> np.ndarray:
    """k-center greedy under a distance (core-set, Sener and Savarese): the next center is the point farthest
    from its nearest center. ``initial`` holds each point's distance to the already chosen centers (the labeled
    set), ``[n]``; without it the first center is point 0. Returns ``k`` new indices in order.
    """
    k = min(k, n)
    chosen = []
    if initial is None:
        chosen.append(0)
        nearest = distance_to(0).clone().float()
    else:
        nearest = initial.clone().float()
    while len(chosen) < k:
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, distance_to(nxt).float())
        nearest[nxt] = -1.0
    return np.asarray(chosen)


def merge_by_rank(ranked: torch.Tensor, scores: torch.Tensor, budget: int) -> np.ndarray:
    """Merge per-center rankings into ``budget`` distinct items (the argmax of eq. 12 over P centers).

    ranked: [P, K] item indices per center, best first; scores: [P, K] their similarities.
    Rank 0 of every center comes first, then rank 1, and so on; within one rank, higher similarity first.
    Returns up to ``budget`` distinct items (fewer only if the rankings hold fewer distinct items).
    """
    P, K = ranked.shape
    order = torch.argsort(-scores, dim=0, stable=True)                      # [P, K] center order within a rank
    flat = ranked.gather(0, order).T.reshape(-1).cpu().numpy()              # rank-major: [K * P]
    _, first = np.unique(flat, return_index=True)
    return flat[np.sort(first)][:budget]
