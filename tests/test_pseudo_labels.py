"""Each pseudo-label estimator on a case with a known answer."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fkal.kernels import Features, standardize
from fkal.pseudo_labels import MonteCarlo, NearestValidation, build_estimator, perturb, yhat


class Linear2(torch.nn.Module):
    """A two-layer linear model with one tap 'a' ([B, 4]) and 3 classes."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(5, 4, generator=g))
        self.V = torch.nn.Parameter(torch.randn(4, 3, generator=g))

    def forward(self, x):
        a = x.flatten(1) @ self.W
        return a @ self.V, {"a": a}


def test_yhat_is_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert yhat(None, None, logits, None, None)[0].tolist() == [1, 0]


def test_phat_returns_the_label_of_the_nearest_validation_image():
    g = torch.Generator().manual_seed(0)
    val_z = [torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)]
    val_labels = torch.tensor([4, 1, 2, 0, 3, 1])
    est = NearestValidation(Features(val_z).standardized(), val_labels, num_classes=5, chunk=4)
    # pool images: noisy copies of validation images 2, 4 and 0, scaled and shifted (Pearson ignores both)
    picks = [2, 4, 0]
    z = [3.0 * v[picks] + 1.0 + 0.01 * torch.randn(3, v.shape[1], generator=g) for v in val_z]
    labels, g_out = est(None, None, torch.zeros(3, 5), None, z)
    assert labels.tolist() == val_labels[picks].tolist() and g_out is None


def test_phat_g_equals_brute_force_over_classes():
    torch.manual_seed(0)
    model = Linear2()
    xv, xu = torch.randn(9, 5), torch.randn(4, 5)
    yv = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    lv, tv = model(xv)
    gv = torch.autograd.grad(F.cross_entropy(lv, yv, reduction="sum"), tv["a"])[0]
    val = Features([tv["a"].detach()], [gv]).standardized()
    est = NearestValidation(val, yv, num_classes=3, fisher=True)
    lu, tu = model(xu)
    labels, g = est(model, xu, lu, [tu["a"]], [tu["a"].detach()])
    expected, expected_g = [], []
    for i in range(4):
        best = []
        for d in range(3):
            li, ti = model(xu[i:i + 1])
            gi = torch.autograd.grad(F.cross_entropy(li, torch.tensor([d])), ti["a"])[0]
            rz = standardize(val.z[0][yv == d]) @ standardize(ti["a"].detach())[0]
            rg = val.g[0][yv == d] @ standardize(gi)[0]
            best.append(float((rz * rg).max()))
        expected.append(int(np.argmax(best)))
        li, ti = model(xu[i:i + 1])
        expected_g.append(torch.autograd.grad(F.cross_entropy(li, torch.tensor([expected[-1]])), ti["a"])[0])
    assert labels.tolist() == expected
    torch.testing.assert_close(g[0], torch.cat(expected_g), rtol=1e-5, atol=1e-6)


def _mc_samples():
    z = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(5, 1, 1)              # [K, B, L]
    g0 = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0])                            # rho = 0.8 with z
    g1 = torch.tensor([5.0, 4.0, 3.0, 1.0, 2.0])                            # rho = -0.9
    g2 = torch.tensor([2.0, 1.0, 2.0, 1.0, 2.0])                            # rho = 0
    return z, torch.stack([g0, g1, g2]).view(3, 5, 1, 1), [g0, g1, g2]


def test_trC_is_the_cross_covariance_trace():
    z, gk, gs = _mc_samples()
    est = MonteCarlo("trC", ("a",), 5, torch.Generator())
    got = est.score(z, gk)[:, 0]
    expected = [np.cov(z.flatten().numpy(), g.numpy())[0, 1] for g in gs]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert int(got.argmax()) == 0


def test_mutual_information_diag_and_full_agree_in_one_dimension():
    z, gk, gs = _mc_samples()
    rho = [np.corrcoef(z.flatten().numpy(), g.numpy())[0, 1] for g in gs]
    expected = [-0.5 * np.log(1 - r ** 2) for r in rho]
    diag = MonteCarlo("mi-diag", ("a",), 5, torch.Generator()).score(z, gk)[:, 0]
    full = MonteCarlo("mi", ("a",), 5, torch.Generator(), ridge=1e-6).score(z, gk)[:, 0]
    np.testing.assert_allclose(diag.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(full.numpy(), expected, rtol=1e-3, atol=1e-5)
    assert int(full.argmax()) == 1                                          # |rho| largest: mutual information


def test_mutual_information_full_sees_what_the_diagonal_misses():
    """Two dimensions where g's first component follows z's second: only the full covariance sees it."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 1, 2, generator=gen)
    cross = torch.stack([z[..., 1], torch.randn(64, 1, generator=gen)], -1)    # g_0 = z_1
    indep = torch.randn(64, 1, 2, generator=gen)
    gk = torch.stack([indep, cross])                                        # [D=2, K, B, L]
    full = MonteCarlo("mi", ("a",), 64, gen).score(z, gk)[:, 0]
    diag = MonteCarlo("mi-diag", ("a",), 64, gen).score(z, gk)[:, 0]
    assert full[1] > 1.0 > full[0]
    assert diag[1] < 0.2


def test_mc_estimator_runs_on_a_model_and_perturbs():
    from fkal.models import lenet
    torch.manual_seed(0)
    model = lenet().eval()
    x = torch.randn(3, 1, 28, 28)
    xs = perturb(x, 4, torch.Generator().manual_seed(0))
    assert xs.shape == (12, 1, 28, 28) and not torch.allclose(xs[:3], x)
    logits, taps = model(x)
    for metric in ("trC", "mi", "mi-diag"):
        est = build_estimator(metric, None, None, 10, ("conv2",), 4, torch.Generator().manual_seed(0))
        labels, g = est(model, x, logits, [taps["conv2"]], [taps["conv2"].mean((2, 3))])
        assert labels.shape == (3,) and labels.max() < 10 and g is None


def test_unknown_estimator():
    with pytest.raises(ValueError, match="choose one of"):
        build_estimator("zz", None, None, 10, (), 1, torch.Generator())


def test_perturb_by_its_definition():
    """Copy-major K copies, each rotated by an angle uniform in +-5 degrees drawn from the generator first, then
    Gaussian noise of std 0.05 drawn from it next."""
    from kornia.geometry.transform import rotate
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = perturb(x, 4, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    angles = torch.rand(12, generator=g) * 10 - 5
    expected = rotate(torch.cat([x] * 4), angles) + 0.05 * torch.randn(12, 1, 8, 8, generator=g)
    torch.testing.assert_close(got, expected)
    assert angles.abs().max() <= 5 and angles.abs().max() > 3
    noise_only = perturb(torch.zeros(50, 1, 8, 8), 2, torch.Generator().manual_seed(3))   # rotating 0 gives 0
    assert abs(noise_only.std().item() - 0.05) < 0.005 and abs(noise_only.mean().item()) < 0.005


def test_phat_g_with_a_class_absent_and_a_class_of_one_in_the_validation_set():
    """Class 0 has no validation image (never chosen), class 1 exactly one; classes after the absent one still
    compete."""
    torch.manual_seed(0)
    model = Linear2()
    xv, xu = torch.randn(5, 5), torch.randn(6, 5)
    yv = torch.tensor([1, 2, 2, 2, 2])
    lv, tv = model(xv)
    gv = torch.autograd.grad(F.cross_entropy(lv, yv, reduction="sum"), tv["a"])[0]
    val = Features([tv["a"].detach()], [gv]).standardized()
    lu, tu = model(xu)
    labels, _ = NearestValidation(val, yv, num_classes=3, fisher=True)(model, xu, lu, [tu["a"]], [tu["a"].detach()])
    expected = []
    for i in range(6):
        best = []
        for d in (1, 2):
            li, ti = model(xu[i:i + 1])
            gi = torch.autograd.grad(F.cross_entropy(li, torch.tensor([d])), ti["a"])[0]
            rz = val.z[0][yv == d] @ standardize(ti["a"].detach())[0]
            rg = val.g[0][yv == d] @ standardize(gi)[0]
            best.append(float((rz * rg).max()))
        expected.append(1 + int(np.argmax(best)))
    assert labels.tolist() == expected and 1 in expected and 2 in expected


def test_phat_ties_go_to_the_first_validation_image_across_chunks():
    """Two identical validation images with different labels in different chunks: the first one's label."""
    base = torch.randn(1, 6, generator=torch.Generator().manual_seed(4))
    other = torch.randn(3, 6, generator=torch.Generator().manual_seed(5))
    val_z = torch.cat([other[:1], base, other[1:], base])                   # image 1 and image 4 are equal
    est = NearestValidation(Features([val_z]).standardized(), torch.tensor([0, 1, 0, 0, 2]), 3, chunk=2)
    labels, _ = est(None, None, torch.zeros(1, 3), None, [2.0 * base + 1.0])
    assert labels.tolist() == [1]


def test_mutual_information_diag_of_perfectly_correlated_samples_is_finite():
    """rho = 1 is clipped to 1 - 1e-6: -0.5 log(1e-6) per dimension, not infinity."""
    z = torch.arange(5.0).view(5, 1, 1).expand(5, 1, 2)                    # [K, B, L=2]
    gk = (3.0 * z + 1.0).unsqueeze(0)                                       # [D=1, K, B, L]
    score = MonteCarlo("mi-diag", ("a",), 5, torch.Generator()).score(z, gk)
    torch.testing.assert_close(score, torch.full((1, 1), -np.log(1e-6)), rtol=1e-3, atol=0)


def _mi_by_numpy(zk: np.ndarray, gk: np.ndarray, ridge: float) -> float:
    """One image, one class: zk, gk ``[K, L]``; ridge relative to the mean variance of this joint covariance."""
    L = zk.shape[1]
    c = np.cov(np.concatenate([zk, gk], 1), rowvar=False)
    c = c + ridge * np.diag(c).mean() * np.eye(2 * L)
    ld = lambda m: np.linalg.slogdet(m)[1]
    return 0.5 * (ld(c[:L, :L]) + ld(c[L:, L:]) - ld(c))


@pytest.mark.parametrize("K", [2, 3, 7])
def test_mutual_information_full_equals_numpy_per_image_and_class(K):
    """Images of very different scales (1, 1e-2, 1e-4): the ridge follows each covariance's own scale."""
    gen = torch.Generator().manual_seed(K)
    scales = torch.tensor([1.0, 1e-2, 1e-4]).view(1, 3, 1)
    zk = torch.randn(K, 3, 2, generator=gen, dtype=torch.float64) * scales             # [K, B, L]
    gk = (torch.randn(2, K, 3, 2, generator=gen, dtype=torch.float64) + zk.flip(2)) * scales   # [D, K, B, L]
    got = MonteCarlo("mi", ("a",), K, gen, ridge=1e-2).score(zk.float(), gk.float())    # [D, B]
    assert torch.isfinite(got).all()
    for d in range(2):
        for b in range(3):
            want = _mi_by_numpy(zk[:, b].numpy(), gk[d, :, b].numpy(), 1e-2)
            assert got[d, b].item() == pytest.approx(want, rel=2e-3, abs=2e-3), (d, b)


def test_monte_carlo_seeds_of_different_queries_do_not_overlap():
    """Batch i of a query perturbs with the seed base + i, base drawn once from the query's generator over
    [0, 2**62): the seed ranges of different queries (50 generators here, 10,000 batches each) never meet, so no
    two queries perturb a batch alike. A base from a small range would make them collide."""
    bases = sorted(MonteCarlo("trC", ("fc1",), 4, torch.Generator().manual_seed(s)).base for s in range(50))
    assert all(b >= 0 for b in bases)
    assert all(b - a > 10_000 for a, b in zip(bases, bases[1:]))
    assert bases[-1] > 2 ** 40


def test_build_estimator_defaults():
    """``y`` needs no estimator (the true labels go to ``extract``); without ``standardization`` the pool rows are
    standardized as the default validation features are: unit norm per scale (not the release's z-scores)."""
    assert build_estimator("y", None, None, 10, ("fc1",), 4, torch.Generator()) is None
    g = torch.Generator().manual_seed(0)
    val = Features([torch.randn(6, 5, generator=g)], None).standardized("unit")
    est = build_estimator("phat", val, torch.arange(6) % 3, 3, ("fc1",), 4, torch.Generator())
    rows = torch.randn(4, 5, generator=g) * 3 + 1
    torch.testing.assert_close(est.standardize(rows), standardize(rows))


@pytest.mark.parametrize("name", ["phat-em", "phat-agree", "efs", "efs-em"])
def test_corrected_estimators_standardize_the_pool_as_the_validation_set(name):
    """Under ``--standardize release`` a corrected estimator standardizes the pool's descriptors as the validation
    set's were (z-scores per row, not unit norm): the option reaches it through ``build_estimator``."""
    from fkal.kernels import standardizer

    g = torch.Generator().manual_seed(0)
    val = Features([torch.randn(6, 5, generator=g)], None).standardized("release")
    est = build_estimator(name, val, torch.arange(6) % 3, 3, ("fc1",), 4, torch.Generator(),
                          standardization="release", rare=(2,))
    rows = torch.randn(4, 5, generator=g) * 3 + 1
    torch.testing.assert_close(est.pool_z([rows]), standardizer("release")(rows))
    assert not torch.allclose(est.pool_z([rows]), standardizer("unit")(rows))
