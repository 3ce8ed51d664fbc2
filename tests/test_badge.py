"""BADGE: the factorised gradient distance against explicit embeddings, the picks against a brute-force k-means++
on the full embeddings with the same generator, the first center, duplicates, pruning and the D^2 law."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from acquisition_cases import pool_logits_and_features
from fkal.acquisitions import badge
from fkal.acquisitions.badge import (GradientEmbeddings, _BlockSampler, badge_select, gradient_distances_sq,
                                    gradient_norms_sq)


def pool(seed: int, n: int = 60, c: int = 4, d: int = 5, clusters: bool = False):
    g = torch.Generator().manual_seed(seed)
    if clusters:
        centers = 4.0 * torch.randn(c, d, generator=g, dtype=torch.float64)
        y = torch.randint(c, (n,), generator=g)
        h = torch.relu(centers[y] + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64))
    else:
        h = torch.relu(torch.randn(n, d, generator=g, dtype=torch.float64))
    logits = 1.5 * torch.randn(n, c, generator=g, dtype=torch.float64)
    return torch.softmax(logits, 1), h


def embeddings(probs, h):
    """Explicit g_x = (p(x) - e_y^(x)) (outer) h(x), flattened: [N, C * d]."""
    a = probs.clone()
    a[torch.arange(len(a)), probs.argmax(1)] -= 1.0
    return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def brute_force(probs, h, budget, generator, labeled=None):
    """k-means++ on the explicit embeddings: first center the largest norm; then, per pick, one float64 uniform u
    and the first index whose cumulative D^2 (over candidates) exceeds u * total; all-zero: uniform by u."""
    g = embeddings(probs, h)
    n = len(g)
    cand = torch.ones(n, dtype=torch.bool) if labeled is None else ~labeled
    norms = (g * g).sum(1)
    first = int(torch.argmax(torch.where(cand, norms, torch.full_like(norms, -1.0))))
    picks = [first]
    cand[first] = False
    for _ in range(1, budget):
        cents = g[picks]
        d2 = ((g[:, None, :] - cents[None, :, :]) ** 2).sum(2).min(1).values
        w = torch.where(cand, d2, torch.zeros_like(d2))
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        total = float(w.sum())
        if total > 0:
            c = int(torch.nonzero(torch.cumsum(w, 0) > u * total)[0, 0])
        else:
            free = torch.nonzero(cand).flatten()
            c = int(free[min(int(u * len(free)), len(free) - 1)])
        picks.append(c)
        cand[c] = False
    return picks


def test_factorised_distance_equals_explicit():
    probs, h = pool(0, n=40, c=5, d=7)
    g = embeddings(probs, h)
    assert torch.allclose(gradient_norms_sq(probs, h), (g * g).sum(1), rtol=1e-12, atol=1e-12)
    for center in (0, 7, 39):
        explicit = ((g - g[center]) ** 2).sum(1)
        assert torch.allclose(gradient_distances_sq(probs, h, center), explicit, rtol=1e-10, atol=1e-12)
        rows = torch.tensor([3, 9, 21])
        assert torch.allclose(gradient_distances_sq(probs, h, center, rows=rows), explicit[rows], atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("clusters", [False, True])
def test_picks_equal_brute_force_kmeanspp(seed, clusters):
    """Same generator, same picks, pruned and unpruned (a wrong bound, a stale nearest-center index or a
    sampling off-by-one changes the sequence)."""
    probs, h = pool(seed, n=70, clusters=clusters)
    ref = brute_force(probs, h, 25, torch.Generator().manual_seed(seed))
    for prune in (True, False):
        got, d2 = badge_select(probs, h, 25, torch.Generator().manual_seed(seed), prune=prune)
        assert got.tolist() == ref
    labeled = torch.zeros(70, dtype=torch.bool)
    labeled[::4] = True
    got, _ = badge_select(probs, h, 20, torch.Generator().manual_seed(seed), labeled=labeled)
    assert got.tolist() == brute_force(probs, h, 20, torch.Generator().manual_seed(seed), labeled.clone())


@pytest.mark.parametrize("exact_a_classes,top_m", [(64, 4), (0, 1), (0, 2), (0, 6)])
@pytest.mark.parametrize("signed", [False, True])
def test_pruning_bound_never_exceeds_the_distance(monkeypatch, exact_a_classes, top_m, signed):
    """The lower bound used to skip points, in each of its forms (exact <a_x, a_c>; top-M upper bound; features of
    either sign), is below the true squared distance for every pair (a bound above it would drop a point that a
    new center moves), and the picks still equal the brute force."""
    monkeypatch.setattr(badge, "EXACT_A_CLASSES", exact_a_classes)
    monkeypatch.setattr(badge, "TOP_M", top_m)
    probs, h = pool(13, n=50, c=6, d=5, clusters=True)
    if signed:
        h = h - 1.0
    emb = GradientEmbeddings(probs, h)
    assert emb.exact_a == (6 <= exact_a_classes) and emb.nonneg == (not signed)
    g = embeddings(probs, h)
    for center in range(0, 50, 7):
        exact = ((g - g[center]) ** 2).sum(1)
        assert bool((emb.lower_bounds_sq(center) <= exact + 1e-9).all())
        assert torch.allclose(emb.distances_sq(center), exact, atol=1e-10)
    got, _ = badge_select(probs, h, 30, torch.Generator().manual_seed(1))
    assert got.tolist() == brute_force(probs, h, 30, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("features", ["relu", "signed", "tiny", "huge", "midpoints", "worst"])
def test_float16_bound_is_below_the_distance_and_within_1e_2_of_it(dtype, features):
    """The second bound (float16 copy of the features, a-priori rounding error) never exceeds the true squared
    distance (it would drop a point that the new center moves), and stays within 1e-2 ||g_x|| ||g_c|| of it
    (Cauchy-Schwarz alone is off by up to 2 ||g_x|| ||g_c||: a slack built from the norms instead of the
    rounding errors would pass the first check and fail this one). Tiny and huge features check the power-of-two
    scaling into float16's range (unscaled, 1e-6 underflows and 1e5 overflows); "midpoints" has every entry
    halfway between two float16 numbers (1 + 2^-11 times a power of two), where rounding errs the most, so an
    error bound smaller than 2^-11 of each entry fails; "worst" adds d = 2049, so that the float16 product
    <q_x, q_c> = 2049 2^k is itself a tie rounded down: both roundings at their worst at once, so that dropping
    the product's rounding term, or halving the entries' error bound, puts the bound above the distance."""
    probs, h = pool(21, n=80, c=5, d=300, clusters=True)
    powers = 2.0 ** torch.randint(-3, 4, (80, 1), generator=torch.Generator().manual_seed(0)).double()
    h = {"relu": h, "signed": h - 1.0, "tiny": h * 1e-6, "huge": h * 1e5,
         "midpoints": (1 + 2.0 ** -11) * powers.expand(80, 300),
         "worst": (1 + 2.0 ** -11) * powers.expand(80, 2049)}[features]
    probs, h = probs.to(dtype), h.to(dtype)
    emb = GradientEmbeddings(probs, h)
    assert emb.sketch is not None and emb.sketch.dtype == torch.float16
    assert bool(torch.isfinite(emb.sketch).all())
    g = embeddings(probs.double(), h.double())
    norms = g.norm(dim=1)
    rounding = 1e-9 if dtype == torch.float64 else 1e-6                   # the bound's own arithmetic
    for center in range(0, 80, 9):
        # the distance the selection compares with: <a_x, a_c> at the inputs' precision, as in the bound (in
        # float32 its rounding moves near-orthogonal pairs by more than 1e-5 of ||g_x||^2 + ||g_c||^2)
        exact = emb.distances_sq(center)
        scale = (g * g).sum(1) + float((g[center] ** 2).sum())
        if dtype == torch.float64:
            assert bool(((exact - ((g - g[center]) ** 2).sum(1)).abs() <= 1e-10 * scale).all())
        rows = torch.arange(80)
        lower = emb.sketch_lower_bounds_sq(center, rows, emb.inner_a(center)).double()
        assert bool((lower <= exact + rounding * scale).all())
        assert bool((exact - lower <= 1e-2 * norms * norms[center] + rounding * scale).all())



@pytest.mark.parametrize("e", [6, -6])
def test_float16_bound_holds_at_the_bottom_of_float16s_range(e):
    """Below 2^-14 float16 has subnormals, spaced 2^-24 apart: rounding there errs by up to 2^-25 however small the
    number, not by 2^-11 of it. Row 0 (0.75 each, d = 4) sets the scale 2^6; row 1's scaled entries sit halfway
    between subnormals (1.5 2^-24, rounded up to 2^-23), so <q_1, q_0> errs by 4 2^-25 48, which only the
    sqrt(d) 2^-25 / 2^s term of eps covers; rows 2 and 3 have one entry m 2^-12 (m^2 = 1.4997), a product
    m^2 2^-24 that is itself a subnormal and rounds down by 0.4997 2^-24, which only the 2^-24 / 2^2s floor covers.
    The signs of <a_x, a_c> (rows 0 / 1 predicted differently, 2 / 3 alike) put each error on the side that lifts
    the bound."""
    s = 2.0 ** e
    m = 1254 / 1024                                                       # a float16 number, m^2 = 1.49967
    h = torch.zeros(4, 4, dtype=torch.float64)
    h[0] = 0.75 * 2.0 ** (6 - e)                                         # scaled: 48 each
    h[1] = 1.5 * 2.0 ** -24 / s
    h[2, 0] = h[3, 0] = m * 2.0 ** -12 / s
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.7, 0.3]], dtype=torch.float64)
    emb = GradientEmbeddings(probs, h)
    assert emb.sketch_scale == s
    assert emb.sketch[1].tolist() == [2.0 ** -23] * 4                      # halfway, rounded to even (up)
    assert float(emb.sketch[1] @ emb.sketch[0]) > 4 * 1.5 * 2.0 ** -24 * 48  # the product errs upwards
    assert float(emb.sketch[2] @ emb.sketch[3]) == 2.0 ** -24               # and this one down, to 1 2^-24
    assert float(emb.inner_a(0)[1]) < 0 < float(emb.inner_a(3)[2])
    g = embeddings(probs, h)
    for center, x in [(0, 1), (3, 2), (2, 2)]:
        exact = float(((g[x] - g[center]) ** 2).sum())
        scale = float((g[x] ** 2).sum() + (g[center] ** 2).sum())
        lower = float(emb.sketch_lower_bounds_sq(center, torch.tensor([x]), emb.inner_a(center)[[x]])[0])
        assert lower <= exact + 1e-12 * scale, (center, x)


def test_the_float16_copys_error_bound_covers_every_row():
    """||h_x - q_x 2^-s|| <= eps_x, row by row, where rounding errs the most: float64 entries a hair above halfway
    between two float16 numbers ((1 + 2^-11 + 2^-30) 2^k: torch rounds float64 to float32 first, which lands on
    the midpoint, and the tie then goes down; still under 2^-11 of the entry, which sits above 2^k), exact
    midpoints, and midpoints between subnormals (2^-25 each, however small the entry)."""
    d = 64
    k = torch.arange(-4, 4, dtype=torch.float64).repeat(8)[:d]
    h = torch.stack([(1 + 2.0 ** -11 + 2.0 ** -30) * 2.0 ** k, (1 + 2.0 ** -11) * 2.0 ** k,
                     torch.full((d,), 1.5 * 2.0 ** -24 / 2.0 ** 2)])           # the scale is 2^2 here
    probs = torch.full((3, 2), 0.5, dtype=torch.float64)
    emb = GradientEmbeddings(probs, h)
    assert emb.sketch_scale == 4.0
    assert torch.equal(emb.sketch[0].double(), 2.0 ** k * 4.0)               # rounded down, through float32
    err = (h - emb.sketch.double() / emb.sketch_scale).norm(dim=1)
    assert bool((err <= emb.sketch_eps_w).all()), (err, emb.sketch_eps_w)

def test_float16_bound_leaves_the_picks_unchanged_and_is_kept_only_for_few_classes(monkeypatch):
    """Picks with the float16 bound equal those without it and the brute force on a float32 pool of signed
    features; with more classes than EXACT_A_CLASSES no float16 copy is kept (its memory)."""
    probs, h = pool(17, n=400, c=6, d=40, clusters=True)
    probs, h = probs.float(), (h - 0.5).float()
    a, _ = badge_select(probs, h, 60, torch.Generator().manual_seed(5))
    b, _ = badge_select(probs, h, 60, torch.Generator().manual_seed(5), sketch=False)
    assert torch.equal(a, b)
    assert a.tolist() == brute_force(probs.double(), h.double(), 60, torch.Generator().manual_seed(5))
    monkeypatch.setattr(badge, "EXACT_A_CLASSES", 5)
    assert GradientEmbeddings(probs, h).sketch is None


def test_first_center_is_largest_gradient_norm_and_scores_are_d2():
    probs, h = pool(7, n=50)
    g = embeddings(probs, h)
    idx, d2 = badge_select(probs, h, 6, torch.Generator().manual_seed(0))
    assert int(idx[0]) == int(torch.argmax((g * g).sum(1)))
    assert torch.isnan(d2[0])
    for t in range(1, 6):
        expect = ((g[idx[t]] - g[idx[:t]]) ** 2).sum(1).min()
        assert float(d2[t]) == pytest.approx(float(expect), rel=1e-9, abs=1e-12)


def test_duplicates_and_zero_gradients_never_picked_twice():
    """Three copies of each of 4 points plus 6 confident points (one-hot p: zero gradient, all at the origin):
    once every distinct point is a center all D^2 are 0 and picks go uniform over what is left; every image
    once, budget = N."""
    probs, h = pool(3, n=4, c=3, d=4)
    probs = torch.cat([probs.repeat(3, 1), torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0, 1, 2]]])
    h = torch.cat([h.repeat(3, 1), torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)])
    n = len(probs)
    got, _ = badge_select(probs, h, n, torch.Generator().manual_seed(0))
    assert sorted(got.tolist()) == list(range(n))
    assert got.tolist() == brute_force(probs, h, n, torch.Generator().manual_seed(0))


def test_second_pick_follows_d2_law():
    """Three points on a line in gradient space at squared distances 0, 1 and 4 from the first center: the second
    pick is point 1 with probability 1/5 and point 2 with 4/5 (800 draws, 4 sigma)."""
    probs = torch.tensor([[0.5, 0.5]] * 3, dtype=torch.float64)        # a = (0.5, -0.5) for every point
    h = torch.tensor([[3.0], [3.0 - 2 ** 0.5], [3.0 - 2 * 2 ** 0.5]], dtype=torch.float64)   # ||a|| = 1/sqrt2
    g = embeddings(probs, h)
    assert torch.allclose(((g - g[0]) ** 2).sum(1), torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    second = [int(badge_select(probs, h, 2, gen)[0][1]) for _ in range(800)]
    share = second.count(2) / 800
    assert abs(share - 0.8) < 4 * (0.8 * 0.2 / 800) ** 0.5             # D, not D^2: 2/3
    assert set(second) == {1, 2}


def test_float32_pool_with_pruning_matches_unpruned():
    """At float32 the pruning margins must not drop a point whose distance would change: the D^2 of every pick
    and the picks agree with the unpruned run on a clustered pool."""
    probs, h = pool(11, n=600, c=6, d=16, clusters=True)
    probs, h = probs.float(), h.float()
    a, da = badge_select(probs, h, 80, torch.Generator().manual_seed(2), prune=True)
    b, db = badge_select(probs, h, 80, torch.Generator().manual_seed(2), prune=False)
    assert torch.equal(a, b)
    assert torch.allclose(da[1:], db[1:], rtol=1e-5)


def test_contract():
    probs, h = pool(5, n=50)
    labeled = torch.zeros(50, dtype=torch.bool)
    labeled[10:30] = True
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    a, _ = badge_select(probs, h, 30, torch.Generator().manual_seed(4), labeled=labeled)
    b, _ = badge_select(probs, h, 30, torch.Generator().manual_seed(4), labeled=labeled)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert torch.equal(a, b)
    assert sorted(a.tolist()) == list(range(10)) + list(range(30, 50))
    empty, empty_d2 = badge_select(probs, h, 0, torch.Generator())
    assert (empty.dtype, empty_d2.dtype, len(empty), len(empty_d2)) == (torch.long, torch.float64, 0, 0)
    with pytest.raises(ValueError, match="budget"):
        badge_select(probs, h, 31, torch.Generator(), labeled=labeled)


# ------------------------------------------------------------------ wiring (tiny MNIST, LeNet)

def test_query_uses_softmax_and_penultimate_features_of_the_unlabeled(query_ctx):
    """badge_query = badge_select on the softmax and relu(fc1) of the unlabeled images, the context's generator;
    positions map back through ctx.unlabeled."""
    from fkal.acquisitions.badge import badge_query
    ctx = query_ctx("badge", budget=11)
    logits, feats = pool_logits_and_features(ctx, ctx.unlabeled)
    expect, _ = badge_select(torch.softmax(logits, 1), feats, 11, torch.Generator().manual_seed(0))
    assert badge_query(ctx).indices.tolist() == ctx.unlabeled[expect.numpy()].tolist()


class _Rows:
    """A matrix that records the row ranges read from it (``m[a:b]``)."""

    def __init__(self, t: torch.Tensor, seen: list):
        self.t, self.seen = t, seen

    def __len__(self):
        return len(self.t)

    def __getitem__(self, key):
        self.seen.append((key.start, key.stop))
        return self.t[key]


def test_norms_read_each_row_once_in_blocks_and_equal_the_explicit_ones():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(10, 3, generator=g), 1)
    feats = torch.randn(10, 5, generator=g)
    seen_p, seen_f = [], []
    got = gradient_norms_sq(_Rows(probs, seen_p), _Rows(feats, seen_f), row_block=4)
    assert seen_p == seen_f == [(0, 4), (4, 8), (8, 12)]
    a = -probs.double()
    a[torch.arange(10), probs.argmax(1)] += 1.0                               # e_y^ - p
    torch.testing.assert_close(got, (a ** 2).sum(1) * (feats.double() ** 2).sum(1))


def test_probs_and_features_of_different_lengths_are_refused_by_name():
    with pytest.raises(ValueError) as e:
        GradientEmbeddings(torch.full((4, 3), 1 / 3), torch.ones(5, 2))
    assert str(e.value) == "probs has 4 rows, features 5"


@pytest.mark.parametrize("kind", ["contiguous", "transposed", "bfloat16"])
def test_take_rows_is_indexing_whatever_the_matrix(kind):
    from fkal.acquisitions.badge import take_rows
    mat = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    mat = {"contiguous": mat, "transposed": mat.T.contiguous().T, "bfloat16": mat.to(torch.bfloat16)}[kind]
    rows = torch.tensor([4, 0, 4, 2])
    assert torch.equal(take_rows(mat, rows), mat[rows])



def test_a_draw_is_the_first_index_whose_cumulative_weight_exceeds_u_times_the_total():
    """Inverse CDF in float64 against NumPy's cumulative sums, at u just below and just above every boundary
    (a float32 step anywhere moves x = u * total by ~1e-8 and picks across a boundary), within and across
    blocks."""
    w = torch.tensor([0.5, 0.25, 0.0, 0.125, 1.0, 0.0, 0.0, 0.625, 0.5], dtype=torch.float64)
    sampler = _BlockSampler(w, block=4)
    cum = np.cumsum(w.numpy())
    total = float(cum[-1])
    for bound in cum[w.numpy() > 0].tolist():                               # Python floats, as badge_select's u
        for u in (bound / total - 1e-12, bound / total + 1e-12):
            if 0 <= u < 1:
                assert sampler.draw(u) == int(np.searchsorted(cum, u * total, side="right")), u
    assert _BlockSampler(torch.zeros(5, dtype=torch.float64), block=4).draw(0.3) is None


def test_a_draw_that_rounding_puts_past_its_block_takes_the_blocks_last_positive_weight():
    """Block sums are kept up to date by differences, so they drift from the weights by rounding: with block 0
    = (0.1, 0.1, 0.1, 0.1) and its first and last weights set to 0 its sum is 0.20000000000000004, above the
    weights' 0.2. A u just below that sum's share of the total lands in block 0 past all its weights, and the
    draw is its last positive weight, 2 (not 3, whose weight is 0: an image already picked)."""
    w = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.25, 0.5, 0.25, 0.5], dtype=torch.float64)
    sampler = _BlockSampler(w, block=4)
    sampler.set(torch.tensor([0, 3]), torch.zeros(2, dtype=torch.float64))
    assert float(sampler.sums[0]) > float(sampler.w[:4].sum())             # the drift
    u = math.nextafter(float(sampler.sums[0]) / float(sampler.sums.sum()), 0.0)
    assert u * float(sampler.sums.sum()) >= float(torch.cumsum(sampler.w[:4], 0)[-1])   # x: the whole block, or more
    assert sampler.draw(u) == 2


def test_a_draw_that_rounding_puts_past_the_last_cumulative_sum_takes_the_last_positive_weight():
    """The total is summed in another order than the cumulative sums, so u * total can reach the last cumulative
    sum: the draw then lands in the last block, here empty (its images already picked), and walks back to the
    last positive weight, image 791, instead of off the end. The first of 20 seeded pools where rounding does
    this is used (seed 0 on x86-64)."""
    u = math.nextafter(1.0, 0.0)
    for seed in range(20):
        w = torch.rand(800, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        w[792:] = 0.0                                                      # the last two blocks of 4: empty
        sampler = _BlockSampler(w, block=4)
        if u * float(sampler.sums.sum()) >= float(torch.cumsum(sampler.sums, 0)[-1]):
            break
    else:
        pytest.fail("no pool made u * total reach the last cumulative sum")
    assert sampler.draw(u) == 791



def test_features_all_zero_keep_no_float16_copy_and_pick_uniformly():
    """All features 0 (every gradient 0): no scale can bring them into float16's range, so no copy is kept, and
    the picks are the brute force's (the largest norm, a tie, then uniform draws)."""
    probs, _ = pool(6, n=20)
    h = torch.zeros(20, 5, dtype=torch.float64)
    assert GradientEmbeddings(probs, h).sketch is None
    got, _ = badge_select(probs, h, 6, torch.Generator().manual_seed(2))
    assert got.tolist() == brute_force(probs, h, 6, torch.Generator().manual_seed(2))


@pytest.mark.parametrize("where", ["features", "probs"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_outputs_are_refused_by_name(where, bad):
    probs, h = pool(7, n=20)
    (h if where == "features" else probs)[3, 1] = bad
    with pytest.raises(ValueError) as e:
        badge_select(probs, h, 5, torch.Generator().manual_seed(0))
    assert str(e.value) == ("probs or features hold NaN or inf (a model that diverged?): no gradient embedding can "
                            "be measured")



def test_block_sums_left_with_a_rounding_residue_count_as_empty():
    """0.1 and 0.2 set to 0 one after the other leave their block's sum at 2.8e-17, not 0 (sums are kept by
    differences). With no weight left anywhere the draw is None (the caller's uniform fallback), and with weight
    left elsewhere a draw that lands in the residue block goes to a positive weight; the residue is then 0."""
    for rest, expect in ((0.0, None), (0.5, 3)):
        sampler = _BlockSampler(torch.tensor([0.1, 0.2, 0.0, rest], dtype=torch.float64), block=2)
        for row in (0, 1):
            sampler.set(torch.tensor([row]), torch.zeros(1, dtype=torch.float64))
        assert float(sampler.sums[0]) > 0.0                                # the residue
        assert sampler.draw(0.0) == expect
        assert float(sampler.sums[0]) == 0.0




def test_the_default_prunes_with_the_bounds(monkeypatch):
    """badge_select prunes by default (prune=False is the slow reference): the lower bound is computed once per
    center after the first, budget - 2 times."""
    probs, h = pool(8, n=40)
    calls = []
    real = GradientEmbeddings.lower_bounds_sq

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(GradientEmbeddings, "lower_bounds_sq", counting)
    badge_select(probs, h, 7, torch.Generator().manual_seed(0))
    assert len(calls) == 5
