"""Core-set recomputed by brute force: features relu(fc1) of each image on its own, computed from the trained
weights by hand, and k-center greedy that recomputes every point's distance to every center at each step."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.registry import ACQUISITIONS


def features_by_hand(ctx, positions: np.ndarray) -> np.ndarray:
    """relu(fc1) of each pool position, one image at a time, float64 ``[N, 50]``."""
    s = ctx.models[0].state_dict()
    out = []
    with torch.no_grad():
        for p in positions:
            x = ctx.data.pool_source.get(ctx.data.split.pool[[p]])                     # [1, 1, 28, 28]
            h = F.relu(F.max_pool2d(F.conv2d(x, s["conv1.weight"], s["conv1.bias"]), 2))
            h = F.relu(F.max_pool2d(F.conv2d(h, s["conv2.weight"], s["conv2.bias"]), 2))
            out.append(F.relu(F.linear(h.flatten(1), s["fc1.weight"], s["fc1.bias"]))[0].double().numpy())
    return np.stack(out) if out else np.zeros((0, 50))


def kcenter_by_brute_force(labeled: np.ndarray, unlabeled: np.ndarray, budget: int, first=None):
    """Each step: every unlabeled point's distance to its nearest center (labeled points and earlier picks),
    recomputed from scratch; the farthest is the next pick. Returns (picks, their distance when picked)."""
    centers = list(labeled)
    picks, radius = [], []
    if first is not None:
        picks.append(first)
        radius.append(np.nan)
        centers.append(unlabeled[first])
    while len(picks) < budget:
        d = np.array([min(np.linalg.norm(u - c) for c in centers) for u in unlabeled])
        d[picks] = -1.0
        nxt = int(np.argmax(d))
        picks.append(nxt)
        radius.append(d[nxt])
        centers.append(unlabeled[nxt])
    return np.array(picks), np.array(radius)


@pytest.mark.parametrize("n_labeled", [20, 0])
def test_coreset_picks_are_the_brute_force_k_center_greedy(tiny_mnist, n_labeled):
    ctx = trained_context(tiny_mnist, "coreset", n_labeled=n_labeled, iteration=2 if n_labeled else 1)
    ctx.unlabeled = ctx.unlabeled[::3]                                       # a smaller pool: 94 or 100 images
    result = ACQUISITIONS["coreset"](ctx)
    picked = check_contract(ctx, result)
    feats_u = features_by_hand(ctx, ctx.unlabeled)
    feats_l = features_by_hand(ctx, ctx.labeled)
    first = None
    if n_labeled == 0:
        first = int(torch.randint(len(ctx.unlabeled), (1,), generator=torch.Generator().manual_seed(0)))
    want, radius = kcenter_by_brute_force(feats_l, feats_u, ctx.budget, first)
    np.testing.assert_array_equal(picked, ctx.unlabeled[want])
    np.testing.assert_allclose(result.scores, radius, rtol=1e-4, atol=1e-5)
