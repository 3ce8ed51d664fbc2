"""TypiClust: typicality by brute force, picks on hand-made blobs, the cluster order, seeding."""
import numpy as np
import pytest
import torch

from fkal.acquisitions.coreset import penultimate_features
from fkal.acquisitions.typiclust import cluster_order, select, typicality, typiclust, typiclust_query


def brute_typicality(x: np.ndarray, k: int, squared: bool = False) -> np.ndarray:
    out = np.empty(len(x))
    for i in range(len(x)):
        d = sorted(float(np.sqrt(((x[i] - x[j]) ** 2).sum())) for j in range(len(x)) if j != i)
        if squared:
            d = sorted(v * v for v in d)
        out[i] = 1.0 / (np.mean(d[:k]) + 1e-5)
    return out


@pytest.mark.parametrize("squared", [False, True])
def test_typicality_equals_brute_force(squared):
    x = torch.randn(25, 3, generator=torch.Generator().manual_seed(0))
    for k in (1, 5, 20):
        np.testing.assert_allclose(typicality(x, k, squared).numpy(), brute_typicality(x.numpy(), k, squared),
                                   rtol=1e-5)
    np.testing.assert_allclose(typicality(x, 5).numpy(), brute_typicality(x.numpy(), 5), rtol=1e-5)  # Euclidean


def star_and_clump() -> np.ndarray:
    """Nine 2-D points: a star (centre 0 at the origin, points 1..4 at distance 1 on the axes) and a clump of four
    points 5..8 on a 0.1 square, 3 away from point 1."""
    return np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [4, 0], [4.1, 0], [4, 0.1], [4.1, 0.1]], dtype=float)


def typicality_by_loops(x: np.ndarray, k: int, squared: bool) -> list[float]:
    """1 / (1e-5 + mean of the k smallest distances (squared or not) to the other points), with plain loops."""
    out = []
    for i in range(len(x)):
        ds = []
        for j in range(len(x)):
            if j != i:
                d2 = sum((float(x[i][c]) - float(x[j][c])) ** 2 for c in range(len(x[i])))
                ds.append(d2 if squared else d2 ** 0.5)
        ds.sort()
        out.append(1.0 / (sum(ds[:k]) / k + 1e-5))
    return out


@pytest.mark.parametrize("squared", [False, True])
def test_typicality_of_the_star_and_clump_by_hand_and_by_loops(squared):
    """k = 9 // 2 = 4. The centre's 4 neighbours are all at 1: 1 / (1 + 1e-5) under both rules. Clump point 5's
    are 0.1, 0.1, 0.1 sqrt(2) and 3 (point 1): Euclidean mean (0.2 + 0.1414 + 3) / 4 = 0.8354, squared mean
    (0.01 + 0.01 + 0.02 + 9) / 4 = 2.26. The far neighbour counts 3 in the one mean and 9 in the other."""
    x = star_and_clump()
    got = typicality(torch.tensor(x), 4, squared).double().numpy()
    np.testing.assert_allclose(got, typicality_by_loops(x, 4, squared), rtol=1e-6)
    assert got[0] == pytest.approx(1 / (1 + 1e-5), rel=1e-6)
    mean5 = (0.02 + 0.02 + 9) / 4 if squared else (0.2 + 0.02 ** 0.5 + 3) / 4
    assert got[5] == pytest.approx(1 / (mean5 + 1e-5), rel=1e-6)
    assert int(np.argmax(got)) == (0 if squared else 5)     # Euclidean: clump point 5 (1.197 > 1); squared: 0


@pytest.mark.parametrize("squared, pick", [(False, 5), (True, 0)])
def test_the_two_distances_pick_different_images(squared, pick):
    """The star and clump through select (one cluster) and through typiclust (features lifted onto the unit
    sphere, (0.1 x, 0.1 y, 1) normalized; one pick: one k-means cluster): the Euclidean rule takes the clump's
    corner 5, whose one far neighbour weighs 3 in the mean, the squared rule (the authors' code) the star's centre
    0, since that neighbour weighs 9 there."""
    x = star_and_clump()
    picks, scores = select(torch.tensor(x), np.zeros(9, dtype=int), np.zeros(9, dtype=bool), 1, squared=squared)
    assert picks.tolist() == [pick]
    assert scores[0] == pytest.approx(typicality_by_loops(x, 4, squared)[pick], rel=1e-6)
    lifted = np.concatenate([0.1 * x, np.ones((9, 1))], 1)
    picks, scores = typiclust(torch.tensor(lifted, dtype=torch.float32), np.zeros(9, dtype=bool), 1,
                              torch.Generator().manual_seed(0), squared=squared)
    assert picks.tolist() == [pick]
    unit = lifted / np.linalg.norm(lifted, axis=1, keepdims=True)
    t = typicality_by_loops(unit, 4, squared)
    assert int(np.argmax(t)) == pick and scores[0] == pytest.approx(t[pick], rel=1e-4)


def test_the_distance_option_reaches_the_query(query_ctx):
    """--typiclust-distance squared: the query's picks and scores are typiclust's with squared=True on the same
    features and generator; without the option, the Euclidean ones (the scores, 1 / mean distance, differ)."""
    options = {"typiclust_distance": "squared", "typiclust_features": "current"}
    ctx = query_ctx("typiclust", n_labeled=30, budget=8, seed=3, options=options)
    result = typiclust_query(ctx)
    data = ctx.data
    feats = penultimate_features(ctx.models[0], data.pool_source, data.split.pool, ctx.device)
    labeled = np.isin(np.arange(len(data.split.pool)), ctx.labeled)
    expected, scores = typiclust(feats, labeled, 8, torch.Generator().manual_seed(3), squared=True)
    assert result.indices.tolist() == expected.tolist()
    np.testing.assert_allclose(result.scores, scores)
    euclidean = typiclust_query(query_ctx("typiclust", n_labeled=30, budget=8, seed=3,
                                          options={"typiclust_features": "current"}))
    plain, plain_scores = typiclust(feats, labeled, 8, torch.Generator().manual_seed(3))
    assert euclidean.indices.tolist() == plain.tolist()
    np.testing.assert_allclose(euclidean.scores, plain_scores)
    assert not np.allclose(euclidean.scores, result.scores)
    with pytest.raises(ValueError) as e:
        typiclust_query(query_ctx("typiclust", budget=4, options={"typiclust_distance": "cosine"}))
    assert str(e.value) == "unknown TypiClust distance 'cosine': choose one of euclidean, squared"


def test_the_distance_flag_defaults_to_the_papers_and_is_recorded():
    """--typiclust-distance: euclidean unless told, the value ADDED_LATER gives the records made before the
    option; squared on request; an option of the spec (recorded, compared on resume)."""
    from fkal.acquisitions.typiclust import SPECS
    from fkal.cli import build_parser
    from fkal.settings import ADDED_LATER
    parser = build_parser()
    assert parser.parse_args([]).typiclust_distance == "euclidean" == ADDED_LATER["options.typiclust_distance"]
    assert parser.parse_args(["--typiclust-distance", "squared"]).typiclust_distance == "squared"
    with pytest.raises(SystemExit):
        parser.parse_args(["--typiclust-distance", "cosine"])
    assert "typiclust_distance" in SPECS[0].options
    from fkal.settings import differences, settings_id
    before = {"seed": 0, "config": "typiclust", "options": {"typiclust_features": "pretrained",
                                                             "typiclust_max_clusters": 500}}
    now = {**before, "options": {**before["options"], "typiclust_distance": "euclidean"}}
    assert differences(before, now) == [] and settings_id(before) == settings_id(now)   # old records resume
    authors = {**before, "options": {**before["options"], "typiclust_distance": "squared"}}
    assert differences(before, authors) == [("options.typiclust_distance", "euclidean", "squared")]


def blobs(sizes, seed=0, spread=0.3):
    """Well separated 2-D Gaussian blobs; returns features [N, 2] and blob ids [N]."""
    rng = np.random.default_rng(seed)
    centers = 10 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0.7, 0.7], [-0.7, -0.7]])  # apart in angle too
    xs, ids = [], []
    for b, n in enumerate(sizes):
        xs.append(centers[b] + spread * rng.standard_normal((n, 2)))
        ids.append(np.full(n, b))
    return torch.tensor(np.concatenate(xs), dtype=torch.float32), np.concatenate(ids)


def densest(x: torch.Tensor, candidates: np.ndarray, k_nn: int = 20) -> int:
    k = min(k_nn, len(candidates) // 2)
    return int(candidates[np.argmax(brute_typicality(x[candidates].numpy(), k))])


def test_one_pick_per_uncovered_large_cluster_the_densest_of_each():
    x, ids = blobs([40, 30, 20, 12])
    labeled = np.zeros(len(x), dtype=bool)
    labeled[np.flatnonzero(ids == 1)[:2]] = True                   # blob 1 (30 images) is covered
    picks, scores = select(x, ids, labeled, 3)
    assert [int(ids[p]) for p in picks] == [0, 2, 3]                # uncovered, largest first; blob 1 skipped
    for p, score in zip(picks, scores):
        cand = np.flatnonzero((ids == ids[p]) & ~labeled)
        assert p == densest(x, cand)
        k = min(20, len(cand) // 2)
        assert score == pytest.approx(brute_typicality(x[cand].numpy(), k).max(), rel=1e-5)


def test_fewer_uncovered_clusters_than_picks_continue_with_the_least_labeled():
    x, ids = blobs([40, 30, 20, 12])
    labeled = np.zeros(len(x), dtype=bool)
    labeled[np.flatnonzero(ids == 0)[:3]] = True                   # blob 0: 3 labeled
    labeled[np.flatnonzero(ids == 2)[:1]] = True                   # blob 2: 1 labeled
    labeled[np.flatnonzero(ids == 3)[:1]] = True                   # blob 3: 1 labeled
    picks, _ = select(x, ids, labeled, 6)
    # order: blob 1 (0 labeled), then 1 labeled: blob 2 (20) before blob 3 (12), then blob 0 (3 labeled);
    # the sixth and seventh picks wrap around to blob 1 and blob 2
    assert [int(ids[p]) for p in picks] == [1, 2, 3, 0, 1, 2]
    # typicality is computed among the cluster's unlabeled images: recompute without the labeled ones
    assert picks[3] == densest(x, np.flatnonzero((ids == 0) & ~labeled))
    # the second pick from blob 1 is the densest of what is left after the first
    left = np.flatnonzero((ids == 1) & ~labeled)
    assert picks[4] == densest(x, left[left != picks[0]])


def test_labeled_core_is_not_a_neighbour_nor_a_candidate():
    x, ids = blobs([40, 30])
    core = np.flatnonzero(ids == 0)
    labeled = np.zeros(len(x), dtype=bool)
    labeled[core[:15]] = True                                      # many labeled images in blob 0's core
    x[core[:15]] = x[core[20]] + 0.001 * torch.arange(15).unsqueeze(1)
    picks, _ = select(x, ids, labeled, 2)
    assert not labeled[picks].any()
    assert picks[1] == densest(x, np.flatnonzero((ids == 0) & ~labeled))


def test_small_clusters_are_dropped():
    x, ids = blobs([30, 20, 5])                                      # blob 2 has 5 images: dropped
    order = cluster_order(ids, np.zeros(len(x), dtype=bool))
    assert order.tolist() == [0, 1]
    picks, _ = select(x, ids, np.zeros(len(x), dtype=bool), 3)
    assert [int(ids[p]) for p in picks] == [0, 1, 0]


def test_kmeans_on_blobs_end_to_end_and_seeded():
    x, ids = blobs([40, 30, 20, 12], spread=0.5)
    labeled = np.zeros(len(x), dtype=bool)
    labeled[np.flatnonzero(ids == 1)[:2]] = True                   # |L| + P = 2 + 2 = 4 clusters = 4 blobs
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a, _ = typiclust(x, labeled, 2, torch.Generator().manual_seed(4))
    b, _ = typiclust(x, labeled, 2, torch.Generator().manual_seed(4))
    assert a.tolist() == b.tolist()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert [int(ids[p]) for p in a] == [0, 2]                       # the two largest uncovered blobs
    xn = x / x.norm(dim=1, keepdim=True)                            # TypiClust normalizes the features
    for p in a:
        assert p == densest(xn, np.flatnonzero(ids == ids[p]))


def test_query_uses_the_pretrained_models_features_on_the_whole_pool(query_ctx):
    ctx = query_ctx("typiclust", n_labeled=30, budget=8, seed=3)
    result = typiclust_query(ctx)
    # recomputed from the pieces: penultimate features of ctx.pretrained() for every pool image, the same draw
    data = ctx.data
    feats = penultimate_features(ctx.pretrained(), data.pool_source, data.split.pool, ctx.device)
    labeled = np.isin(np.arange(len(data.split.pool)), ctx.labeled)
    expected, scores = typiclust(feats, labeled, 8, torch.Generator().manual_seed(3))
    assert result.indices.tolist() == expected.tolist()
    np.testing.assert_allclose(result.scores, scores)
    assert not np.isin(result.indices, ctx.labeled).any()
    # the current task model's features give other picks (its weights differ from the pretrained model's)
    current = typiclust_query(query_ctx("typiclust", n_labeled=30, budget=8, seed=3,
                                        options={"typiclust_features": "current"}))
    assert current.indices.tolist() != result.indices.tolist()


def test_query_without_a_pretrained_model_says_so(query_ctx):
    ctx = query_ctx("typiclust", budget=4)
    ctx.pretrained = None
    with pytest.raises(ValueError, match="pretrained"):
        typiclust_query(ctx)


def test_query_on_an_offered_subset_sees_the_labeled_and_the_offered_images_only(query_ctx):
    """TA-VAAL's protocol offers a random subset of the unlabeled pool: TypiClust clusters the labeled and the
    offered images and picks among the offered ones (the contract: picks in ctx.unlabeled)."""
    ctx = query_ctx("typiclust", n_labeled=30, budget=8, seed=3)
    ctx.unlabeled = np.sort(np.random.default_rng(0).choice(ctx.unlabeled, size=120, replace=False))
    result = typiclust_query(ctx)
    assert np.isin(result.indices, ctx.unlabeled).all() and len(set(result.indices.tolist())) == 8
    seen = np.sort(np.concatenate([ctx.labeled, ctx.unlabeled]))                  # recomputed on those alone
    feats = penultimate_features(ctx.pretrained(), ctx.data.pool_source, ctx.data.split.pool[seen], ctx.device)
    expected, _ = typiclust(feats, np.isin(seen, ctx.labeled), 8, torch.Generator().manual_seed(3))
    assert result.indices.tolist() == seen[expected].tolist()



def test_unknown_features_are_refused_with_the_choices(query_ctx):
    with pytest.raises(ValueError) as e:
        typiclust_query(query_ctx("typiclust", budget=4, options={"typiclust_features": "imagenet"}))
    assert str(e.value) == "unknown TypiClust features 'imagenet': choose one of pretrained, current"

def test_no_budget_gives_no_positions_still_as_integers():
    g = torch.Generator().manual_seed(0)
    picks, scores = select(torch.randn(12, 3, generator=g), np.repeat(np.arange(3), 4), np.zeros(12, dtype=bool), 0)
    assert picks.dtype == np.int64 and picks.shape == (0,) and scores.shape == (0,)


def test_the_flags_reach_the_options_with_their_defaults_and_bounds():
    """The defaults are recorded with the results (the configuration's settings), so they must be the numbers used:
    500 clusters at most, as the authors' code, and the pretrained model's features."""
    from fkal.acquisitions.typiclust import MAX_CLUSTERS
    from fkal.cli import build_parser
    parser = build_parser()
    defaults = parser.parse_args([])
    assert (defaults.typiclust_max_clusters, defaults.typiclust_features) == (MAX_CLUSTERS, "pretrained") == \
        (500, "pretrained")
    args = parser.parse_args(["--typiclust-max-clusters", "7", "--typiclust-features", "current"])
    assert (args.typiclust_max_clusters, args.typiclust_features) == (7, "current")
    with pytest.raises(SystemExit):
        parser.parse_args(["--typiclust-max-clusters", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--typiclust-features", "imagenet"])             # pretrained or current only


def test_when_every_cluster_is_tiny_they_are_all_kept():
    """Clusters of at most MIN_CLUSTER_SIZE images are left out, unless every cluster is that small."""
    from fkal.acquisitions.typiclust import MIN_CLUSTER_SIZE
    clusters = np.repeat(np.arange(4), 2)                                 # four clusters of 2
    assert MIN_CLUSTER_SIZE >= 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g)
    picks, scores = select(x, clusters, np.zeros(8, dtype=bool), 4)
    assert sorted(clusters[picks].tolist()) == [0, 1, 2, 3]               # one from each, round robin
    # two candidates: k = 1, each one's typicality is 1 / (its distance to the other + 1e-5), a tie won by the first
    pair_distance = (x[0::2] - x[1::2]).norm(dim=1)[clusters[picks]].double()
    assert picks.tolist() == [2 * c for c in clusters[picks].tolist()]
    np.testing.assert_allclose(scores, (1.0 / (pair_distance + 1e-5)).numpy(), rtol=1e-5)


def test_above_50_clusters_minibatch_kmeans_makes_as_many_as_asked():
    from fkal.acquisitions.typiclust import kmeans_labels
    g = torch.Generator().manual_seed(0)
    centers = torch.arange(60, dtype=torch.float64)[:, None] * 100.0      # 60 far-apart blobs on a line
    feats = (centers.repeat_interleave(3, 0) + torch.rand(180, 1, generator=g, dtype=torch.float64)).numpy()
    labels = kmeans_labels(feats, 60, torch.Generator().manual_seed(1))
    assert len(np.unique(labels)) > 50



@pytest.mark.parametrize("n_clusters", [20, 60])
def test_the_clustering_is_the_authors_algorithm_seeded_from_one_draw_of_the_generator(n_clusters):
    """Up to 50 clusters sklearn's KMeans with 10 initialisations, above MiniBatchKMeans with batches of 5000 and 3
    (the authors' code, run with the defaults of its sklearn), seeded by one draw of the generator. On uniform
    points many local optima exist: here 1 or 11 initialisations of KMeans, 1, 2 or 4 of MiniBatchKMeans give
    other labels."""
    import warnings
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from fkal.acquisitions.typiclust import kmeans_labels
    feats = torch.rand(240, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=torch.Generator().manual_seed(0)))

    def reference(n_init):
        if n_clusters <= 50:
            return KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(feats)
        return MiniBatchKMeans(n_clusters=n_clusters, batch_size=5000, n_init=n_init, random_state=seed).fit_predict(feats)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = kmeans_labels(feats, n_clusters, torch.Generator().manual_seed(0))
        assert got.tolist() == reference(10 if n_clusters <= 50 else 3).tolist()
        assert all(reference(n).tolist() != got.tolist() for n in ([1, 11] if n_clusters <= 50 else [1, 2, 4]))

def test_once_the_kept_clusters_are_used_up_the_tiny_ones_are_picked_from():
    """One cluster of 6 (kept) and two of 2 (tiny, left out): the first 6 picks empty the kept cluster, the next
    ones come from the tiny clusters."""
    clusters = np.array([0] * 6 + [1] * 2 + [2] * 2)
    g = torch.Generator().manual_seed(0)
    picks, _ = select(torch.randn(10, 3, generator=g), clusters, np.zeros(10, dtype=bool), 8)
    assert clusters[picks[:6]].tolist() == [0] * 6 and sorted(clusters[picks[6:]].tolist()) == [1, 2]
    assert len(set(picks.tolist())) == 8
