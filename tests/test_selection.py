import numpy as np
import torch

from fkal.selection import kcenter_greedy, kcenter_greedy_distance, merge_by_rank


def naive_kcenter(sim, k, first):
    """Recompute every step: the point whose best similarity to the chosen centers is lowest."""
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(len(sim)) if i not in chosen]
        chosen.append(min(rest, key=lambda i: max(sim[i, c] for c in chosen)))
    return np.array(chosen)


def test_incremental_kcenter_equals_naive():
    for seed in range(5):
        x = torch.randn(40, 6, generator=torch.Generator().manual_seed(seed))
        x = x / x.norm(dim=1, keepdim=True)
        sim = x @ x.T
        got = kcenter_greedy(lambda i: sim[i], 40, 12, first=seed)
        np.testing.assert_array_equal(got, naive_kcenter(sim.numpy(), 12, seed))


def test_kcenter_distance_on_a_line_picks_farthest_first():
    pts = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 4.0])
    dist = lambda i: (pts - pts[i]).abs()
    # labeled set = {0.0}: farthest is 10, then midpoints 4? no: distances to {0,10}: 1,2,3,4 -> 4 (idx 5)
    initial = dist(0)
    got = kcenter_greedy_distance(dist, len(pts), 3, initial=initial)
    assert got.tolist() == [4, 5, 2]


def test_merge_by_rank_gives_distinct_items_rank_major():
    ranked = torch.tensor([[7, 3, 1], [7, 5, 2], [4, 3, 9]])
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.95, 0.6, 0.2], [0.8, 0.7, 0.3]])
    # rank 0: centers by score 1 (7), 0 (7 dup), 2 (4); rank 1: 2 (3), 1 (5), 0 (3 dup); rank 2: ...
    assert merge_by_rank(ranked, scores, 4).tolist() == [7, 4, 3, 5]
    assert merge_by_rank(ranked, scores, 100).tolist() == [7, 4, 3, 5, 9, 2, 1]


def test_kcenter_distance_without_initial_starts_from_point_zero():
    pts = torch.tensor([5.0, 0.0, 1.0, 9.0, 4.0])
    dist = lambda i: (pts - pts[i]).abs()
    # first center: point 0 (5.0); farthest from it 0.0 (5); then 9.0 (4 from 5.0); then 1.0 or 4.0 (1 each)
    got = kcenter_greedy_distance(dist, len(pts), 4)
    assert got.tolist()[:3] == [0, 1, 3] and got[3] in (2, 4)
    assert kcenter_greedy_distance(dist, len(pts), 1).tolist() == [0]
    assert sorted(kcenter_greedy_distance(dist, len(pts), 9).tolist()) == [0, 1, 2, 3, 4]   # k capped at n


def test_kcenter_starts_at_point_zero_and_never_repeats_a_center():
    """A similarity under which a point is not its own most similar point (diagonal -10): the first center
    must still never be chosen again."""
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(12, 12, generator=g)
    sim = (sim + sim.T) / 2                                                  # symmetric, as every kernel
    sim.fill_diagonal_(-10.0)
    got = kcenter_greedy(lambda i: sim[i], 12, 6)
    assert got[0] == 0 and len(set(got.tolist())) == 6
    np.testing.assert_array_equal(got, naive_kcenter(sim.numpy(), 6, 0))


def test_merge_by_rank_breaks_ties_by_center_index():
    """Equal similarities within a rank (200 centers, two distinct scores: the same validation image matched
    twice, a kernel at its ceiling): the lower center index comes first, so the picks do not depend on the sort
    algorithm (an unstable sort reorders ties from 64 rows on, on the CPU). Brute force: Python's sort by
    (rank, -score, center)."""
    P, K = 200, 2
    ranked = torch.arange(P * K).reshape(P, K)                                # every item distinct
    scores = torch.stack([(torch.arange(P) % 2).float(), torch.zeros(P)], 1)  # [P, K] with many ties
    order = sorted(((k, -float(scores[p, k]), p) for p in range(P) for k in range(K)))
    expect = [int(ranked[p, k]) for k, _, p in order]
    assert merge_by_rank(ranked, scores, 150).tolist() == expect[:150]
    assert merge_by_rank(ranked, scores, P * K).tolist() == expect
