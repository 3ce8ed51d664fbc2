"""Core-set (k-center greedy on penultimate features): the pure selection on hand-made points, and the query."""
import math

import numpy as np
import torch

from fkal.acquisitions.coreset import coreset_select, coreset_select_shard, nearest_distance, penultimate_features
from fkal.acquisitions.registry import ACQUISITIONS
from simulated_ranks import run_ranks
from test_picks_coreset import kcenter_by_brute_force


def line(*xs) -> torch.Tensor:
    """Points on a line embedded in 2-D: [N, 2]."""
    return torch.tensor([[x, 0.0] for x in xs])


def test_farthest_points_from_the_labeled_set_in_order():
    # labeled at 0; unlabeled at 1, 2, 4, 7, 10, 10.5
    # pick 10.5 (distance 10.5), then 4 (nearest center 0: 4), then 7 (nearest 4 or 10.5: 3)
    picked, radius = coreset_select(line(0.0), line(1, 2, 4, 7, 10, 10.5), 3)
    np.testing.assert_array_equal(picked, [5, 2, 3])
    np.testing.assert_allclose(radius, [10.5, 4.0, 3.0])


def test_labeled_points_are_centers_from_the_start():
    # a labeled point at 10 covers 9.5; distances to it: 10, 9, 6, 0.5
    picked, radius = coreset_select(line(10.0), line(0, 1, 4, 9.5), 2)
    np.testing.assert_array_equal(picked, [0, 2])                   # 0 (distance 10), then 4 (min(4, 6) = 4)
    np.testing.assert_allclose(radius, [10.0, 4.0])


def test_no_labeled_points_starts_from_the_given_first():
    picked, radius = coreset_select(torch.empty(0, 2), line(0, 1, 2, 3, 10), 3, first=1)
    np.testing.assert_array_equal(picked, [1, 4, 3])                 # then 10 (distance 9), then 3 (distance 2)
    assert math.isnan(radius[0])
    np.testing.assert_allclose(radius[1:], [9.0, 2.0])


def test_budget_larger_than_the_pool_takes_everything_once():
    picked, _ = coreset_select(line(0.0), line(1, 2, 3), 10)
    assert sorted(picked.tolist()) == [0, 1, 2]


def test_duplicates_of_labeled_points_come_last():
    picked, radius = coreset_select(line(0.0, 5.0), line(0, 5, 2.5), 3)
    assert picked[0] == 2 and sorted(picked[1:].tolist()) == [0, 1]
    np.testing.assert_allclose(radius, [2.5, 0.0, 0.0])


def test_nearest_distance_in_small_blocks_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    points, centers = torch.randn(37, 5, generator=g), torch.randn(11, 5, generator=g)
    brute = (points[:, None] - centers[None]).norm(dim=2).min(1).values
    for chunk in (1, 7, 50, 10_000):
        torch.testing.assert_close(nearest_distance(points, centers, chunk_elements=chunk), brute)


def test_penultimate_features_are_relu_fc1(query_ctx):
    ctx = query_ctx("coreset")
    model, idx = ctx.models[0], ctx.data.split.pool[:30]
    feats = penultimate_features(model, ctx.data.pool_source, idx, ctx.device, batch_size=8)
    assert feats.shape == (30, 50) and (feats >= 0).all()
    torch.testing.assert_close(feats, model(ctx.data.pool_source.get(idx))[1]["fc1"].relu())


def test_query_is_the_greedy_on_the_features(query_ctx):
    ctx = query_ctx("coreset")
    result = ACQUISITIONS["coreset"](ctx)
    data, model = ctx.data, ctx.models[0]
    feats_l = penultimate_features(model, data.pool_source, data.split.pool[ctx.labeled], ctx.device)
    feats_u = penultimate_features(model, data.pool_source, data.split.pool[ctx.unlabeled], ctx.device)
    picked, radius = coreset_select(feats_l, feats_u, ctx.budget)
    np.testing.assert_array_equal(result.indices, ctx.unlabeled[picked])
    np.testing.assert_allclose(result.scores, radius)
    assert (np.diff(result.scores) <= 1e-6).all()                    # the covering radius never grows


def test_first_iteration_without_labels_is_seeded(query_ctx):
    a = ACQUISITIONS["coreset"](query_ctx("coreset", n_labeled=0, budget=10, seed=1))
    b = ACQUISITIONS["coreset"](query_ctx("coreset", n_labeled=0, budget=10, seed=1))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(np.unique(a.indices)) == 10


def test_budgets_of_zero_and_one():
    picked, radius = coreset_select(line(0.0), line(1, 5, 2), 0)
    assert picked.dtype == np.int64 and picked.shape == (0,) and radius.shape == (0,)
    picked, radius = coreset_select(line(0.0), line(1, 5, 2), 1)
    assert picked.tolist() == [1] and radius.tolist() == [5.0]


def test_no_labeled_points_and_no_first_center_is_a_clear_error():
    import pytest
    with pytest.raises(ValueError, match="^with no labeled points the first center must be given$"):
        coreset_select(torch.empty(0, 2), line(0, 1), 1)


def test_distances_are_exact_far_from_the_origin():
    """30 points 1e-2 to 0.3 away from 30 centers at 1e3 from the origin: the matrix-product shortcut that cdist
    takes by default for more than 25 rows would lose them."""
    centers = torch.full((30, 8), 1e3)
    points = centers.clone()
    points[:, 0] += torch.arange(1, 31) * 1e-2
    exact = (points - centers).norm(dim=1)                                  # 0.01, 0.02, ..., 0.3
    assert not torch.allclose(torch.cdist(points, centers).min(1).values, exact)
    torch.testing.assert_close(nearest_distance(points, centers), exact)


def test_the_progress_bars_name_the_configuration_the_iteration_and_what_they_compute(query_ctx, capsys):
    ctx = query_ctx("coreset", iteration=3)
    ctx.progress = True
    ACQUISITIONS["coreset"](ctx)
    err = capsys.readouterr().err
    assert "coreset b=3: unlabeled features" in err and "coreset b=3: labeled features" in err


# ----------------------------------------------------------------------------------------------------------------
# The pool spread over ranks (threads standing in for torchrun's processes)
# ----------------------------------------------------------------------------------------------------------------
def shard_picks(monkeypatch, labeled: torch.Tensor, pool: torch.Tensor, held: list, budget: int, first=None):
    """Every rank's (picks, radii) when rank r holds the pool rows ``held[r]`` (ascending positions)."""
    def one_rank(r):
        rows = np.asarray(held[r], dtype=np.int64)
        picked, radius = coreset_select_shard(labeled, pool[rows], rows, len(pool), budget, first=first)
        return picked.tolist(), radius.tolist()
    return run_ranks(len(held), one_rank, monkeypatch)


def test_ranks_pick_what_one_process_picks_and_ties_go_to_the_lower_position(monkeypatch):
    """Positions 2 (rank 1) and 4 (rank 0) are equally far from the labeled point: position 2 comes first,
    whichever rank holds it."""
    labeled = torch.tensor([[0.0, 0.0]])
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0], [0.0, 2.0], [-5.0, 0.0], [0.0, -3.0]])
    want = kcenter_by_brute_force(labeled.double().numpy(), pool.double().numpy(), 4)
    assert want[0][:2].tolist() == [2, 4]
    one = coreset_select(labeled, pool, 4)
    assert one[0].tolist() == want[0].tolist() and np.allclose(one[1], want[1])
    for held in ([[0, 3, 4], [1, 2, 5]], [[1, 2, 5], [0, 3, 4]], [[0, 1], [2, 3], [4, 5]], [[], list(range(6))]):
        for picks, radii in shard_picks(monkeypatch, labeled, pool, held, 4):
            assert picks == want[0].tolist() and np.allclose(radii, want[1]), held


def test_ranks_start_from_the_first_center_whichever_rank_holds_it(monkeypatch):
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(9, 3, generator=g) + 10.0                 # far from the origin: a zero center would show
    no_labeled = torch.zeros(0, 3)
    for first in (4, 7):                                          # held by rank 1, rank 2
        want = kcenter_by_brute_force(np.zeros((0, 3)), pool.double().numpy(), 5, first=first)
        for picks, radii in shard_picks(monkeypatch, no_labeled, pool, [[0, 1, 2], [3, 4, 5], [6, 7, 8]], 5,
                                        first=first):
            assert picks == want[0].tolist() and np.allclose(radii, want[1], equal_nan=True), first
