"""BASE: quotas, the boundary distance as geometry, picks against a brute-force loop, invariance to scaling W and
b, no image twice."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from acquisition_cases import pool_logits_and_features
from fkal.acquisitions.base import (base_select, boundary_distances, class_quotas, logits_from_features,
                                   smallest_untaken, weight_gaps)


def pool(seed: int, n: int = 80, c: int = 4, d: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.relu(torch.randn(n, d, generator=g, dtype=dtype))
    w = torch.randn(c, d, generator=g, dtype=dtype)
    b = 0.3 * torch.randn(c, generator=g, dtype=dtype)
    return h, w, b


def brute_force(h, w, b, budget, labeled=None):
    """BASE by Python loops: r_c from the distance formula per image and class, quotas class by class, each
    class its smallest d_c (ties by index) among the images not taken."""
    n, c = len(h), len(w)
    z = (h @ w.T + b).tolist()
    wl = w.tolist()
    taken = set() if labeled is None else {i for i in range(n) if labeled[i]}
    picks = []
    for k in range(c):
        quota = budget // c + (1 if k < budget % c else 0)
        d = []
        for x in range(n):
            yhat = max(range(c), key=lambda j: (z[x][j], -j))
            def r(j):
                if j == yhat:
                    return float("inf")
                norm = sum((p - q) ** 2 for p, q in zip(wl[yhat], wl[j])) ** 0.5
                return (z[x][yhat] - z[x][j]) / norm if norm > 0 else float("inf")
            d.append(min(r(j) for j in range(c)) if yhat == k else r(k))
        order = sorted((x for x in range(n) if x not in taken), key=lambda x: (d[x], x))[:quota]
        picks += order
        taken |= set(order)
    return picks


def test_quotas():
    """P // C each, +1 for the first P mod C classes."""
    assert class_quotas(7, 3).tolist() == [3, 2, 2]
    assert class_quotas(2, 3).tolist() == [1, 1, 0]
    assert class_quotas(1250, 10).tolist() == [125] * 10


def test_radius_is_the_distance_to_the_boundary():
    """Moving h by r_c along the unit normal (w_c - w_y^) lands exactly on the boundary z_y^ = z_c (a missing
    norm or a sign error would miss it)."""
    h, w, b = pool(0, n=30)
    z = h @ w.T + b
    r = boundary_distances(z, w)
    pred = z.argmax(1)
    for x in range(30):
        for c in range(4):
            if c == int(pred[x]):
                assert r[x, c] == float("inf")
                continue
            normal = (w[c] - w[pred[x]]) / torch.linalg.norm(w[c] - w[pred[x]])
            moved = h[x] + r[x, c] * normal
            zz = moved @ w.T + b
            assert torch.isclose(zz[pred[x]], zz[c], atol=1e-9)
            assert r[x, c] >= 0


@pytest.mark.parametrize("seed", range(5))
def test_picks_match_brute_force(seed):
    h, w, b = pool(seed)
    for budget in (7, 21, 80):
        got, _ = base_select(w, budget, features=h, bias=b)
        assert got.tolist() == brute_force(h, w, b, budget)
    labeled = torch.zeros(80, dtype=torch.bool)
    labeled[::3] = True
    got, _ = base_select(w, 30, logits=h @ w.T + b, labeled=labeled)
    assert got.tolist() == brute_force(h, w, b, 30, labeled.tolist())


def test_scores_are_each_picks_class_distance():
    h, w, b = pool(1)
    idx, d = base_select(w, 12, features=h, bias=b)
    r = boundary_distances(h @ w.T + b, w)
    pred = (h @ w.T + b).argmax(1)
    quotas = class_quotas(12, 4).tolist()
    klass = [k for k in range(4) for _ in range(quotas[k])]
    for i, k, v in zip(idx.tolist(), klass, d.tolist()):
        expect = r[i].min() if int(pred[i]) == k else r[i, k]
        assert v == pytest.approx(float(expect))


def test_invariant_to_scaling_w_and_b():
    """Scaling W and b by 7.3 scales every z_y^ - z_c and every ||w_y^ - w_c|| alike (float32 inputs): the same
    picks at the same distances (a squared norm in the denominator would keep the picks but scale the scores)."""
    h, w, b = pool(2, dtype=torch.float32)
    a, da = base_select(w, 25, features=h, bias=b)
    s, ds = base_select(7.3 * w, 25, features=h, bias=7.3 * b)
    assert torch.equal(a, s)
    assert torch.allclose(da, ds, rtol=1e-3, atol=1e-5)                   # float32 rounding of z_y^ - z_c
    assert a.tolist() == brute_force(h.double(), w.double(), b.double(), 25)


def test_no_image_twice_when_one_image_is_nearest_for_every_class():
    """Image 0 sits on a triple point (all logits equal): d_c = 0 for every class; it is taken once, by class 0."""
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    h = torch.tensor([[0.0, 0.0], [2.0, 0.1], [0.1, 2.0], [-2.0, -2.1], [1.0, 1.1], [3.0, 0.0]], dtype=torch.float64)
    got, d = base_select(w, 6, features=h)
    assert got.tolist()[0] == 0 and d[0] == 0
    assert sorted(got.tolist()) == list(range(6))
    assert got.tolist() == brute_force(h, w, torch.zeros(3, dtype=torch.float64), 6)


def test_equal_rows_of_w_read_as_infinite():
    """Two identical classifier rows: their mutual boundary is nowhere (0/0 -> +inf, as the authors)."""
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    h = torch.rand(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = boundary_distances(h @ w.T, w)
    pred = (h @ w.T).argmax(1)
    for x in range(10):
        if int(pred[x]) in (0, 1):
            assert r[x, 1 - int(pred[x])] == float("inf")
    got, _ = base_select(w, 10, features=h)
    assert sorted(got.tolist()) == list(range(10))


def test_smallest_untaken_ties_and_infinities():
    v = torch.tensor([3.0, 1.0, float("inf"), 1.0, 0.5, float("nan"), 1.0])
    taken = torch.tensor([False, False, False, True, False, False, False])
    assert smallest_untaken(v, taken, 3).tolist() == [4, 1, 6]
    assert smallest_untaken(v, taken, 6).tolist() == [4, 1, 6, 0, 2, 5]


def test_logits_from_features_in_blocks():
    h, w, b = pool(3, n=100)
    assert torch.allclose(logits_from_features(h, w, b, row_block=7), h @ w.T + b)


def test_weight_gaps_in_blocks_are_exact_pairwise_distances():
    """Row blocks of any size give the pairwise distances of W's rows, exactly 0 for two equal rows."""
    w = torch.randn(23, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w[4] = w[17]
    ref = torch.tensor([[float(torch.linalg.norm(w[a] - w[b])) for b in range(23)] for a in range(23)],
                       dtype=torch.float64)
    for block in (1, 7 * 5, 1 << 24):
        g = weight_gaps(w, block_elements=block)
        assert torch.allclose(g, ref, atol=1e-12) and g[4, 17] == 0 and g[17, 4] == 0


def test_contract():
    h, w, b = pool(4, n=60, dtype=torch.float32)
    labeled = torch.zeros(60, dtype=torch.bool)
    labeled[:25] = True
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    got, _ = base_select(w, 35, features=h, bias=b, labeled=labeled)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert sorted(got.tolist()) == list(range(25, 60))
    assert torch.equal(got, base_select(w, 35, features=h, bias=b, labeled=labeled)[0])
    assert len(base_select(w, 0, features=h, bias=b)[0]) == 0
    h64, w64, b64 = pool(4, n=20)                                         # float64 logits: the scores' dtype
    for budget in (0, 3):                                                 # an empty batch has a full one's dtypes
        idx, scores = base_select(w64, budget, features=h64, bias=b64)
        assert (idx.dtype, scores.dtype, len(idx), len(scores)) == (torch.long, torch.float64, budget, budget)
    with pytest.raises(ValueError, match="budget"):
        base_select(w, 36, features=h, bias=b, labeled=labeled)
    with pytest.raises(ValueError, match="logits"):
        base_select(w, 3)


# ------------------------------------------------------------------ wiring (tiny MNIST, LeNet)

def test_query_uses_penultimate_features_and_classifier_layer(query_ctx):
    """base_query = base_select on relu(fc1) of the unlabeled images with fc2's W and b (LeNet's
    ``classifier``); positions map back through ctx.unlabeled; scores are the picks' d_c."""
    from fkal.acquisitions.base import base_query
    ctx = query_ctx("base", budget=13)
    _, feats = pool_logits_and_features(ctx, ctx.unlabeled)
    fc2 = ctx.models[0].fc2
    expect, dist = base_select(fc2.weight.detach(), 13, features=feats, bias=fc2.bias.detach())
    result = base_query(ctx)
    assert result.indices.tolist() == ctx.unlabeled[expect.numpy()].tolist()
    np.testing.assert_allclose(result.scores, dist.numpy(), rtol=1e-5)



def test_smallest_untaken_orders_many_ties_by_index_as_a_full_sort_would():
    """Ascending by (value, index) with thousands of ties (an unstable sort reorders equal values beyond ~100):
    the same list as sorting every untaken row by (value, index) and keeping k."""
    from fkal.acquisitions.base import smallest_untaken
    g = torch.Generator().manual_seed(0)
    v = torch.randint(4, (3000,), generator=g).double()
    taken = torch.rand(3000, generator=g) < 0.3
    k = 1500
    expect = sorted((float(v[i]), i) for i in range(3000) if not taken[i])[:k]
    assert smallest_untaken(v, taken, k).tolist() == [i for _, i in expect]


def test_a_model_without_a_linear_classifier_layer_is_refused_by_its_class():
    from fkal.acquisitions.base import classifier_layer

    class Headless(torch.nn.Module):
        classifier = "head"

        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(1, 1, 1)

    with pytest.raises(ValueError) as e:
        classifier_layer(Headless())
    assert str(e.value) == "Headless names no linear classifier layer (class attribute 'classifier')"

def test_the_smallest_untaken_of_none_is_an_empty_index():
    from fkal.acquisitions.base import smallest_untaken
    got = smallest_untaken(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([False, True, False]), 0)
    assert got.dtype == torch.long and got.shape == (0,)
    assert smallest_untaken(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([False, True, False]), 2).tolist() == [2, 0]
