"""The paper's acquisition (Algorithm 1: pcc, pfk, pfk-sum with every pseudo-label estimator) recomputed by
brute force on a small pool.

Per image, on its own: descriptors z (pooled taps) and Fisher scores g (autograd of that image's cross-entropy
with respect to its taps, pooled); Pearson correlations with ``np.corrcoef``; the pseudo-labels from their
definitions (the Monte Carlo ones on the very perturbed copies the query made); the misclassified validation
images, and among them P centers by a k-center greedy that recomputes everything at each step; the kernel
between centers and pool; the rank-major merge over the full rankings. The picks must be these, in this order,
and ``result.scores`` each pick's best similarity to a center.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fkal.pseudo_labels as pseudo_labels
from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.fisher_kernel import rare_classes
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.models import taps_for
from fkal.pseudo_label_estimators import ESTIMATORS


# ----------------------------------------------------------------------------------------------------------------
# Per-image descriptors and Fisher scores
# ----------------------------------------------------------------------------------------------------------------
def pooled(t: torch.Tensor) -> torch.Tensor:
    return t.mean((2, 3)) if t.dim() == 4 else t


def per_image(model, x: torch.Tensor, taps, labels=None):
    """One image ``[1, C, H, W]``: (z per tap ``[L_j]``, logits ``[D]``, {label d: g per tap}) with g for each
    label in ``labels`` (every class when None), each from its own backward."""
    logits, t = model(x)
    acts = [t[name] for name in taps]
    z = [pooled(a)[0].detach().double().numpy() for a in acts]
    D = logits.shape[1]
    g = {}
    for d in (range(D) if labels is None else labels):
        grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([int(d)])), acts, retain_graph=True)
        g[int(d)] = [pooled(gr)[0].double().numpy() for gr in grads]
    return z, logits[0].detach().double().numpy(), g


def centred(v: np.ndarray) -> np.ndarray:
    """v minus its mean, over its norm: the Pearson correlation of two vectors is the dot product of these."""
    c = v - v.mean()
    return c / max(np.linalg.norm(c), 1e-12)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(centred(a) @ centred(b))


def test_pearson_is_numpy_corrcoef():
    g = np.random.default_rng(0)
    a, b = g.normal(size=7), g.normal(size=7)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])


def kernel_value(kind: str, za, ga, zb, gb) -> float:
    """Between two images (per-tap lists): R_z (eq. 6), R_zg (eq. 12) or R_z + R_g."""
    rz = [pearson(a, b) for a, b in zip(za, zb)]
    if kind == "pcc":
        return sum(rz)
    rg = [pearson(a, b) for a, b in zip(ga, gb)]
    if kind == "pfk":
        return sum(r * s for r, s in zip(rz, rg))
    return sum(rz) + sum(rg)


# ----------------------------------------------------------------------------------------------------------------
# Pseudo-labels by definition
# ----------------------------------------------------------------------------------------------------------------
def mc_score(metric: str, zk: np.ndarray, gk: np.ndarray, ridge: float = 1e-3) -> float:
    """zk ``[K, L]`` descriptors and gk ``[K, L]`` Fisher scores (one class) of the K copies of one image."""
    K, L = zk.shape
    if metric == "trC":                                                     # tr C_zg
        return float(sum(np.cov(zk[:, l], gk[:, l])[0, 1] for l in range(L)))
    if metric == "mi-diag":                                                 # -1/2 sum log(1 - rho_l^2)
        total = 0.0
        for l in range(L):
            c = np.cov(zk[:, l], gk[:, l])
            rho2 = min(c[0, 1] ** 2 / (c[0, 0] * c[1, 1] + 1e-12), 1 - 1e-6)
            total += -0.5 * np.log1p(-rho2)
        return total
    joint = np.cov(np.concatenate([zk, gk], 1), rowvar=False)               # [2L, 2L]
    joint = joint + ridge * np.diag(joint).mean() * np.eye(2 * L)
    logdet = lambda m: np.linalg.slogdet(m)[1]
    return 0.5 * (logdet(joint[:L, :L]) + logdet(joint[L:, L:]) - logdet(joint))


class PerturbSpy:
    """Wraps ``fkal.pseudo_labels.perturb`` and keeps every batch it perturbed and the copies it made."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, k, generator, *args, **kwargs):
        out = REAL_PERTURB(x, k, generator, *args, **kwargs)
        self.calls.append((x.detach().clone(), k, out.detach().clone()))
        return out


REAL_PERTURB = pseudo_labels.perturb


def pseudo_label_by_definition(name, model, taps, x, z, logits, val, copies=None):
    """The pseudo-label of one pool image under estimator ``name`` (val: per validation image (z, g, label))."""
    if name == "yhat":
        return int(np.argmax(logits))
    if name == "phat":                                                      # nearest validation image under R_z
        return val[int(np.argmax([kernel_value("pcc", z, None, vz, None) for vz, _, _ in val]))][2]
    if name == "phat-g":                                                    # the same under R_zg, per class
        _, _, g_all = per_image(model, x, taps)
        best = [max((kernel_value("pfk", z, g_all[d], vz, vg) for vz, vg, vy in val if vy == d), default=-np.inf)
                for d in range(len(logits))]
        return int(np.argmax(best))
    # Monte Carlo: copies [K, 1, C, H, W] of this image
    stats = [per_image(model, c, taps) for c in copies]
    zk = np.stack([np.concatenate(s[0]) for s in stats])                   # [K, L]
    scores = [mc_score(name, zk, np.stack([np.concatenate(s[2][d]) for s in stats])) for d in range(len(logits))]
    return int(np.argmax(scores))


TAU_GRID = np.geomspace(0.002, 1.0, 9)                                   # the soft p^'s temperature grid


def soft_phat_by_definition(rz: np.ndarray, val_labels: np.ndarray, num_classes: int, tau: float) -> np.ndarray:
    """q(d|x) = sum_{v in d} exp(R_z(x, v) / tau) / sum_v exp(R_z(x, v) / tau): rz ``[N, M]`` -> ``[N, D]``."""
    w = np.exp((rz - rz.max(1, keepdims=True)) / tau)
    q = np.stack([w[:, val_labels == d].sum(1) for d in range(num_classes)], 1)
    return q / q.sum(1, keepdims=True)


def temperature_by_definition(rz_vv: np.ndarray, val_labels: np.ndarray, num_classes: int) -> float:
    """The tau of largest mean leave-one-out log-likelihood of the validation labels (each log-likelihood floored
    at -1e4), over the grid, then twice over 7 log-spaced values between the best one's neighbours."""
    def ll(tau):
        total = 0.0
        for i in range(len(rz_vv)):
            others = np.delete(np.arange(len(rz_vv)), i)
            q = soft_phat_by_definition(rz_vv[i:i + 1, others], val_labels[others], num_classes, tau)[0]
            total += max(np.log(q[val_labels[i]]) if q[val_labels[i]] > 0 else -np.inf, -1e4)
        return total / len(rz_vv)
    taus = list(TAU_GRID)
    for _ in range(3):
        values = [ll(t) for t in taus]
        i = int(np.argmax(values))
        best = taus[i]
        taus = list(np.geomspace(taus[max(i - 1, 0)], taus[min(i + 1, len(taus) - 1)], 7))
    return best


def em_priors_by_definition(q: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Saerens et al.'s EM: priors p from the training priors; adjust every q to p, p = mean adjusted q; until no
    prior moves by 1e-7 (2000 steps at most)."""
    p = train.copy()
    for _ in range(2000):
        adj = q * (p / train)
        adj /= adj.sum(1, keepdims=True)
        new = adj.mean(0)
        done = np.abs(new - p).max() < 1e-7
        p = new
        if done:
            break
    return p


def corrected_labels_by_definition(name: str, val, pool_z, pool_logits, num_classes: int, rare,
                                   tau: float | None = None) -> tuple:
    """(labels ``[N]``, soft labels ``[N, D]`` or None) of phat-em, phat-agree, efs and efs-em for the pool
    images (``pool_z``: per image its z per tap; ``val``: per validation image (z, g, label))."""
    val_labels = np.array([y for _, _, y in val])
    rz_pv = np.array([[kernel_value("pcc", z, None, vz, None) for vz, _, _ in val] for z in pool_z])   # [N, M]
    if name == "phat-agree":
        best = np.stack([rz_pv[:, val_labels == d].max(1) for d in range(num_classes)], 1)
        labels = best.argmax(1)
        for n, logits in enumerate(pool_logits):
            if labels[n] in rare and int(np.argmax(logits)) != labels[n]:
                common = [d for d in range(num_classes) if d not in rare]
                labels[n] = common[int(np.argmax(best[n, common]))]
        return labels, None
    rz_vv = np.array([[kernel_value("pcc", a, None, b, None) for b, _, _ in val] for a, _, _ in val])
    tau = temperature_by_definition(rz_vv, val_labels, num_classes) if tau is None else tau
    q = soft_phat_by_definition(rz_pv, val_labels, num_classes, tau)
    if name in ("phat-em", "efs-em"):
        train = np.bincount(val_labels, minlength=num_classes) / len(val_labels)
        p = em_priors_by_definition(q, train)
        q = q * (p / train)
        q /= q.sum(1, keepdims=True)
    return q.argmax(1), (q if name.startswith("efs") else None)


# ----------------------------------------------------------------------------------------------------------------
# Algorithm 1 by brute force
# ----------------------------------------------------------------------------------------------------------------
def kcenter_by_brute_force(sim: np.ndarray, k: int, first: int) -> list[int]:
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(len(sim)) if i not in chosen]
        chosen.append(min(rest, key=lambda i: max(sim[i, c] for c in chosen)))
    return chosen


def merge_by_brute_force(sim: np.ndarray, budget: int) -> list[int]:
    """Rank 0 of every center, then rank 1, ...; within a rank, the higher similarity first (ties: the earlier
    center); each item once. sim ``[C, N]``, full rankings (ties in a ranking: the lower index first)."""
    order = [sorted(range(sim.shape[1]), key=lambda n: (-sim[c, n], n)) for c in range(len(sim))]
    picked: list[int] = []
    for r in range(sim.shape[1]):
        for c in sorted(range(len(sim)), key=lambda c: (-sim[c, order[c][r]], c)):
            if order[c][r] not in picked:
                picked.append(order[c][r])
            if len(picked) == budget:
                return picked
    return picked


def brute_force_query(ctx, spy: PerturbSpy | None, tau: float | None = None):
    """(picks as pool positions in order, each pick's best similarity, pseudo-label accuracy or None); ``tau``:
    the soft p^'s temperature where given, else its leave-one-out fit."""
    sim, accuracy = brute_force_similarities(ctx, spy, ctx.config.acquisition, tau=tau)
    picks = merge_by_brute_force(sim, ctx.budget)
    return ctx.unlabeled[picks], sim[:, picks].max(0), accuracy


def brute_force_similarities(ctx, spy: PerturbSpy | None, kind: str, all_misclassified: bool = False,
                             tau: float | None = None):
    """Lines 1-9 of Algorithm 1 image by image: (kernel ``kind`` between the centers and the unlabeled pool
    ``[C, N]``, pseudo-label accuracy or None). ``all_misclassified``: every misclassified validation image is a
    center (no k-center greedy)."""
    cfg, model, data = ctx.config, ctx.models[0], ctx.data
    pseudo = cfg.pseudo_label
    taps = taps_for(model, cfg.L)
    model.eval()
    val = []                                                                # (z, g under the true label, label)
    wrong = []
    for i, v in enumerate(data.split.val):
        y = int(data.val_labels[i])
        z, logits, g = per_image(model, data.val_source.get(np.array([v])), taps, labels=[y])
        val.append((z, g[y], y))
        if int(np.argmax(logits)) != y:
            wrong.append(i)
    if not wrong:
        wrong = list(range(len(val)))
    center_rows = wrong
    gen = torch.Generator().manual_seed(0)                                  # the context's seed
    if len(wrong) > ctx.budget and not all_misclassified:
        first = int(torch.randint(len(wrong), (1,), generator=gen))
        sim_v = np.array([[kernel_value(kind, val[a][0], val[a][1], val[b][0], val[b][1]) for b in wrong]
                          for a in wrong])
        center_rows = [wrong[c] for c in kcenter_by_brute_force(sim_v, ctx.budget, first)]
    copies = None
    if pseudo in ("trC", "mi", "mi-diag"):                                  # the copies the query perturbed
        xs = torch.cat([x for x, _, _ in spy.calls])
        K = spy.calls[0][1]
        copies = []
        for x, k, out in spy.calls:
            B = len(x)
            copies += [out.view(k, B, *x.shape[1:])[:, b:b + 1] for b in range(B)]   # [K, 1, C, H, W] each
        assert len(copies) == len(ctx.unlabeled) and K == cfg.K
        expected_x = data.pool_source.get(data.split.pool[ctx.unlabeled])
        torch.testing.assert_close(xs, expected_x)                          # the pool, in query order
    corrected = soft = None
    if pseudo in ESTIMATORS:                                                # they need the whole pool first
        firsts = [per_image(model, data.pool_source.get(data.split.pool[[p]]), taps, labels=[])
                  for p in ctx.unlabeled]
        corrected, soft = corrected_labels_by_definition(pseudo, val, [f[0] for f in firsts],
                                                         [f[1] for f in firsts], data.spec.num_classes,
                                                         rare_classes(data), tau)
    pool, used = [], []
    for n, p in enumerate(ctx.unlabeled):
        x = data.pool_source.get(data.split.pool[[p]])
        z, logits, _ = per_image(model, x, taps, labels=[])
        label = None
        if pseudo == "y":
            label = int(data.split.pool_labels[p])
        elif corrected is not None:
            label = int(corrected[n])
        elif pseudo is not None:
            label = pseudo_label_by_definition(pseudo, model, taps, x, z, logits, val,
                                               None if copies is None else copies[n])
        if soft is not None:                                                # expected Fisher score under q
            g_all = per_image(model, x, taps)[2]
            g = [sum(soft[n, d] * g_all[d][j] for d in g_all) for j in range(len(taps))]
        else:
            g = per_image(model, x, taps, labels=[label])[2][label] if label is not None else None
        pool.append((z, g))
        used.append(label)
    sim = np.array([[kernel_value(kind, val[c][0], val[c][1], z, g) for z, g in pool] for c in center_rows])
    accuracy = None
    if pseudo is not None:
        true = data.pool_source.labels[data.split.pool[ctx.unlabeled]]
        accuracy = 100.0 * float(np.mean(np.array(used) == true))
    return sim, accuracy


@pytest.mark.parametrize("config", ["pcc-L20", "pcc-L80", "pfk-y-L20", "pfk-yhat-L30", "pfk-phat-L80",
                                    "pfk-phat-g-L20", "pcc-phat-g-L20", "pfk-sum-yhat-L20", "pfk-sum-phat-L80"])
def test_fisher_kernel_picks_equal_algorithm_1_by_brute_force(tiny_mnist, config):
    ctx = trained_context(tiny_mnist, config, budget=6)
    ctx.unlabeled = ctx.unlabeled[::4]                                       # 70 pool images
    result = ACQUISITIONS[ctx.config.acquisition](ctx)
    picked = check_contract(ctx, result)
    want, best, accuracy = brute_force_query(ctx, None)
    np.testing.assert_array_equal(picked, want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)
    if accuracy is None:
        assert result.pseudo_label_accuracy is None
    else:
        assert result.pseudo_label_accuracy == pytest.approx(accuracy)


@pytest.mark.parametrize("config", ["pfk-trC-L20-K4", "pfk-mi-diag-L30-K3", "pfk-mi-L10-K6"])
def test_monte_carlo_pseudo_labels_by_brute_force_on_the_same_perturbations(tiny_mnist, config, monkeypatch):
    """trC, mi and mi-diag from per-image autograd on the K copies the query perturbed (copy k of image b is
    row k * B + b of the perturbed batch): their pseudo-labels, hence the Fisher scores and the picks."""
    ctx = trained_context(tiny_mnist, config, budget=4)
    ctx.unlabeled = ctx.unlabeled[::14]                                      # 20 pool images
    spy = PerturbSpy()
    monkeypatch.setattr(pseudo_labels, "perturb", spy)
    state = torch.get_rng_state()
    result = ACQUISITIONS["pfk"](ctx)
    assert torch.equal(torch.get_rng_state(), state)                         # perturbed with the query's generator
    picked = check_contract(ctx, result)
    for x, k, out in spy.calls:                                              # copy k of image b: near image b
        copies = out.view(k, len(x), -1)
        d = torch.cdist(copies.reshape(-1, copies.shape[-1]), x.flatten(1)).view(k, len(x), len(x))
        # nearly every copy is nearest its own image (a rotated thin digit may sit nearer another one); read
        # image-major (row b * K + k) instead, most copies would be nearest another image
        assert (d.argmin(2) == torch.arange(len(x))).float().mean() >= 0.9
    want, best, accuracy = brute_force_query(ctx, spy)
    assert result.pseudo_label_accuracy == pytest.approx(accuracy)
    np.testing.assert_array_equal(picked, want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("missed", [[3, 40, 77], [3, 12, 40, 58, 77, 91]])
def test_at_most_p_misclassified_makes_every_one_a_center(tiny_mnist, missed):
    """Relabel D_v so that the model misses exactly three images (fewer than P = 6), or exactly six: all of them
    are the centers, in D_v's order, and no first center is drawn (line 5 runs the k-center greedy only when
    |M^| > P), so the query's generator is left as it was."""
    ctx = trained_context(tiny_mnist, "pfk-y-L80", budget=6)
    ctx.unlabeled = ctx.unlabeled[::4]
    data = ctx.data
    with torch.no_grad():
        pred = ctx.models[0](data.val_source.get(data.split.val))[0].argmax(1).numpy()
    labels = pred.copy()
    labels[missed] = (pred[missed] + 1) % 10
    data.val_source.labels[data.split.val] = labels
    state = ctx.generator.get_state()
    result = ACQUISITIONS["pfk"](ctx)
    assert torch.equal(ctx.generator.get_state(), state)
    want, best, _ = brute_force_query(ctx, None)
    np.testing.assert_array_equal(check_contract(ctx, result), want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["one center", "identical centers"])
def test_candidate_lists_start_at_twice_p_over_c_and_double_until_p_distinct_images(query_ctx, monkeypatch, case):
    """Each center's candidates are its k most similar pool images, k = max(4, 2 ceil(P / C)) at first, doubled
    while the rank-major merge finds fewer than P distinct images. One misclassified image (C = 1, P = 6): k = 12,
    enough at once. D_v made of copies of one image, most of them misclassified: the six centers are identical,
    their candidate lists are the same k images, so k = 4 gives 4 distinct images and k = 8 the six. Either way
    the picks are the P images most similar to the center, by brute force."""
    import fkal.acquisitions.fisher_kernel as fisher_kernel
    ctx = query_ctx("pcc-L80", budget=6)
    ctx.unlabeled = ctx.unlabeled[::4]
    data = ctx.data
    if case == "one center":
        with torch.no_grad():
            pred = ctx.models[0](data.val_source.get(data.split.val))[0].argmax(1).numpy()
        labels = pred.copy()
        labels[17] = (pred[17] + 1) % 10
        data.val_source.labels[data.split.val] = labels
    else:
        data.val_source.images[data.split.val] = data.val_source.images[data.split.val[0]].clone()
    widths = []
    real = fisher_kernel.gathered_candidates

    def spy(kernel, centers, pool_std, where, k, device):
        widths.append((len(centers), k))
        return real(kernel, centers, pool_std, where, k, device)
    monkeypatch.setattr(fisher_kernel, "gathered_candidates", spy)
    result = ACQUISITIONS["pcc"](ctx)
    assert widths == ([(1, 12)] if case == "one center" else [(6, 4), (6, 8)])
    want, best, _ = brute_force_query(ctx, None)
    np.testing.assert_array_equal(check_contract(ctx, result), want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config, how", [("pfk-y-L20", "unit"), ("pcc-L80", "release")])
def test_pool_features_go_to_disk_exactly_past_the_memory_budget(query_ctx, monkeypatch, tmp_path, config, how):
    """--memory-budget GB: the pool's features go to float16 files when N x L x 4 bytes (x 2 with Fisher scores)
    is more than GB x 2^30, and stay in memory at that size exactly. The files are in a folder ``fkal-pool-*`` of
    the temporary folder, removed afterwards; in memory, no temporary folder is needed (a missing $TMPDIR does not
    matter). The picks and scores are the same either way, within float16's precision (under either
    standardization: the files hold the standardized rows)."""
    import tempfile

    import fkal.acquisitions.fisher_kernel as fisher_kernel
    from fkal.cli import build_parser
    def context():
        ctx = query_ctx(config, budget=5)
        ctx.unlabeled = ctx.unlabeled[::10]
        return ctx
    ctx = context()
    size = len(ctx.unlabeled) * ctx.config.L * (2 if config.startswith("pfk") else 1) * 4     # bytes as float32
    folders, sinks = [], []
    real = fisher_kernel.DiskFeatures

    def spy(folder, *args, **kwargs):
        folders.append(folder)
        sinks.append(real(folder, *args, **kwargs))
        return sinks[-1]
    monkeypatch.setattr(fisher_kernel, "DiskFeatures", spy)
    results = {}
    for where, budget in (("memory", size / 2 ** 30), ("disk", size / 2 ** 30 * (1 - 1e-6))):
        options = vars(build_parser().parse_args(["--memory-budget", repr(budget), "--standardize", how]))
        ctx = context()
        ctx.options = options
        scratch = tmp_path / where                                    # $TMPDIR; missing for the memory run
        if where == "disk":
            scratch.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        results[where] = ACQUISITIONS[ctx.config.acquisition](ctx)
    assert results["memory"].extras == {"pool_features": "memory-float32"}
    assert results["disk"].extras == {"pool_features": "disk-float16"}
    (folder,), (sink,) = folders, sinks                               # the disk run's only
    assert len(sink) == len(ctx.unlabeled) and sink.fisher == config.startswith("pfk")   # every row went there
    assert os.path.dirname(folder) == str(tmp_path / "disk") and os.path.basename(folder).startswith("fkal-pool-")
    assert not os.path.exists(folder)
    np.testing.assert_array_equal(results["disk"].indices, results["memory"].indices)
    np.testing.assert_allclose(results["disk"].scores, results["memory"].scores, rtol=2e-3, atol=5e-3)


def test_pcc_computes_no_fisher_scores(query_ctx, monkeypatch):
    """R_z needs descriptors only: pcc (with no pseudo-labels, or with p^) never runs the backward pass of the
    Fisher scores, on D_v or on the pool."""
    import fkal.descriptors as descriptors

    def refuse(*args, **kwargs):
        raise AssertionError("a Fisher score computed for pcc")
    for config in ("pcc-L20", "pcc-phat-L20"):
        ctx = query_ctx(config, budget=4)
        ctx.unlabeled = ctx.unlabeled[::10]
        with monkeypatch.context() as patch:
            patch.setattr(descriptors, "fisher_scores", refuse)
            result = ACQUISITIONS["pcc"](ctx)
        check_contract(ctx, result)


def test_monte_carlo_estimators_perturb_32_copies_unless_told_k(query_ctx, monkeypatch):
    """Without -K in the configuration's name, trC, mi and mi-diag draw K = 32 perturbed copies of each image."""
    spy = PerturbSpy()
    monkeypatch.setattr(pseudo_labels, "perturb", spy)
    ctx = query_ctx("pfk-trC-L20", budget=2)
    ctx.unlabeled = ctx.unlabeled[:6]
    check_contract(ctx, ACQUISITIONS["pfk"](ctx))
    assert ctx.config.K is None and spy.calls and {k for _, k, _ in spy.calls} == {32}
    assert sum(len(x) for x, _, _ in spy.calls) == 6
    assert all(len(out) == 32 * len(x) for x, _, out in spy.calls)


def test_pool_features_on_disk_give_algorithm_1_and_best_similarity_scores(tiny_mnist):
    """Past --memory-budget the pool's features go to float16 files: the picks are still Algorithm 1's, and each
    score is still the pick's best similarity over all centers (read back from the files, within float16's
    precision), not only over the centers whose top k it reached."""
    ctx = trained_context(tiny_mnist, "pfk-yhat-L30", budget=6, options={"memory_budget": 1e-12})
    ctx.unlabeled = ctx.unlabeled[::4]
    result = ACQUISITIONS["pfk"](ctx)
    assert result.extras["pool_features"] == "disk-float16"
    want, best, _ = brute_force_query(ctx, None)
    np.testing.assert_array_equal(check_contract(ctx, result), want)
    np.testing.assert_allclose(result.scores, best, atol=5e-3)


def test_best_similarity_of_sharded_picks_is_the_max_over_all_centers(monkeypatch):
    """``best_similarity`` on two shards of a pool (rank 1 holding the even rows, rank 0 the odd ones, in shuffled
    order), the ranks' parts exchanged through a stand-in for ``all_gather_object``: every pick's score is its
    maximum over all centers of the full similarity matrix, in the order of the picks, whichever rank holds it."""
    import fkal.distributed as D
    from fkal.acquisitions.fisher_kernel import best_similarity
    from fkal.kernels import Features, pfk

    g = torch.Generator().manual_seed(3)
    feats = Features([torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)],
                     [torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)]).standardized()
    centers, pool = feats.rows(range(4)), feats.rows(range(4, 12))           # 4 centers, 8 pool rows
    want = pfk(centers, pool).numpy()                                        # [4, 8]
    picked = np.array([5, 0, 6, 3, 2])
    shards = [np.array([7, 1, 5, 3]), np.array([6, 0, 2, 4])]                 # positions held by rank 0, rank 1
    parts = []

    class Sent(Exception):
        pass

    def send(obj):                                                           # keeps what a rank contributes
        parts.append(obj)
        raise Sent

    monkeypatch.setattr(D, "all_gather_object", send)
    for where in shards:
        with pytest.raises(Sent):
            best_similarity(pfk, centers, pool.rows(where), where, picked)
    monkeypatch.setattr(D, "all_gather_object", lambda obj: parts)
    got = best_similarity(pfk, centers, pool.rows(shards[0]), shards[0], picked)
    np.testing.assert_allclose(got, want[:, picked].max(0), rtol=1e-6)
    assert not np.allclose(want[:, picked].max(0), want[0, picked])          # the best center differs per pick


@pytest.mark.parametrize("config", ["pfk-phat-em-L80", "pfk-phat-agree-L30", "pfk-efs-L80", "pfk-efs-em-L20",
                                    "pcc-phat-agree-L20"])
def test_corrected_pseudo_labels_by_brute_force(tiny_mnist, config):
    """The estimators that correct p^ (phat-em, phat-agree, efs, efs-em) as S, from their definitions: the soft
    p^ with its leave-one-out temperature, Saerens et al.'s EM priors, the rare p^ labels that y^ contradicts
    moved to the nearest common class (on a split whose classes 5-9 are rare), the expected Fisher score under
    q; then Algorithm 1's picks and scores."""
    ctx = trained_context(tiny_mnist, config, budget=6)
    ctx.data.split.imbalance_ratio, ctx.data.split.rare_classes = 10.0, (5, 6, 7, 8, 9)
    ctx.unlabeled = ctx.unlabeled[::7]                                       # 40 pool images
    result = ACQUISITIONS[ctx.config.acquisition](ctx)
    want, best, accuracy = brute_force_query(ctx, None)
    np.testing.assert_array_equal(check_contract(ctx, result), want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)
    assert result.pseudo_label_accuracy == pytest.approx(accuracy)


@pytest.mark.parametrize("config", ["pfk-efs-L80", "pfk-efs-em-L30", "pfk-phat-em-L20"])
def test_soft_pseudo_labels_at_a_warm_temperature_by_brute_force(tiny_mnist, config, monkeypatch):
    """On this small validation set the fitted tau is the grid's smallest (q is all but one-hot, efs all but
    p^'s hard Fisher score); with tau fixed at 0.3, q is soft and the expected Fisher score and the EM priors
    decide the picks: both from their definitions."""
    import fkal.pseudo_label_estimators as estimators
    monkeypatch.setattr(estimators, "fit_temperature", lambda *args, **kwargs: (0.3, None))
    ctx = trained_context(tiny_mnist, config, budget=6)
    ctx.unlabeled = ctx.unlabeled[::7]                                       # 40 pool images
    result = ACQUISITIONS["pfk"](ctx)
    want, best, accuracy = brute_force_query(ctx, None, tau=0.3)
    np.testing.assert_array_equal(check_contract(ctx, result), want)
    np.testing.assert_allclose(result.scores, best, rtol=1e-4, atol=1e-5)
    assert result.pseudo_label_accuracy == pytest.approx(accuracy)


def pseudo_labels_by_definition(ctx, name: str) -> list[int]:
    """p^ or p^_g of every unlabeled image (``pseudo_label_by_definition``), image by image."""
    model, data = ctx.models[0], ctx.data
    taps = taps_for(model, ctx.config.L)
    val = []
    for i, v in enumerate(data.split.val):
        y = int(data.val_labels[i])
        z, _, g = per_image(model, data.val_source.get(np.array([v])), taps, labels=[y])
        val.append((z, g[y], y))
    labels = []
    for p in ctx.unlabeled:
        x = data.pool_source.get(data.split.pool[[p]])
        z, logits, _ = per_image(model, x, taps, labels=[])
        labels.append(pseudo_label_by_definition(name, model, taps, x, z, logits, val))
    return labels


def test_phat_and_phat_g_give_their_own_pseudo_labels(tiny_mnist):
    """The pseudo-labels the query used (``result.pseudo_labels``) are p^'s nearest validation image under R_z
    for phat and under R_zg for phat-g. The two agree on nearly every image here: the images where the queries'
    labels differ (there must be some), with a few others, are checked against both definitions, so that a
    swap of the two kernels, or one kernel for both, cannot pass."""
    ctxs = {name: trained_context(tiny_mnist, f"pfk-{name}-L20", budget=6) for name in ("phat", "phat-g")}
    used = {name: ACQUISITIONS["pfk"](ctx).pseudo_labels for name, ctx in ctxs.items()}
    differ = np.flatnonzero(used["phat"] != used["phat-g"])
    assert len(differ) > 0, "phat and phat-g label every pool image alike"
    rows = np.union1d(differ, np.arange(0, len(used["phat"]), 40))
    for name, ctx in ctxs.items():
        unlabeled = ctx.unlabeled
        ctx.unlabeled = unlabeled[rows]
        assert pseudo_labels_by_definition(ctx, name) == used[name][rows].tolist(), name


@pytest.mark.parametrize("ratio,rare,want", [(1.0, (5, 6, 7, 8, 9), ()), (0.5, (5, 6), ()), (2.0, (5, 6), (5, 6)),
                                             (100.0, None, ()), (100.0, (), ()), (10.0, (7,), (7,))])
def test_rare_classes_are_those_the_bias_decimated(ratio, rare, want):
    """phat-agree's rare classes: the split's, once its imbalance ratio is above 1; none on a balanced split."""
    from types import SimpleNamespace
    data = SimpleNamespace(split=SimpleNamespace(imbalance_ratio=ratio, rare_classes=rare))
    assert rare_classes(data) == want


@pytest.mark.parametrize("kernel", ["pcc", "pfk", "pfk-sum"])
def test_fisher_kernel_select_is_algorithm_1_on_hand_made_features(kernel):
    """The pure function on tensors alone: three misclassified validation images (fewer than P, so each is a
    center), each center's ranking of a 30-image pool merged rank by rank (within a rank, higher similarity
    first), distinct images, and each pick's score its best similarity; recomputed here with plain loops."""
    from fkal.acquisitions.fisher_kernel import fisher_kernel_select
    from fkal.kernels import Features, standardize

    g = torch.Generator().manual_seed(5)
    def feats(n):
        z = [standardize(torch.randn(n, w, generator=g)) for w in (3, 5)]
        gg = [standardize(torch.randn(n, w, generator=g)) for w in (3, 5)]
        return Features(z, gg)
    val, pool = feats(8), feats(30)
    wrong = [0, 2, 5]
    picks, scores = fisher_kernel_select(val, wrong, pool, 7, kernel=kernel)

    def sim(a, b):                                          # one pair, by the equations
        zz = [float(val.z[j][a] @ pool.z[j][b]) for j in range(2)]
        gg = [float(val.g[j][a] @ pool.g[j][b]) for j in range(2)]
        return {"pcc": sum(zz), "pfk": sum(x * y for x, y in zip(zz, gg)), "pfk-sum": sum(zz) + sum(gg)}[kernel]
    table = {c: sorted(range(30), key=lambda b: -sim(c, b)) for c in wrong}
    want = []
    for rank in range(30):
        for c in sorted(wrong, key=lambda c: -sim(c, table[c][rank])):
            if table[c][rank] not in want:
                want.append(table[c][rank])
    assert picks.tolist() == want[:7]
    np.testing.assert_allclose(scores, [max(sim(c, b) for c in wrong) for b in want[:7]], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="misclassified: no validation image to match"):
        fisher_kernel_select(val, [], pool, 3, kernel=kernel)
