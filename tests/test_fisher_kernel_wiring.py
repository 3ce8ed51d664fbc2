"""The options of ``pcc``, ``pfk`` and ``pfk-sum`` (``--taps``, ``--standardize``, ``--memory-budget``) and the thin
code of ``fkal.acquisitions.fisher_kernel`` that hands models, data and options to the descriptor passes.

The picks themselves are recomputed by brute force in ``test_picks_fisher_kernel.py``; here, stand-ins for
``extract``, ``extract_shard`` and ``build_estimator`` record what they receive, so that every argument is checked
to reach the function that uses it (an argument dropped or swapped for another of the same kind would otherwise
go unseen wherever it happens to equal its default).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fkal.acquisitions import fisher_kernel
from fkal.acquisitions.fisher_kernel import DEFAULT_MEMORY_BUDGET_GB, selection_options
from fkal.cli import build_parser
from fkal.kernels import STANDARDIZATIONS, Features
from fkal.models import TAP_POINTS


# ------------------------------------------------------------------------------------------------ the options

def test_options_parse_to_their_documented_defaults():
    """Without the options: taps before the ReLU, unit standardization (the module's docstring: the defaults are
    this project's), a memory budget of 4 GB; and ``selection_options`` reads the parsed options as given."""
    args = vars(build_parser().parse_args([]))
    assert (args["taps"], args["standardize"]) == ("pre", "unit")
    assert args["memory_budget"] == DEFAULT_MEMORY_BUDGET_GB == 4.0
    assert selection_options(args) == ("pre", "unit")
    args = vars(build_parser().parse_args(["--taps", "post", "--standardize", "release", "--memory-budget", "0.25"]))
    assert (args["taps"], args["standardize"]) == ("post", "release")
    assert args["memory_budget"] == 0.25 and isinstance(args["memory_budget"], float)
    assert selection_options(args) == ("post", "release")


def test_selection_options_fall_back_to_the_defaults_where_absent():
    """Contexts built outside the command line (tests, scripts) may lack the options or hold None."""
    assert selection_options({}) == ("pre", "unit")
    assert selection_options({"taps": None, "standardize": None}) == ("pre", "unit")
    assert selection_options({"taps": "post"}) == ("post", "unit")
    assert selection_options({"standardize": "release"}) == ("pre", "release")


@pytest.mark.parametrize("argv", [["--taps", "after"], ["--standardize", "l2"], ["--memory-budget", "0"],
                                  ["--memory-budget", "-1"], ["--memory-budget", "nan"],
                                  ["--memory-budget", "lots"]])
def test_option_values_outside_their_range_are_refused(argv, capsys):
    """--taps and --standardize take only their named choices; --memory-budget a finite number above 0."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_option_choices_are_the_tap_points_and_standardizations():
    for tap in TAP_POINTS:
        assert build_parser().parse_args(["--taps", tap]).taps == tap
    for how in STANDARDIZATIONS:
        assert build_parser().parse_args(["--standardize", how]).standardize == how
    assert build_parser().parse_args(["--memory-budget", "1e-9"]).memory_budget == 1e-9   # just above 0


# ------------------------------------------------------------------------------------------------ the descriptor passes

class Recorder:
    """Stand-ins for ``build_estimator``, ``extract`` and ``extract_shard`` that record their arguments."""

    def __init__(self, with_prepare: bool):
        self.calls: dict[str, list] = {"build_estimator": [], "prepare": [], "extract": [], "extract_shard": []}
        recorder = self

        class Estimator:
            pass

        if with_prepare:
            def prepare(self, model, source, positions, taps, device, batch_size, desc=None):
                recorder.calls["prepare"].append(dict(model=model, source=source, positions=positions, taps=taps,
                                                      device=device, batch_size=batch_size, desc=desc))
            Estimator.prepare = prepare
        self.estimator = Estimator()

    def build_estimator(self, name, val, val_labels, num_classes, taps, k, generator, standardization="unit",
                        rare=()):
        self.calls["build_estimator"].append(dict(name=name, val=val, val_labels=val_labels, num_classes=num_classes,
                                                  taps=taps, k=k, generator=generator,
                                                  standardization=standardization, rare=rare))
        return self.estimator

    def extract(self, model, source, idx, taps, device, batch_size=1000, labels=None, estimator=None, fisher=True,
                desc=None):
        self.calls["extract"].append(dict(model=model, source=source, idx=idx, taps=taps, device=device,
                                          batch_size=batch_size, labels=labels, estimator=estimator, fisher=fisher,
                                          desc=desc))
        return "features", "probs", torch.tensor([4, 2, 7])

    def extract_shard(self, model, source, idx, taps, device, batch_size=1000, labels=None, estimator=None,
                      fisher=True, desc=None, sink=None):
        self.calls["extract_shard"].append(dict(model=model, source=source, idx=idx, taps=taps, device=device,
                                                batch_size=batch_size, labels=labels, estimator=estimator,
                                                fisher=fisher, desc=desc, sink=sink))
        return "features", "probs", torch.tensor([4, 2, 7]), np.array([1, 0, 2])


def stub_data():
    """Three unlabeled images at positions [4, 0, 2] of a pool of 6, two classes, rare class 1 at IR 10."""
    return SimpleNamespace(val_labels=np.array([0, 1, 1, 0, 1]), spec=SimpleNamespace(num_classes=2),
                           split=SimpleNamespace(pool=np.array([50, 51, 52, 53, 54, 55]),
                                                 pool_labels=np.array([1, 0, 1, 1, 0, 0]),
                                                 imbalance_ratio=10.0, rare_classes=(1,)),
                           pool_source="the pool's source")


@pytest.mark.parametrize("shard", [False, True])
@pytest.mark.parametrize("pseudo", ["phat-em", "yhat", "y", None])
@pytest.mark.parametrize("standardization", ["release", None])
def test_pool_descriptors_hand_every_argument_to_the_estimator_and_the_pass(monkeypatch, shard, pseudo,
                                                                           standardization):
    """``pool_descriptors`` (and ``_shard``): the estimator of ``pseudo`` is built from the validation features
    and labels moved to the device ("meta" stands for a GPU), the classes, taps, K, generator, standardization
    (``unit`` when not given) and rare classes; one that needs the whole pool first gets its ``prepare`` pass over
    the unlabeled images; the descriptor pass gets the model, the pool's source, the unlabeled images' pool
    indices, the taps, device, batch size, the true labels where ``pseudo`` is ``y``, the estimator, ``fisher``,
    the progress label and (shard) the sink."""
    rec = Recorder(with_prepare=pseudo == "phat-em")
    monkeypatch.setattr(fisher_kernel, "build_estimator", rec.build_estimator)
    monkeypatch.setattr(fisher_kernel, "extract", rec.extract)
    monkeypatch.setattr(fisher_kernel, "extract_shard", rec.extract_shard)
    data, model, gen, device = stub_data(), torch.nn.Identity(), torch.Generator(), torch.device("meta")
    unlabeled, taps = np.array([4, 0, 2]), ("a", "b")
    val = Features([torch.rand(5, 4)], [torch.rand(5, 4)])
    extra = {} if standardization is None else {"standardization": standardization}
    if shard:
        out = fisher_kernel.pool_descriptors_shard(model, data, unlabeled, taps, pseudo, val, False, device, 7, 5,
                                                   gen, desc="pool pass", sink="the sink", **extra)
        assert out[0] == "features" and out[1].tolist() == [4, 2, 7] and out[2].tolist() == [1, 0, 2]
        (call,) = rec.calls["extract_shard"]
        assert call.pop("sink") == "the sink" and not rec.calls["extract"]
    else:
        out = fisher_kernel.pool_descriptors(model, data, unlabeled, taps, pseudo, val, False, device, 7, 5, gen,
                                             desc="pool pass", **extra)
        assert out[0] == "features" and out[1].tolist() == [4, 2, 7]
        (call,) = rec.calls["extract"]
        assert not rec.calls["extract_shard"]
    estimator = None
    if pseudo in ("phat-em", "yhat"):
        (built,) = rec.calls["build_estimator"]
        assert built.pop("val") is not None
        labels = built.pop("val_labels")
        assert labels.device.type == "meta" and labels.shape == (5,)
        assert built == dict(name=pseudo, num_classes=2, taps=taps, k=5, generator=gen,
                             standardization=standardization or "unit", rare=(1,))
        estimator = rec.estimator
    else:
        assert not rec.calls["build_estimator"]
    if pseudo == "phat-em":
        (prepared,) = rec.calls["prepare"]
        assert prepared.pop("positions").tolist() == [54, 50, 52]
        assert prepared == dict(model=model, source="the pool's source", taps=taps, device=device, batch_size=7,
                                desc="pool pass (prior estimation)")
    else:
        assert not rec.calls["prepare"]
    assert call.pop("idx").tolist() == [54, 50, 52]
    labels = call.pop("labels")
    assert (labels is None) if pseudo != "y" else labels.tolist() == [0, 1, 1]
    assert call == dict(model=model, source="the pool's source", taps=taps, device=device, batch_size=7,
                        estimator=estimator, fisher=False, desc="pool pass")


def test_validation_features_reach_the_estimator_on_its_device(monkeypatch):
    """The estimator's validation features are the ones given, moved to the device of its labels."""
    rec = Recorder(with_prepare=True)
    monkeypatch.setattr(fisher_kernel, "build_estimator", rec.build_estimator)
    monkeypatch.setattr(fisher_kernel, "extract", rec.extract)
    val = Features([torch.rand(5, 4)], [torch.rand(5, 3)])
    fisher_kernel.pool_descriptors(None, stub_data(), np.array([1]), ("a",), "phat-em", val, True,
                                   torch.device("meta"), 8, 32, torch.Generator())
    got = rec.calls["build_estimator"][0]["val"]
    assert [t.device.type for t in got.z + got.g] == ["meta"] * 2
    assert [tuple(t.shape) for t in got.z + got.g] == [(5, 4), (5, 3)]
    assert rec.calls["prepare"][0]["desc"] is None                      # no label without one for the pass


def test_progress_labels_name_the_configuration_and_each_pass(query_ctx, monkeypatch):
    """With progress bars on, the validation and the pool passes (and the estimator's prior pass) are labelled
    ``"{config} b={iteration}: {what}"``; the picks are those made with the bars off."""
    from fkal.config import parse_config
    from fkal.acquisitions.registry import ACQUISITIONS
    import fkal.descriptors as descriptors

    ctx = query_ctx(parse_config("pfk-yhat-L20", ACQUISITIONS), budget=4)
    ctx.unlabeled = ctx.unlabeled[::10]
    quiet = fisher_kernel.fisher_kernel_query(ctx)
    labels = []
    for name in ("extract", "extract_shard"):
        real = getattr(fisher_kernel, name)

        def spy(*args, _real=real, **kwargs):
            labels.append(kwargs.get("desc"))
            return _real(*args, **kwargs)
        monkeypatch.setattr(fisher_kernel, name, spy)
    monkeypatch.setattr(descriptors, "tqdm", lambda iterable, **kwargs: iterable)   # no bars in the test's output
    ctx = query_ctx(parse_config("pfk-yhat-L20", ACQUISITIONS), budget=4)
    ctx.unlabeled, ctx.progress = ctx.unlabeled[::10], True
    loud = fisher_kernel.fisher_kernel_query(ctx)
    assert labels == ["pfk-yhat-L20 b=2: validation descriptors", "pfk-yhat-L20 b=2: pool descriptors"]
    np.testing.assert_array_equal(loud.indices, quiet.indices)


# ------------------------------------------------------------------------------------------------ the shards' candidates

def test_global_top_k_breaks_ties_by_position_on_long_rows():
    """Per row, the k largest values, ties by increasing position, whatever order the candidates come in: by
    brute force on rows of 300 candidates drawn from three values (ties everywhere; an unstable sort would
    reorder them) at shuffled distinct positions."""
    from fkal.acquisitions.fisher_kernel import global_top_k
    g = torch.Generator().manual_seed(7)
    values = torch.randint(0, 3, (3, 300), generator=g).float() / 4
    positions = torch.stack([torch.randperm(1000, generator=g)[:300] for _ in range(3)])
    for k in (1, 40, 300):
        v, p = global_top_k(values, positions, k)
        for c in range(3):
            want = sorted(zip((-values[c]).tolist(), positions[c].tolist()))[:k]
            assert p[c].tolist() == [q for _, q in want]
            assert v[c].tolist() == [-u for u, _ in want]
        assert p.dtype == torch.long and v.shape == p.shape == (3, k)


@pytest.mark.parametrize("k", [3, 10])
def test_gathered_candidates_of_shards_with_an_empty_one_are_the_global_top_k(monkeypatch, k):
    """``gathered_candidates`` on three shards of a pool (rank 1 holding no row), the ranks' parts exchanged
    through a stand-in for ``all_gather_object``: per center, the k pool positions of highest R_z over the whole
    pool, in decreasing order, and their values (recomputed on the full matrix); the empty shard adds nothing,
    and the positions stay integers."""
    import fkal.distributed as D
    from fkal.acquisitions.fisher_kernel import gathered_candidates
    from fkal.kernels import pcc

    g = torch.Generator().manual_seed(5)
    feats = Features([torch.randn(14, 4, generator=g), torch.randn(14, 3, generator=g)]).standardized()
    centers, pool = feats.rows(range(4)), feats.rows(range(4, 14))           # 4 centers, 10 pool rows
    full = pcc(centers, pool)                                                 # [4, 10], many negative
    assert (full < 0).any()
    shards = [np.array([7, 1, 5, 3, 9, 0]), np.array([], dtype=np.int64), np.array([6, 2, 8, 4])]
    parts = []

    class Sent(Exception):
        pass

    def send(obj):
        parts.append(obj)
        raise Sent
    monkeypatch.setattr(D, "all_gather_object", send)
    for where in shards:
        with pytest.raises(Sent):
            gathered_candidates(pcc, centers, pool.rows(where), where, k, torch.device("cpu"))
    assert parts[1][0].shape == parts[1][1].shape == (4, 0)
    monkeypatch.setattr(D, "all_gather_object", lambda obj: parts)
    values, positions = gathered_candidates(pcc, centers, pool.rows(shards[0]), shards[0], k, torch.device("cpu"))
    want = torch.tensor([sorted(range(10), key=lambda n: (-float(full[c, n]), n))[:k] for c in range(4)])
    assert positions.dtype == torch.long and torch.equal(positions, want)
    torch.testing.assert_close(values, full.gather(1, want))


@pytest.mark.parametrize("config, hint", [("pfk-L20", "pfk-phat"), ("pfk-sum-L80", "pfk-sum-phat")])
def test_fisher_kernel_without_pseudo_labels_is_refused_before_any_pass(query_ctx, monkeypatch, config, hint):
    """R_g needs the pool's Fisher scores, hence a label per pool image: pfk and pfk-sum without an estimator end
    with an error naming the configuration and an example, before any descriptor pass."""
    def refuse(*args, **kwargs):
        raise AssertionError("a descriptor pass ran")
    monkeypatch.setattr(fisher_kernel, "extract", refuse)
    with pytest.raises(ValueError, match=f"^{config}: the Fisher kernel needs a pseudo-label estimator "
                                         rf"\(e.g. {hint}\)$"):
        fisher_kernel.fisher_kernel_query(query_ctx(config))


def test_misclassified_are_the_wrong_validation_images_or_all_when_none_is():
    """M^ (Algorithm 1, lines 3-4): the positions where the argmax of the validation outputs is not the label;
    every position when the model gets all of them right."""
    from fkal.acquisitions.fisher_kernel import misclassified
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    assert misclassified(probs, np.array([0, 0, 1, 0])).tolist() == [1, 2]
    assert misclassified(probs, np.array([1, 1, 2, 1])).tolist() == [0, 3]
    assert misclassified(probs, np.array([0, 1, 2, 0])).tolist() == [0, 1, 2, 3]          # none wrong: all


@pytest.mark.parametrize("config", ["pfk-y-L20", "pfk-phat-em-L20"])
def test_every_pass_runs_in_batches_of_the_eval_batch_size(query_ctx, config):
    """--eval-batch (ctx.batch_size) bounds every forward pass of the query: the validation pass, the pool pass and
    the estimator's prior pass over the pool (phat-em), each in full batches of that size but the last."""
    from fkal.acquisitions.registry import ACQUISITIONS
    from fkal.config import parse_config

    ctx = query_ctx(parse_config(config, ACQUISITIONS), budget=4)
    ctx.unlabeled, ctx.batch_size = ctx.unlabeled[::10], 16                  # 28 pool images, 100 in D_v
    model, sizes = ctx.models[0], []
    forward = model.forward
    model.forward = lambda x: (sizes.append(len(x)), forward(x))[1]
    fisher_kernel.fisher_kernel_query(ctx)
    passes = [[16] * 6 + [4]] + [[16, 12]] * (2 if config.endswith("em-L20") else 1)   # D_v, then the pool
    assert sizes == [n for p in passes for n in p]


@pytest.mark.parametrize("how", ["unit", "release"])
def test_query_builds_the_estimator_with_the_chosen_standardization(query_ctx, monkeypatch, how):
    """--standardize reaches the pseudo-label estimator as well as D_v's features: p^ standardizes each pool image
    as D_v was (the release's estimator weighs scale j by L_j - 1, as its D_v)."""
    from fkal.acquisitions.registry import ACQUISITIONS
    from fkal.config import parse_config
    from fkal.kernels import standardize, standardize_release

    built = []
    real = fisher_kernel.build_estimator

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(fisher_kernel, "build_estimator", spy)
    ctx = query_ctx(parse_config("pfk-phat-L80", ACQUISITIONS), budget=4, options={"standardize": how})
    ctx.unlabeled = ctx.unlabeled[::10]
    fisher_kernel.fisher_kernel_query(ctx)
    (estimator,) = built
    assert estimator.standardize is {"unit": standardize, "release": standardize_release}[how]
    norms = sum((z ** 2).sum(1) for z in estimator.val.z)       # D_v as the query standardized it: 3 or 9 + 19 + 49
    torch.testing.assert_close(norms, torch.full_like(norms, 3.0 if how == "unit" else 77.0))
