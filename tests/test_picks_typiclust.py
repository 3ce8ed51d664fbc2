"""TypiClust recomputed by brute force on the 300-image pool, end to end from the self-supervised model.

Image by image: the penultimate features relu(fc1(.)) of the pretrained LeNet (or of the current task model),
L2-normalized; k-means into min(|L| + P, 500) clusters with scikit-learn's KMeans seeded from the query
generator's first draw (the clustering itself is the reference's); then, from the definitions, the cluster order
(clusters of more than 5 images, fewest labeled first, larger first, lower id), and in each cluster in turn the
candidate (unlabeled, not yet picked) of largest typicality 1 / (1e-5 + mean Euclidean distance to its
min(20, n // 2) nearest other candidates), the first in pool order on ties. The picks must be these, in this
order, and ``result.scores`` their typicality (nan for a cluster's single candidate). With
``--typiclust-distance squared`` (the authors' code) the mean is of the squared distances.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.registry import ACQUISITIONS


def penultimate_by_hand(model, x: torch.Tensor) -> np.ndarray:
    """relu(fc1) of one LeNet image ``[1, 1, 28, 28]`` in eval mode (no dropout), from its layers."""
    h = F.relu(F.max_pool2d(model.conv1(x), 2))
    h = F.relu(F.max_pool2d(model.conv2(h), 2))
    return F.relu(model.fc1(h.flatten(1)))[0].double().numpy()


def typicality_by_definition(x: np.ndarray, members: list[int], squared: bool = False) -> list[float]:
    """1 / (1e-5 + mean distance to the min(20, n // 2) nearest other members); with ``squared`` the mean of the
    squared distances (the authors' code: faiss IndexFlatL2)."""
    k = min(20, len(members) // 2)
    out = []
    for i in members:
        d = sorted(float(np.linalg.norm(x[i] - x[j])) ** (2 if squared else 1) for j in members if j != i)
        out.append(1.0 / (np.mean(d[:k]) + 1e-5))
    return out


def typiclust_by_brute_force(ctx, model, squared: bool = False) -> tuple[list[int], list[float]]:
    from sklearn.cluster import KMeans

    data = ctx.data
    n = len(data.split.pool)
    with torch.no_grad():
        feats = np.stack([penultimate_by_hand(model.eval(), data.pool_source.get(data.split.pool[[p]]))
                          for p in range(n)])
    x = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labeled = np.isin(np.arange(n), ctx.labeled)
    n_clusters = min(int(labeled.sum()) + ctx.budget, 500, n)
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    assert n_clusters <= 50
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x.astype(np.float32))
    ids = sorted(set(clusters.tolist()))
    size = {c: int((clusters == c).sum()) for c in ids}
    covered = {c: int((labeled & (clusters == c)).sum()) for c in ids}
    order = sorted((c for c in ids if size[c] > 5), key=lambda c: (covered[c], -size[c], c))
    taken = set(np.flatnonzero(labeled).tolist())
    picks, scores, i = [], [], 0
    while len(picks) < ctx.budget:
        c = order[i % len(order)]
        i += 1
        cand = [p for p in range(n) if clusters[p] == c and p not in taken]
        assert cand, "a kept cluster ran out of candidates: pick a smaller budget for this test"
        if len(cand) == 1:
            best, score = cand[0], float("nan")
        else:
            t = typicality_by_definition(x, cand, squared)
            j = int(np.argmax(t))
            best, score = cand[j], t[j]
        picks.append(best)
        scores.append(score)
        taken.add(best)
    return picks, scores


@pytest.mark.parametrize("n_labeled,budget,features", [(20, 12, "pretrained"), (0, 6, "pretrained"),
                                                       (40, 9, "current")])
def test_typiclust_picks_equal_the_densest_images_of_the_clusters_by_brute_force(tiny_mnist, n_labeled, budget,
                                                                                  features):
    ctx = trained_context(tiny_mnist, "typiclust", n_labeled=n_labeled, budget=budget,
                          options={"typiclust_features": features}, epochs=1)
    model = ctx.pretrained() if features == "pretrained" else ctx.models[0]
    result = ACQUISITIONS["typiclust"](ctx)
    picked = check_contract(ctx, result)
    want, scores = typiclust_by_brute_force(ctx, model)
    np.testing.assert_array_equal(picked, want)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-4, equal_nan=True)


def test_squared_distance_picks_equal_the_brute_force_with_squared_distances(tiny_mnist):
    """--typiclust-distance squared (the authors' rule) end to end: the picks and scores are the brute force's with
    the mean of squared distances; the scores are not the Euclidean rule's."""
    options = {"typiclust_distance": "squared", "typiclust_features": "current"}
    ctx = trained_context(tiny_mnist, "typiclust", n_labeled=40, budget=9, options=options, epochs=1)
    result = ACQUISITIONS["typiclust"](ctx)
    picked = check_contract(ctx, result)
    want, scores = typiclust_by_brute_force(ctx, ctx.models[0], squared=True)
    np.testing.assert_array_equal(picked, want)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-4, equal_nan=True)
    _, euclidean_scores = typiclust_by_brute_force(ctx, ctx.models[0])
    assert not np.allclose(scores, euclidean_scores, rtol=1e-4, equal_nan=True)


def test_clustering_leaves_pythons_random_state_alone_in_a_fresh_process():
    """The first k-means of a process imports scikit-learn, whose sklearn.metrics draws from Python's global RNG
    on import: the query must leave that state as it found it."""
    code = ("import random, numpy as np, torch\n"
            "from fkal.acquisitions.typiclust import kmeans_labels\n"
            "random.seed(7); before = random.getstate()\n"
            "kmeans_labels(np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32), 3,\n"
            "              torch.Generator().manual_seed(0))\n"
            "assert random.getstate() == before, 'Python random state changed'\n")
    from conftest import ROOT
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
