"""Pseudo-label estimators against p^'s rare-class errors: each on hand-made tensors with a known answer."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fkal.data import TensorSource
from fkal.descriptors import extract
from fkal.kernels import Features, standardize
from fkal.pseudo_label_estimators import (AgreementFilter, ExpectedFisher, PriorCorrected, agreement_labels,
                                          class_log_kernel_sums, class_max_similarity, em_priors, fit_temperature,
                                          loo_log_likelihood,
                                          parzen_posterior, prior_shift, rare_precision_recall,
                                          soft_label_fisher_scores)
from fkal.pseudo_labels import NearestValidation

MEANS = np.array([-2.0, 0.0, 2.0])


def gauss_lik(x: np.ndarray) -> np.ndarray:
    """Class-conditional densities N(x; mu_d, 1) of three classes: [N, 3]."""
    return np.exp(-0.5 * (x[:, None] - MEANS[None]) ** 2) / math.sqrt(2 * math.pi)


def bayes(lik: np.ndarray, priors) -> torch.Tensor:
    p = lik * np.asarray(priors)[None]
    return torch.tensor(p / p.sum(1, keepdims=True))


@pytest.mark.parametrize("train_priors", [(1 / 3, 1 / 3, 1 / 3), (0.5, 0.3, 0.2)])
def test_em_recovers_the_priors_of_a_known_mixture(train_priors):
    rng = np.random.default_rng(0)
    true_priors = np.array([0.80, 0.15, 0.05])
    y = rng.choice(3, size=40000, p=true_priors)
    x = MEANS[y] + rng.standard_normal(len(y))
    post_t = bayes(gauss_lik(x), train_priors)                    # a calibrated classifier fitted under train_priors
    priors, adjusted, iterations = em_priors(post_t, torch.tensor(train_priors))
    np.testing.assert_allclose(priors.numpy(), true_priors, atol=0.012)
    assert 1 < iterations < 2000
    # the adjusted posteriors are Bayes' rule under the estimated priors
    torch.testing.assert_close(adjusted, bayes(gauss_lik(x), priors.numpy()))


def test_em_leaves_matching_priors_alone():
    rng = np.random.default_rng(1)
    y = rng.choice(3, size=30000)
    x = MEANS[y] + rng.standard_normal(len(y))
    priors, _, _ = em_priors(bayes(gauss_lik(x), [1 / 3] * 3), torch.full((3,), 1 / 3))
    np.testing.assert_allclose(priors.numpy(), [1 / 3] * 3, atol=0.012)


def test_prior_shift_is_bayes_rule_with_the_new_priors():
    x = np.linspace(-3, 3, 13)
    old, new = [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]
    torch.testing.assert_close(prior_shift(bayes(gauss_lik(x), old), torch.tensor(old), torch.tensor(new)),
                               bayes(gauss_lik(x), new))


def _val(seed=0, m=23, dims=(5, 3), classes=4):
    g = torch.Generator().manual_seed(seed)
    val = Features([torch.randn(m, d, generator=g) for d in dims]).standardized()
    labels = torch.randint(classes - 1, (m,), generator=g)          # the last class has no validation image
    pool_z = [torch.randn(7, d, generator=g) for d in dims]
    return val, labels, pool_z


def test_parzen_posterior_equals_brute_force():
    val, labels, pool_z = _val()
    zu = torch.cat([standardize(t) for t in pool_z], 1)
    vz = torch.cat(val.z, 1)
    tau = 0.3
    q = parzen_posterior(class_log_kernel_sums(zu, vz, labels, 4, tau, chunk=5))
    for i in range(len(zu)):
        w = [math.exp(float(zu[i] @ vz[j]) / tau) for j in range(len(vz))]
        for d in range(4):
            expected = sum(wj for wj, lj in zip(w, labels.tolist()) if lj == d) / sum(w)
            assert float(q[i, d]) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_small_tau_is_phat_and_class_max_is_phat():
    val, labels, pool_z = _val(seed=2, m=40)
    phat = NearestValidation(val, labels, 4, chunk=7)(None, None, torch.zeros(7, 4), None, pool_z)[0]
    zu = torch.cat([standardize(t) for t in pool_z], 1)
    vz = torch.cat(val.z, 1)
    q = parzen_posterior(class_log_kernel_sums(zu, vz, labels, 4, 1e-4, chunk=7))
    assert q.argmax(1).tolist() == phat.tolist()
    assert class_max_similarity(zu, vz, labels, 4, chunk=9).argmax(1).tolist() == phat.tolist()


def test_fit_temperature_is_the_leave_one_out_maximum():
    val, labels, _ = _val(seed=3, m=30)
    vz = torch.cat(val.z, 1)
    grid = (0.05, 0.2, 0.5, 1.0, 3.0)
    tau, ll = fit_temperature(vz, labels, 4, grid, max_rows=30, refine=0, chunk=8)
    brute = []
    for t in grid:
        total = 0.0
        for i in range(30):
            w = np.array([math.exp(float(vz[i] @ vz[j]) / t) if j != i else 0.0 for j in range(30)])
            total += math.log(max(w[labels.numpy() == int(labels[i])].sum() / w.sum(), math.exp(-1e4)))
        brute.append(total / 30)
    np.testing.assert_allclose(ll, brute, rtol=1e-5)
    assert tau == grid[int(np.argmax(brute))]
    # refining stays between the best grid value's neighbours and does not lower the likelihood
    fine, _ = fit_temperature(vz, labels, 4, grid, max_rows=30, refine=2, chunk=8)
    i = int(np.argmax(brute))
    assert grid[max(i - 1, 0)] <= fine <= grid[min(i + 1, len(grid) - 1)]
    rows = torch.arange(30)
    assert loo_log_likelihood(vz, labels, 4, [fine], rows)[0] >= max(brute) - 1e-6


def _two_class_features(n_per_class, seed, noise=1.2):
    """8-D descriptors in one scale: class 0 around +e, class 1 around -e (overlapping)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.5, -0.5, 0.0, 0.0])
    zs, ys = [], []
    for d, n in enumerate(n_per_class):
        zs.append((1 - 2 * d) * e + noise * torch.randn(n, 8, generator=g))
        ys.append(torch.full((n,), d))
    return torch.cat(zs), torch.cat(ys)


def test_prior_corrected_estimator_finds_the_pool_priors_and_gives_fewer_rare_labels():
    vz, vy = _two_class_features((300, 300), seed=0)
    pz, py = _two_class_features((1900, 100), seed=1)                # the pool: class 1 is rare (5%)
    val = Features([vz]).standardized()
    est = PriorCorrected(val, vy, 2)
    priors = est.prepare_from_features([pz])
    assert abs(float(priors[1]) - 0.05) < 0.03                       # p^'s own share of class 1 is far higher
    labels, g = est(None, None, torch.zeros(len(pz), 2), None, [pz])
    phat = NearestValidation(val, vy, 2)(None, None, torch.zeros(len(pz), 2), None, [pz])[0]
    em = rare_precision_recall(labels.numpy(), py.numpy(), [1])
    ph = rare_precision_recall(phat.numpy(), py.numpy(), [1])
    assert g is None
    assert em["rare_pseudo"] < ph["rare_pseudo"] / 2 and em["precision"] > ph["precision"]
    assert em["accuracy"] > ph["accuracy"]


def test_prior_corrected_needs_prepare():
    vz, vy = _two_class_features((20, 20), seed=0)
    est = PriorCorrected(Features([vz]).standardized(), vy, 2, tau=0.5)
    with pytest.raises(RuntimeError, match="prepare"):
        est(None, None, torch.zeros(3, 2), None, [vz[:3]])


def test_agreement_rejects_a_rare_phat_that_yhat_contradicts():
    # classes 0, 1 common, 2, 3 rare; one validation image per class along its own axis
    vz = torch.eye(4) * 4 - 1                                          # rows standardize to distinct patterns
    val = Features([vz]).standardized()
    vy = torch.tensor([0, 1, 2, 3])
    est = AgreementFilter(val, vy, 4, rare=[2, 3])
    # every pool image is nearest to validation image 2 (rare), second nearest to 0 (a common class)
    z = torch.tensor([[1.0, -1.0, 3.0, -1.0]]).repeat(4, 1)
    logits = F.one_hot(torch.tensor([2, 1, 3, 0]), 4).float()          # y^: agrees, common 1, rare 3, common 0
    labels, g = est(None, None, logits, None, [z])
    assert g is None
    # kept when y^ agrees; otherwise the common class nearest in R_z (0), not y^ (1) nor another rare class (3)
    assert labels.tolist() == [2, 0, 0, 0]
    # a common p^ stays whatever y^ says
    z_common = torch.tensor([[-1.0, 3.0, 0.5, -1.0]])
    assert est(None, None, F.one_hot(torch.tensor([3]), 4).float(), None, [z_common])[0].tolist() == [1]


def test_agreement_labels_pure():
    best = torch.tensor([[0.1, 0.5, 0.9, 0.2],      # p^ = 2 (rare), best common 1
                         [0.8, 0.5, 0.9, 0.2],      # p^ = 2 (rare), best common 0
                         [0.8, 0.5, 0.1, 0.2]])     # p^ = 0 (common)
    rare = torch.tensor([False, False, True, True])
    assert agreement_labels(best, torch.tensor([2, 3, 3]), rare).tolist() == [2, 0, 0]


class TinyConv(torch.nn.Module):
    """Two taps: 'c' a conv activation [B, 2, 4, 4] (pooled over space) and 'h' a vector [B, 5]; 3 classes."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc1 = torch.nn.Linear(32, 5)
        self.fc2 = torch.nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        c = self.conv(x)
        h = self.fc1(torch.tanh(c).flatten(1))
        return self.fc2(torch.tanh(h)), {"c": c, "h": h}


def per_image_fisher(model, x, d):
    """phi(dL(1_d)/dZ) of one image by its own autograd pass, per tap."""
    logits, taps = model(x)
    grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([d])), [taps["c"], taps["h"]])
    return [grads[0].mean((2, 3))[0], grads[1][0]]


def test_expected_fisher_score_is_the_weighted_sum_of_per_class_scores():
    model = TinyConv()
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    q = torch.tensor([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
    logits, taps = model(x)
    got = soft_label_fisher_scores(logits, [taps["c"], taps["h"]], q)
    for i in range(4):
        per_class = [per_image_fisher(model, x[i:i + 1], d) for d in range(3)]
        for j in range(2):
            expected = sum(float(q[i, d]) * per_class[d][j] for d in range(3))
            torch.testing.assert_close(got[j][i], expected, rtol=1e-5, atol=1e-6)


def test_expected_fisher_under_the_models_own_softmax_is_zero():
    model = TinyConv()
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    logits, taps = model(x)
    g = soft_label_fisher_scores(logits, [taps["c"], taps["h"]], logits.detach().softmax(1))
    assert all(float(t.abs().max()) < 1e-6 for t in g)


def test_expected_fisher_estimator_uses_the_soft_phat():
    model = TinyConv()
    x = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    val = Features([torch.randn(12, 2, generator=g), torch.randn(12, 5, generator=g)]).standardized()
    vy = torch.arange(12) % 3
    est = ExpectedFisher(val, vy, 3, tau=0.4)
    logits, taps = model(x)
    acts = [taps["c"], taps["h"]]
    z = [a.mean((2, 3)).detach() if a.dim() == 4 else a.detach() for a in acts]
    labels, scores = est(model, x, logits, acts, z)
    q = est.posterior(z)
    assert labels.tolist() == q.argmax(1).tolist()
    for i in range(5):
        per_class = [per_image_fisher(model, x[i:i + 1], d) for d in range(3)]
        for j in range(2):
            torch.testing.assert_close(scores[j][i], sum(float(q[i, d]) * per_class[d][j] for d in range(3)),
                                       rtol=1e-5, atol=1e-6)


def test_prepare_then_extract_with_the_em_estimators():
    model = TinyConv()
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.integers(0, 255, size=(30, 1, 6, 6)), dtype=torch.uint8)
    source = TensorSource(images, rng.integers(0, 3, size=30), (0.5,), (0.25,))
    val_idx, pool_idx = np.arange(12), np.arange(12, 30)
    vf, _, _ = extract(model, source, val_idx, ("c", "h"), torch.device("cpu"), 5, labels=source.labels[val_idx],
                       fisher=False)
    for est in (PriorCorrected(vf.standardized(), torch.as_tensor(source.labels[val_idx]), 3, tau=0.5),
                ExpectedFisher(vf.standardized(), torch.as_tensor(source.labels[val_idx]), 3, True, tau=0.5)):
        priors = est.prepare(model, source, pool_idx, ("c", "h"), torch.device("cpu"), batch_size=7)
        assert float(priors.sum()) == pytest.approx(1.0)
        feats, _, used = extract(model, source, pool_idx, ("c", "h"), torch.device("cpu"), 7, estimator=est)
        pool_feats, _, _ = extract(model, source, pool_idx, ("c", "h"), torch.device("cpu"), 7, fisher=False)
        assert used.tolist() == est.corrected(pool_feats.z).argmax(1).tolist()
        assert feats.g is not None and feats.g[0].shape == (18, 2)


def test_rare_precision_recall():
    true = np.array([0, 0, 0, 5, 6, 7, 1, 1])
    pseudo = np.array([5, 0, 6, 7, 6, 1, 1, 9])
    r = rare_precision_recall(pseudo, true, [5, 6, 7, 8, 9])
    # rare pseudo-labels at 0, 2, 3, 4, 7; of them truly rare: 3 (7 for 5: still rare), 4
    assert (r["rare_pseudo"], r["rare_true"], r["rare_both"]) == (5, 3, 2)
    assert r["precision"] == pytest.approx(2 / 5) and r["recall"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(100 * 3 / 8)
    assert math.isnan(rare_precision_recall(np.zeros(3), np.zeros(3), [5])["precision"])


@pytest.mark.parametrize("name,pseudo", [("pfk-phat-em-L80", "phat-em"), ("pfk-phat-agree-L80", "phat-agree"),
                                         ("pfk-efs-L80", "efs"), ("pfk-efs-em-L20", "efs-em"),
                                         ("pfk-phat-L80", "phat"), ("pfk-phat-g-L80", "phat-g"),
                                         ("pcc-phat-em", "phat-em")])
def test_names_fit_the_configuration_grammar(monkeypatch, name, pseudo):
    import fkal.config as config
    from fkal.pseudo_label_estimators import ESTIMATORS
    monkeypatch.setattr(config, "PSEUDO_LABELS", config.PSEUDO_LABELS + ESTIMATORS)
    cfg = config.parse_config(name, ("pcc", "pfk", "pfk-sum"))
    assert cfg.pseudo_label == pseudo and cfg.name == name
