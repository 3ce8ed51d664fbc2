"""TypiClust (Hacohen, Dekel and Weinshall, ICML 2022, "Active Learning on a Budget: Opposite Strategies Suit High
and Low Budgets"): pick typical images of large clusters that hold no labeled image.

1. Cluster self-supervised features of the whole pool (labeled and unlabeled) into |L| + P clusters with k-means.
2. Typicality of x: 1 / (mean distance from x to its K = 20 nearest neighbours).
3. From each of the P largest clusters without a labeled image, take the most typical image.

Details the paper leaves open, read from the authors' code (avihu111/TypiClust, ``deep-al/pycls/al/typiclust.py``)
and followed here, except the distance (last item), where the authors' rule is an option:

* Number of clusters: min(|L| + P, 500) (``MAX_NUM_CLUSTERS``). The authors run scikit-learn's ``KMeans`` up to
  50 clusters and ``MiniBatchKMeans(batch_size=5000)`` above; both unseeded there, seeded here from a draw of the
  caller's generator. Features are L2-normalized first (their ``load_features(normalized=True)``).
* Clusters of at most 5 images (labeled ones included) are dropped (``MIN_CLUSTER_SIZE``).
* Order of clusters: fewest labeled images first, then larger first (``sort_values(['existing_count',
  'neg_cluster_size'])``; equal keys keep the order of the cluster ids). Pick i takes the cluster at position
  i mod (number of kept clusters). So when fewer than P clusters are uncovered, the remaining picks come from the
  covered clusters with the fewest labeled images, largest first, and past the last cluster the order wraps
  around. The labeled counts are not updated within a batch.
* Typicality is computed within the cluster, among its candidates only: its unlabeled images not yet picked in
  this batch (labeled images and earlier picks are neither candidates nor neighbours), with
  K = min(20, floor(n_candidates / 2)) neighbours, the image itself excluded. Ties: the first candidate in pool
  order (``argmax``). A cluster with one candidate gives it; one with none is passed over (the authors' code would
  fail there).
* Distance: the paper's Euclidean distance, by default. The authors' code averages *squared* Euclidean distances
  (avihu111/TypiClust at 4097a71, ``deep-al/pycls/al/typiclust.py``): ``get_nn`` searches a faiss
  ``IndexFlatL2``, whose ``search`` returns squared L2 distances, for ``num_neighbors + 1`` neighbours and drops
  the first column (the image itself); ``get_mean_nn_dist`` averages them (``distances.mean(axis=1)``);
  ``calculate_typicality`` returns ``1 / (mean_distance + 1e-5)``; ``TypiClust.select_samples`` calls it with
  ``min(self.K_NN, len(indices) // 2)`` neighbours. ``--typiclust-distance squared`` (``squared=True`` in
  :func:`typicality`, :func:`select`, :func:`typiclust`) reproduces that; the 1e-5 is added in both rules. The two
  rank a cluster's images differently: the mean of squared distances weighs the far neighbours among the K more,
  so an image with a few very close neighbours and one far one (the edge of a tight clump) can be the most typical
  under the Euclidean rule and not under the squared one (see ``tests/test_typiclust.py``). The default stays
  the paper's definition; records made before the option existed hold ``euclidean`` (``fkal.settings``).

Features here (``typiclust_query``): the penultimate features (after ReLU) of the run's rotation-pretrained
initial model, the project's self-supervised model (Gidaris et al.'s rotation task on the whole unlabeled pool),
which the loop hands over as ``ctx.pretrained``; the same for every iteration, whatever the initial model of
the configuration. ``--typiclust-features current`` takes the current task model's instead.
"""
from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from ..arguments import integer
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .coreset import penultimate_features

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20


def typicality(features: torch.Tensor, k: int, squared: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """1 / (eps + mean distance to the k nearest other rows): ``[n, d] -> [n]`` (needs 1 <= k < n). The distance
    is Euclidean (the paper), or squared Euclidean with ``squared=True`` (the authors' code: faiss ``IndexFlatL2``);
    the neighbours are the same k rows either way, only their mean differs."""
    d = torch.cdist(features.double(), features.double())                   # [n, n]
    if squared:
        d = d.pow(2)
    d.fill_diagonal_(float("inf"))                                          # the image is not its own neighbour
    knn = d.topk(k, dim=1, largest=False).values                            # [n, k]
    return (1.0 / (knn.mean(1) + eps)).float()


def kmeans_labels(features: np.ndarray, n_clusters: int, generator: torch.Generator) -> np.ndarray:
    """k-means cluster of every row, seeded from one draw of ``generator`` (the authors' choice of algorithm:
    KMeans up to 50 clusters, MiniBatchKMeans with batches of 5000 above)."""
    state = random.getstate()
    try:
        from sklearn.cluster import KMeans, MiniBatchKMeans
    finally:                                    # sklearn.metrics, imported on the way, draws from Python's RNG
        random.setstate(state)
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
    if n_clusters <= 50:
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=n_clusters, batch_size=5000, n_init=3, random_state=seed)
    return km.fit_predict(features).astype(np.int64)


def cluster_order(clusters: np.ndarray, labeled: np.ndarray, min_size: int = MIN_CLUSTER_SIZE) -> np.ndarray:
    """Cluster ids in picking order: clusters larger than ``min_size``, fewest labeled images first, then larger
    first, then lower id. ``clusters [N]`` cluster id per pool image, ``labeled [N]`` bool."""
    ids, sizes = np.unique(clusters, return_counts=True)
    counts = np.bincount(clusters[labeled], minlength=int(ids.max()) + 1)[ids]
    keep = sizes > min_size
    ids, sizes, counts = ids[keep], sizes[keep], counts[keep]
    order = np.lexsort((ids, -sizes, counts))                               # last key sorts first
    return ids[order]


def select(features: torch.Tensor, clusters: np.ndarray, labeled: np.ndarray, budget: int, k_nn: int = K_NN,
           min_size: int = MIN_CLUSTER_SIZE, squared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust's picks given a clustering: ``budget`` pool positions (all unlabeled), in picking order, and the
    typicality of each pick within its cluster when it was picked (nan for a cluster's single candidate).

    features: [N, d] (already normalized as wanted); clusters: [N] ids; labeled: [N] bool.
    """
    labeled = np.asarray(labeled, dtype=bool)
    available = ~labeled                                                    # candidates: unlabeled, not picked
    order = cluster_order(clusters, labeled, min_size)
    if len(order) == 0:                                                     # every cluster is tiny: keep them all
        order = cluster_order(clusters, labeled, -1)
    members = {int(c): np.flatnonzero(clusters == c) for c in order}
    budget = min(budget, int(available.sum()))
    picks: list[int] = []
    scores: list[float] = []
    i = 0
    while len(picks) < budget:
        c = int(order[i % len(order)])
        i += 1
        cand = members[c][available[members[c]]]                            # pool order
        if len(cand) == 0:
            if not available[np.concatenate(list(members.values()))].any():  # kept clusters exhausted
                order = cluster_order(clusters, labeled, -1)
                members = {int(c): np.flatnonzero(clusters == c) for c in order}
            continue
        if len(cand) == 1:
            best, score = int(cand[0]), float("nan")
        else:
            k = min(k_nn, len(cand) // 2)
            t = typicality(features[cand], k, squared)                      # [n_candidates]
            j = int(t.argmax())
            best, score = int(cand[j]), float(t[j])
        picks.append(best)
        scores.append(score)
        available[best] = False
    return np.asarray(picks, dtype=np.int64), np.asarray(scores)


def typiclust(features: torch.Tensor, labeled: np.ndarray, budget: int, generator: torch.Generator,
              max_clusters: int = MAX_CLUSTERS, k_nn: int = K_NN,
              squared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust on the whole pool: ``features [N, d]`` self-supervised features of every pool image,
    ``labeled [N]`` bool. Clusters into min(|L| + budget, max_clusters), then ``select``: (picks, typicality)."""
    labeled = np.asarray(labeled, dtype=bool)
    x = features.float()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n_clusters = min(int(labeled.sum()) + budget, max_clusters, len(x))
    clusters = kmeans_labels(x.numpy(), n_clusters, generator)
    return select(x, clusters, labeled, budget, k_nn, squared=squared)


FEATURES = ("pretrained", "current")
DISTANCES = ("euclidean", "squared")    # the paper's distance; the authors' code's squared distance (faiss)
# the options (argparse dests) that shape TypiClust's picks: recorded with its results, compared on resume
OPTIONS = ("typiclust_features", "typiclust_max_clusters", "typiclust_distance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--typiclust-features", choices=FEATURES, default="pretrained",
                        help="TypiClust's features: pretrained = penultimate features of the run's rotation-pretrained "
                             "(self-supervised) initial model, current = those of the current task model")
    parser.add_argument("--typiclust-max-clusters", type=integer(1), default=MAX_CLUSTERS,
                        help="TypiClust clusters the pool into min(|L| + P, this) clusters (the authors' cap)")
    parser.add_argument("--typiclust-distance", choices=DISTANCES, default="euclidean",
                        help="the distance whose mean over the K = 20 nearest neighbours TypiClust's typicality "
                             "inverts: euclidean (default, the paper's definition) or squared (the authors' code "
                             "averages the squared distances faiss's IndexFlatL2 returns, which weighs far "
                             "neighbours more and can change picks; the default keeps the paper's rule)")


def typiclust_query(ctx: QueryContext) -> QueryResult:
    """TypiClust on the self-supervised features of the labeled and offered unlabeled images (the whole pool in
    the Fisher-kernel protocol); scores are the picks' typicality, with the distance of ``--typiclust-distance``
    (Euclidean unless it says squared)."""
    data = ctx.data
    distance = ctx.options.get("typiclust_distance") or "euclidean"
    if distance not in DISTANCES:
        raise ValueError(f"unknown TypiClust distance {distance!r}: choose one of {', '.join(DISTANCES)}")
    which = ctx.options.get("typiclust_features") or "pretrained"
    if which == "pretrained":
        if ctx.pretrained is None:
            raise ValueError("typiclust needs the run's rotation-pretrained model (QueryContext.pretrained), or "
                             "--typiclust-features current")
        model = ctx.pretrained().to(ctx.device).eval()
    elif which == "current":
        model = ctx.models[0]
    else:
        raise ValueError(f"unknown TypiClust features {which!r}: choose one of {', '.join(FEATURES)}")
    # the images the query sees: the labeled and the offered unlabeled ones (the whole pool, unless the protocol
    # offers a random subset of the unlabeled pool: fkal.protocols, --subset-size)
    positions = np.sort(np.concatenate([ctx.labeled, ctx.unlabeled]))
    feats = penultimate_features(model, data.pool_source, data.split.pool[positions], ctx.device, ctx.batch_size,
                                 ctx.describe("self-supervised features")).cpu()     # [N, d]
    labeled = np.isin(positions, ctx.labeled)
    max_clusters = int(ctx.options.get("typiclust_max_clusters") or MAX_CLUSTERS)
    picks, scores = typiclust(feats, labeled, ctx.budget, ctx.generator, max_clusters=max_clusters,
                              squared=distance == "squared")
    return QueryResult(positions[picks], scores)


SPECS = (AcquisitionSpec("typiclust", typiclust_query, title="TypiClust", options=OPTIONS,
                         add_arguments=add_arguments,
                         example=Example("typiclust", bars=("self-supervised features",))),)
