"""FLQMI greedy (SIMILAR): picks against a brute-force greedy, the eta term, the kernel plug-in."""
import numpy as np
import pytest
import torch

from fkal.acquisitions.coreset import penultimate_features
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.acquisitions.similar import cosine_blocks, flqmi_greedy, flqmi_value, similar_query
from fkal.config import parse_config
from fkal.kernels import Features, pfk


def brute_greedy(sim: torch.Tensor, budget: int, eta: float) -> list[int]:
    """Greedy that evaluates I(A u {a}; Q) from scratch for every candidate; ties to the lowest index."""
    picked: list[int] = []
    for _ in range(budget):
        base = flqmi_value(sim, picked, eta)
        best, best_gain = None, -np.inf
        for a in range(sim.shape[1]):
            if a in picked:
                continue
            gain = flqmi_value(sim, picked + [a], eta) - base
            if gain > best_gain + 1e-9:
                best, best_gain = a, gain
        picked.append(best)
    return picked


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_greedy_equals_brute_force_greedy(eta, cache_bytes):
    g = torch.Generator().manual_seed(7)
    sim = torch.randn(6, 41, generator=g, dtype=torch.float64)     # negative similarities included
    picks, gains = flqmi_greedy(lambda a, b: sim[:, a:b], 41, 12, eta=eta, chunk=9, cache_bytes=cache_bytes)
    assert picks.tolist() == brute_greedy(sim, 12, eta)
    # each gain is the increase of I(A; Q) that the pick brought
    values = [flqmi_value(sim, picks[:k].tolist(), eta) for k in range(13)]
    np.testing.assert_allclose(gains, np.diff(values), atol=1e-9)


def test_streaming_recomputes_blocks_and_caching_does_not():
    sim = torch.rand(3, 20, generator=torch.Generator().manual_seed(1))
    calls = []

    def block(a, b):
        calls.append((a, b))
        return sim[:, a:b]

    p1, _ = flqmi_greedy(block, 20, 4, chunk=8, cache_bytes=0)
    streamed = len(calls)
    calls.clear()
    p2, _ = flqmi_greedy(block, 20, 4, chunk=8)
    assert p1.tolist() == p2.tolist()
    assert len(calls) == 3 and set(calls) == {(0, 8), (8, 16), (16, 20)}  # each block once
    assert streamed > 3 * 4                                                  # every step streams again



@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_similarity_is_refused_with_the_number_of_images_it_touches(bad):
    """A NaN gain compares false with every other, so one NaN column would hide its whole chunk from the greedy
    step: the similarities are checked first (with any chunking), and the error counts the images."""
    sim = torch.rand(3, 10, generator=torch.Generator().manual_seed(0))
    sim[1, 4] = bad
    sim[0, 7] = bad
    for chunk in (3, 10):
        with pytest.raises(ValueError, match="^2 of the 10 pool images have a non-finite similarity"):
            flqmi_greedy(lambda a, b: sim[:, a:b], 10, 4, chunk=chunk)

def test_eta_zero_ignores_the_relevance_term():
    # candidate 0: s = (0.6, 0.6): coverage 1.2, relevance 0.6; candidate 1: s = (1.0, 0.0): coverage 1.0, rel. 1.0
    sim = torch.tensor([[0.6, 1.0, 0.1],
                        [0.6, 0.0, 0.1]])
    blocks = lambda a, b: sim[:, a:b]
    assert flqmi_greedy(blocks, 3, 1, eta=0.0)[0].tolist() == [0]   # coverage only: 1.2 > 1.0
    assert flqmi_greedy(blocks, 3, 1, eta=1.0)[0].tolist() == [1]   # 1.0 + 1.0 > 1.2 + 0.6
    # with eta = 0 the relevance of a candidate does not matter, only the coverage gain
    assert flqmi_value(sim, [0], 0.0) == pytest.approx(1.2)
    assert flqmi_value(sim, [0, 1], 0.0) == pytest.approx(1.6)      # max(0.6, 1.0) + max(0.6, 0.0)
    assert flqmi_value(sim, [0, 1]) == pytest.approx(1.6 + 0.6 + 1.0)   # eta = 1 by default, as flqmi_greedy's
    assert flqmi_value(sim, []) == 0.0


def test_second_pick_covers_the_uncovered_query_item():
    # after picking an image close to q0, the coverage gain favours an image close to q1 over a near-copy
    sim = torch.tensor([[0.95, 0.94, 0.10],
                        [0.10, 0.11, 0.90]])
    assert flqmi_greedy(lambda a, b: sim[:, a:b], 3, 2, eta=0.0)[0].tolist() == [0, 2]


def test_pool_copy_of_a_query_item_is_picked_first_under_cosine():
    g = torch.Generator().manual_seed(3)
    query = torch.zeros(3, 10)
    query[0, 0], query[1, 1], query[2, 2] = 1.0, 1.0, 1.0
    pool = torch.randn(50, 10, generator=g)
    pool[:, :3] *= 0.05                                       # the pool lies mostly away from the queries
    pool[17] = query[1]                                       # the same image
    pool[30] = query[1].clone()
    pool[30, 5] = 0.15                                        # a near copy, off every query direction
    picks, _ = flqmi_greedy(cosine_blocks(query, pool), 50, 3, eta=1.0, chunk=16)
    assert picks[0] == 17


def test_affine_map_of_the_similarity_changes_no_pick():
    """DISTIL hands submodlib (1 + cos) / 2; the greedy on raw cosine picks the same."""
    g = torch.Generator().manual_seed(5)
    q, x = torch.randn(4, 6, generator=g), torch.randn(30, 6, generator=g)
    raw = cosine_blocks(q, x)
    mapped = lambda a, b: (1 + raw(a, b)) / 2
    assert flqmi_greedy(raw, 30, 8, eta=0.7)[0].tolist() == flqmi_greedy(mapped, 30, 8, eta=0.7)[0].tolist()


def test_practical_fisher_kernel_plugs_in():
    """R_zg blocks (fkal.kernels.pfk on standardized features), streamed, against the brute-force greedy."""
    g = torch.Generator().manual_seed(11)
    feats = lambda n: Features([torch.randn(n, 4, generator=g), torch.randn(n, 6, generator=g)],
                               [torch.randn(n, 4, generator=g), torch.randn(n, 6, generator=g)]).standardized()
    query, pool = feats(5), feats(33)
    block = lambda a, b: pfk(query, pool.rows(slice(a, b)))
    picks, _ = flqmi_greedy(block, 33, 9, eta=1.0, chunk=8, cache_bytes=0)
    assert picks.tolist() == brute_greedy(pfk(query, pool).double(), 9, 1.0)


@pytest.mark.parametrize("kernel,cfg,eta", [("pfk", "similar-y-L80", 1.0), ("cosine", "similar", 100.0)])
def test_pool_copies_of_misclassified_validation_images_are_picked(query_ctx, kernel, cfg, eta):
    """As for the FK method: pool copies of the only misclassified validation images are what SIMILAR picks.
    (Cosine similarities of an untrained LeNet's features are all near 1, so there the coverage sum favours
    central images unless eta makes the relevance term, where a copy scores the maximum 1, dominate.)"""
    ctx = query_ctx(parse_config(cfg, ACQUISITIONS), budget=5, options={"similar_kernel": kernel, "similar_eta": eta})
    data, model = ctx.data, ctx.models[0]
    pred = model(data.val_source.get(data.split.val))[0].argmax(1).numpy()
    labels_v = pred.copy()
    labels_v[:5] = (pred[:5] + 1) % 10                      # exactly five misclassified validation images
    data.val_source.labels[data.split.val] = labels_v
    targets = ctx.unlabeled[:5]
    data.pool_source.images[data.split.pool[targets]] = data.val_source.images[data.split.val[:5]]
    data.pool_source.labels[data.split.pool[targets]] = labels_v[:5]
    data.split.pool_labels[targets] = labels_v[:5]
    result = similar_query(ctx)
    assert set(result.indices.tolist()) == set(targets.tolist())
    assert np.all(np.diff(result.scores) <= 1e-6)           # greedy gains of a submodular function decrease


def test_pfk_needs_a_pseudo_label_estimator(query_ctx):
    with pytest.raises(ValueError, match="similar-phat-L80"):
        similar_query(query_ctx(parse_config("similar", ACQUISITIONS), options={"similar_kernel": "pfk"}))



def test_an_unknown_kernel_is_refused_with_the_choices(query_ctx):
    """A configuration file or a caller outside the command line can name any kernel: the query names it and
    the two it knows."""
    with pytest.raises(ValueError) as e:
        similar_query(query_ctx(parse_config("similar", ACQUISITIONS), options={"similar_kernel": "rbf"}))
    assert str(e.value) == "unknown SIMILAR kernel 'rbf': choose one of pfk, cosine"

def test_query_set_all_uses_every_misclassified_image(query_ctx, monkeypatch):
    import fkal.acquisitions.similar as similar
    seen = []
    real = similar.flqmi_greedy
    monkeypatch.setattr(similar, "flqmi_greedy", lambda block, n, budget, eta: (
        seen.append(block(0, 1).shape[0]), real(block, n, budget, eta))[1])
    ctx = query_ctx(parse_config("similar", ACQUISITIONS), budget=4,
                    options={"similar_kernel": "cosine", "similar_query": "all", "similar_eta": 0.5})
    model, data = ctx.models[0], ctx.data
    wrong = int((model(data.val_source.get(data.split.val))[0].argmax(1).numpy() != data.val_labels).sum())
    similar.similar_query(ctx)
    ctx = query_ctx(parse_config("similar", ACQUISITIONS), budget=4, options={"similar_kernel": "cosine"})
    similar.similar_query(ctx)
    assert seen == [wrong, 4]                                # all of M^, then the P = 4 k-center centers



@pytest.mark.parametrize("kernel, cfg", [("pfk", "similar-phat-L80"), ("cosine", "similar")])
def test_the_picks_do_not_depend_on_the_chunks_the_pool_is_scored_in(query_ctx, monkeypatch, kernel, cfg):
    """The query's similarity blocks hold exactly the columns asked for: greedy over chunks of 7 pool images
    picks what one chunk picks, with the same gains."""
    import fkal.acquisitions.similar as similar
    real = similar.flqmi_greedy
    results = {}
    for chunk in (8192, 7):
        monkeypatch.setattr(similar, "flqmi_greedy", lambda block, n, budget, eta, chunk=chunk:
                            real(block, n, budget, eta, chunk=chunk))
        results[chunk] = similar.similar_query(query_ctx(parse_config(cfg, ACQUISITIONS), budget=6,
                                                         options={"similar_kernel": kernel}))
    assert results[7].indices.tolist() == results[8192].indices.tolist()
    np.testing.assert_allclose(results[7].scores, results[8192].scores, rtol=1e-6)



@pytest.mark.parametrize("kernel, cfg", [("pfk", "similar-phat-L80"), ("cosine", "similar")])
def test_a_model_that_diverged_is_refused_counting_each_pool_image_once(query_ctx, monkeypatch, kernel, cfg):
    """NaN weights make every similarity NaN: the error counts each unlabeled image once, over chunks of 7."""
    import fkal.acquisitions.similar as similar
    real = similar.flqmi_greedy
    monkeypatch.setattr(similar, "flqmi_greedy", lambda block, n, budget, eta: real(block, n, budget, eta, chunk=7))
    ctx = query_ctx(parse_config(cfg, ACQUISITIONS), budget=6, options={"similar_kernel": kernel})
    with torch.no_grad():
        next(ctx.models[0].parameters()).fill_(float("nan"))
    n = len(ctx.unlabeled)
    with pytest.raises(ValueError, match=f"^{n} of the {n} pool images have a non-finite similarity"):
        similar.similar_query(ctx)

def test_cosine_query_centers_are_k_center_greedy_under_cosine_similarity(query_ctx, monkeypatch):
    """With more misclassified validation images than P, Q is P k-center centers among them under the cosine
    similarity of their penultimate features (the first drawn from the generator): recomputed from the features,
    the centers' similarity blocks against the pool are the query's."""
    import fkal.acquisitions.similar as similar
    from fkal.acquisitions.fisher_kernel import kcenter_centers, misclassified
    from fkal.training import predict
    seen = []
    real = similar.flqmi_greedy
    monkeypatch.setattr(similar, "flqmi_greedy", lambda block, n, budget, eta: (
        seen.append(block(0, n)), real(block, n, budget, eta))[1])
    ctx = query_ctx(parse_config("similar", ACQUISITIONS), budget=4, options={"similar_kernel": "cosine"})
    model, data = ctx.models[0], ctx.data
    similar.similar_query(ctx)
    wrong = misclassified(predict(model, data.val_source, data.split.val, ctx.device), data.val_labels)
    assert len(wrong) > 4
    hq = penultimate_features(model, data.val_source, data.split.val[wrong], ctx.device)
    hu = penultimate_features(model, data.pool_source, data.split.pool[ctx.unlabeled], ctx.device)
    unit_q = hq / hq.norm(dim=1, keepdim=True)
    centers = kcenter_centers(lambda i: unit_q @ unit_q[i], len(wrong), 4, torch.Generator().manual_seed(0))
    expect = unit_q[torch.as_tensor(centers)] @ (hu / hu.norm(dim=1, keepdim=True)).T      # [P, N_u]
    torch.testing.assert_close(seen[0], expect, rtol=1e-5, atol=1e-6)

def test_the_flags_reach_the_options_with_their_types_and_bounds():
    from fkal.cli import build_parser
    parser = build_parser()
    args = parser.parse_args(["--similar-eta", "2", "--similar-kernel", "cosine", "--similar-query", "all"])
    assert (args.similar_eta, type(args.similar_eta), args.similar_kernel, args.similar_query) == \
        (2.0, float, "cosine", "all")
    defaults = parser.parse_args([])
    assert (defaults.similar_eta, defaults.similar_kernel, defaults.similar_query) == (1.0, "pfk", "centers")
    with pytest.raises(SystemExit):
        parser.parse_args(["--similar-eta", "-1"])                          # eta >= 0


@pytest.mark.parametrize("kernel,cfg,labels", [
    ("pfk", "similar-y-L80", ["validation descriptors", "pool descriptors"]),
    ("cosine", "similar", ["validation features", "pool features"])])
def test_every_pass_runs_in_eval_batches_under_its_progress_label(query_ctx, monkeypatch, kernel, cfg, labels):
    """--eval-batch (ctx.batch_size) bounds every forward pass: the first one, over D_v's 100 images, in full
    batches of 16 but the last; each pass's progress bar is named "{config} b={iteration}: {what}"."""
    import fkal.acquisitions.similar as similar
    seen = []
    for name in ("extract", "pool_descriptors", "penultimate_features"):
        real = getattr(similar, name)

        def spy(*args, real=real, **kwargs):
            seen.append(kwargs["desc"] if "desc" in kwargs else args[-1])
            return real(*args, **kwargs)
        monkeypatch.setattr(similar, name, spy)
    ctx = query_ctx(parse_config(cfg, ACQUISITIONS), budget=4, options={"similar_kernel": kernel})
    ctx.unlabeled, ctx.batch_size, ctx.progress = ctx.unlabeled[::10], 16, True
    model, sizes = ctx.models[0], []
    forward = model.forward
    model.forward = lambda x: (sizes.append(len(x)), forward(x))[1]
    similar_query(ctx)
    assert seen == [f"{cfg} b={ctx.iteration}: {what}" for what in labels]
    assert sizes[:7] == [16] * 6 + [4] and max(sizes) == 16


def test_the_cache_is_kept_only_when_all_of_q_by_the_pool_fits_in_its_bytes():
    """The cache holds |Q| x n similarities: 12 x 20 float32 = 960 bytes. A budget of 959 bytes streams even though
    one chunk (12 x 4) would fit; 960 caches."""
    sim = torch.rand(12, 20, generator=torch.Generator().manual_seed(2))
    calls = []

    def block(a, b):
        calls.append((a, b))
        return sim[:, a:b]
    counts = []
    for cache_bytes in (959, 960):
        calls.clear()
        flqmi_greedy(block, 20, 3, chunk=4, cache_bytes=cache_bytes)
        counts.append(len(calls))
    assert counts[1] == 5 and counts[0] > 5 * 3                          # cached: each block once; else every step
