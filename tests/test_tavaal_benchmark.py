"""TA-VAAL's benchmark (fkal.protocols): the imbalance rules' documented counts, the initial random set and the
per-cycle subset, the presets and their overrides, the settings they add, CIFAR-100 and Caltech-101 from files in
their real formats, and tiny runs of CIFAR-10 x100, CIFAR-100 and Caltech-101 that complete and resume.

The writers produce what torchvision's CIFAR100 reader and an ImageFolder read: the CIFAR-100 python pickles
``train``, ``test`` (``data`` [N, 3072] uint8, ``fine_labels``, ``coarse_labels``, ``filenames``) and ``meta``
(``fine_label_names``, ``coarse_label_names``); a ``caltech101/101_ObjectCategories/<class>/image_0001.jpg`` tree.
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fkal import protocols
from fkal import settings as st
from fkal.acquisitions import registry
from fkal.cli import build_parser, main, settings_from
from fkal.config import parse_config
from fkal.data import DATASETS, RawData, TensorSource, make_split
from fkal.data.caltech import CaltechLoader, fixed_split
from fkal.data.cifar import load_cifar100
from fkal.data.split import rule_rare_classes
from fkal.errors import UserError
from fkal.io import read_jsonl

from test_pipelines import write_cifar10

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official release")


# ----------------------------------------------------------------------------------------------------------------
# Writers of the real formats
# ----------------------------------------------------------------------------------------------------------------
def bar_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """RGB images ``[N, size, size, 3]`` uint8: noise plus a bright bar whose row and colour depend on the class."""
    images = rng.integers(0, 60, size=(len(labels), size, size, 3))
    for i, c in enumerate(labels):
        row = 2 + (int(c) * 3) % (size - 6)
        images[i, row:row + 3, 2:size - 2, int(c) % 3] = 255
    return images.astype(np.uint8)


def write_cifar100(root: Path, train_per_class: int = 3, n_test: int = 20, seed: int = 0) -> Path:
    """``{root}/cifar-100-python/{train,test,meta}``: ``train_per_class`` images of each of the 100 fine classes
    (coarse label = fine // 5) and ``n_test`` test images of classes 0, 1, ..."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, fine in (("train", np.tile(np.arange(100), train_per_class)), ("test", np.arange(n_test) % 100)):
        data = bar_images(fine, 32, rng).transpose(0, 3, 1, 2).reshape(len(fine), 3072)
        entry = {"batch_label": name, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                 "data": data, "filenames": [f"img_{name}_{i}.png" for i in range(len(fine))]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"fine_label_names": [f"class{c}" for c in range(100)],
            "coarse_label_names": [f"super{c}" for c in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


CALTECH_CLASSES = ("Faces_easy", "accordion", "airplanes", "anchor")


def write_caltech(root: Path, per_class: int = 12, background: int = 6, seed: int = 0) -> Path:
    """``{root}/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg``: four classes of ``per_class`` JPEGs of
    40 x 30 pixels (every third one greyscale, as some Caltech images are) and the BACKGROUND_Google folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(CALTECH_CLASSES + ("BACKGROUND_Google",)):
        folder = base / name
        folder.mkdir(parents=True)
        n = background if name == "BACKGROUND_Google" else per_class
        for i, image in enumerate(bar_images(np.full(n, c), 40, rng)[:, :30]):
            picture = Image.fromarray(image)
            (picture.convert("L") if i % 3 == 2 else picture).save(folder / f"image_{i + 1:04d}.jpg", quality=90)
    return root


def tiny_raw(labels: np.ndarray) -> RawData:
    """A dataset of 1x1 images with the given train labels (the split reads only the labels)."""
    def source(lab):
        return TensorSource(torch.zeros(len(lab), 1, 1, 1, dtype=torch.uint8), lab, (0.5,), (0.25,))
    return RawData(train=source(labels), test=source(np.arange(10)))


# ----------------------------------------------------------------------------------------------------------------
# Imbalance rules: the documented counts
# ----------------------------------------------------------------------------------------------------------------
CIFAR10_LABELS = np.tile(np.arange(10), 5_000)          # 50,000 train labels, 5,000 per class, interleaved


def split_with(rule: str, ir: float, labels=CIFAR10_LABELS, seed: int = 0, val_size: int = 0):
    spec = DATASETS["cifar10"]
    spec = replace(spec, imbalance=rule, rare_classes=rule_rare_classes(rule, 10) or spec.rare_classes)
    return make_split(spec, tiny_raw(labels), seed, ir, train_size=0, val_size=val_size)


def test_tavaal_paper_rule_keeps_5000_over_ir_of_the_first_five_classes_at_random():
    for ir, kept in ((10, 500), (100, 50)):
        split = split_with("tavaal-paper", ir)
        counts = np.bincount(split.pool_labels, minlength=10)
        assert counts.tolist() == [kept] * 5 + [5_000] * 5 and len(split.pool) == 5 * kept + 25_000
        assert split.rare_classes == (0, 1, 2, 3, 4)
    a, b = split_with("tavaal-paper", 100, seed=0).pool, split_with("tavaal-paper", 100, seed=1).pool
    first = np.flatnonzero(CIFAR10_LABELS == 0)[:50]
    assert not np.array_equal(a, b) and not np.isin(first, a).all()        # drawn at random, not the first 50


def test_tavaal_code_rule_keeps_the_first_50_images_of_the_even_classes():
    split = split_with("tavaal-code", 100)
    counts = np.bincount(split.pool_labels, minlength=10)
    assert counts.tolist() == [50, 5_000] * 5 and len(split.pool) == 25_250     # the code's cifar10im
    for c in (0, 2, 4, 6, 8):
        np.testing.assert_array_equal(split.pool[split.pool_labels == c], np.flatnonzero(CIFAR10_LABELS == c)[:50])
    assert split_with("tavaal-code", 100, seed=5).pool.tolist() == split.pool.tolist()   # no randomness
    # a validation set taken out of the train images leaves the reduced classes at 5,000 / IR
    held = split_with("tavaal-code", 100, val_size=5_000)
    assert np.bincount(held.pool_labels, minlength=10)[0::2].tolist() == [50] * 5 and len(held.val) == 5_000
    assert not np.isin(held.val, held.pool).any()


def test_grouped_and_per_class_rules_stay_as_they_were():
    labels = np.repeat(np.arange(10), 40)                                      # 40 per class
    grouped = np.bincount(split_with("grouped", 4, labels).pool_labels, minlength=10)
    assert grouped[1::2].tolist() == [40] * 5 and grouped[0::2].sum() == 200 // 4   # rare together: n_common / IR
    per_class = np.bincount(split_with("per_class", 4, labels).pool_labels, minlength=10)
    assert per_class.tolist() == [10, 40] * 5                                  # cifar10's even classes: n_c / IR


def test_caltech_has_no_rare_classes_to_reduce():
    with pytest.raises(UserError, match="--imbalance-ratios 1"):
        make_split(DATASETS["caltech101"], tiny_raw(np.arange(20) % 4), 0, 10.0)


# ----------------------------------------------------------------------------------------------------------------
# The initial random set and the per-cycle subset (pure)
# ----------------------------------------------------------------------------------------------------------------
def test_subset_is_drawn_from_the_unlabeled_positions_only():
    labeled = np.arange(0, 1000, 3)
    unlabeled = np.setdiff1d(np.arange(1000), labeled)
    g = torch.Generator().manual_seed(0)
    subset = protocols.candidate_subset(unlabeled, 100, g)
    assert len(subset) == 100 == len(np.unique(subset)) and np.isin(subset, unlabeled).all()
    assert not np.isin(subset, labeled).any() and np.all(np.diff(subset) > 0)
    assert protocols.candidate_subset(unlabeled, None, g) is unlabeled
    assert protocols.candidate_subset(unlabeled, 10_000, g) is unlabeled
    again = protocols.candidate_subset(unlabeled, 100, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(subset, again)
    assert [protocols.subset_count(v, 1000) for v in (None, 10_000, "10x", "3x")] == [None, 10_000, 10_000, 3_000]


def test_initial_draw_and_budgets():
    draw = protocols.initial_draw(np.arange(50, 150), 30, torch.Generator().manual_seed(1))
    assert len(set(draw.tolist())) == 30 and draw.min() >= 50 and draw.max() < 150
    with pytest.raises(UserError):
        protocols.initial_draw(np.arange(10), 11, torch.Generator())
    assert protocols.labels_needed(1000, 1000, 10) == 10_000 and protocols.labels_needed(0, 125, 10) == 1250
    assert protocols.labels_needed(1000, 500, 10) == 5_500
    assert [protocols.iteration_budget(1000, 500, b) for b in (1, 2, 3)] == [1000, 500, 500]
    assert [protocols.iteration_budget(0, 125, b) for b in (1, 2)] == [125, 125]


@pytest.mark.parametrize("text,value", [("none", None), ("code", 10_000), ("paper", "10x"), ("5x", "5x"),
                                        ("2500", 2500)])
def test_subset_size_names(text, value):
    assert protocols.subset_size(text) == value


# ----------------------------------------------------------------------------------------------------------------
# Presets: what they set, what the command line overrides
# ----------------------------------------------------------------------------------------------------------------
def settings_for(*argv: str, dataset: str = "cifar10"):
    args = protocols.parse(build_parser(), ["--dataset", dataset, *argv], None)
    spec = protocols.apply_to_spec(DATASETS[dataset], args)
    return args, spec, settings_from(args, spec)


def test_tavaal_preset_follows_the_code_and_every_number_is_overridable():
    args, spec, s = settings_for("--protocol", "tavaal")
    assert (s.protocol, s.initial_labels, s.query_size, s.iterations, s.subset_size) == ("tavaal", 1000, 1000, 10, 10_000)
    assert (s.train.epochs, s.train.lr, s.train.momentum, s.train.weight_decay, s.train.batch_size,
            s.train.milestones) == (200, 0.1, 0.9, 5e-4, 128, (160,))
    assert (s.model_per_cycle, s.loss_module_all, s.crop_padding, args.unsupervised) == ("fresh", 0, 4, 0)
    assert (spec.imbalance, spec.rare_classes, args.imbalance_ratios) == ("tavaal-code", (0, 2, 4, 6, 8), [1.0, 100.0])
    assert (s.train_size_or_default(), s.val_size_or_default(), spec.model) == (0, 0, "resnet18-small")
    o = dict(s.options)
    assert (o["vaal_latent"], o["tavaal_eta"], o["vaal_lr"], o["tavaal_disc_rank"], o["tavaal_first_uniform"],
            o["tavaal_epochs"], o["vaal_batch"], o["tavaal_subset_factor"], o["lloss_subset"]) == \
        (32, 1.0, 5e-4, "raw", 1, 100.0, 128, 0, 0)
    assert "lloss-v2" in spec.configs and "tavaal" in spec.configs
    _, _, s = settings_for("--protocol", "tavaal", "--epochs", "20", "--weight-decay", "0.005", "--subset-size",
                           "paper", "--initial-labels", "500", "--model-per-cycle", "warm", "--lr-milestones", "5,15")
    assert (s.train.epochs, s.train.weight_decay, s.subset_size, s.initial_labels, s.model_per_cycle,
            s.train.milestones) == (20, 0.005, "10x", 500, "warm", (5, 15))


def test_tavaal_paper_preset_and_the_other_datasets():
    args, spec, s = settings_for("--protocol", "tavaal-paper")
    assert (s.subset_size, s.train.weight_decay, s.crop_padding, dict(s.options)["vaal_latent"],
            dict(s.options)["tavaal_disc_rank"]) == ("10x", 5e-3, 2, 64, "sigmoid")
    assert (spec.imbalance, spec.rare_classes, args.imbalance_ratios) == ("tavaal-paper", (0, 1, 2, 3, 4),
                                                                          [1.0, 10.0, 100.0])
    _, _, code = settings_for("--protocol", "tavaal", dataset="cifar100")
    _, _, paper = settings_for("--protocol", "tavaal-paper", dataset="cifar100")
    assert (code.initial_labels, code.query_size) == (2000, 2000) and (paper.initial_labels, paper.query_size) == (1000, 1000)
    args, spec, s = settings_for("--protocol", "tavaal", dataset="caltech101")
    o = dict(s.options)
    assert (s.initial_labels, s.query_size, s.train.lr, s.train.batch_size, s.crop_padding) == (1000, 500, 0.01, 16, None)
    assert (o["tavaal_eta"], o["vaal_latent"], o["vaal_lambda"], o["vaal_lr"]) == (0.2, 128, 15.0, 1e-4)
    assert spec.model == "resnet18" and args.imbalance_ratios == [1.0]
    _, _, fk = settings_for(dataset="cifar10")                               # no --protocol: nothing changes
    assert (fk.protocol, fk.initial_labels, fk.subset_size, fk.model_per_cycle, fk.query_size) == ("fk", 0, None, "warm", 1000)
    assert fk.train == DATASETS["cifar10"].train


def test_settings_added_by_the_protocols_leave_earlier_runs_alone():
    """A Fisher-kernel run's settings hold the new keys at their ADDED_LATER values: the digest and the
    comparison equal those of the same settings without them (what earlier records carry)."""
    _, _, s = settings_for(dataset="mnist")
    from fkal.run_state import protocol_settings
    new = {"seed": 0, "dataset": "mnist", "options": {"vaal_iterations": 150, "tavaal_epochs": None,
                                                      "tavaal_disc_rank": "sigmoid", "tavaal_first_uniform": 0},
           **protocol_settings(s)}
    old = {"seed": 0, "dataset": "mnist", "options": {"vaal_iterations": 150}}
    assert st.differences(old, new) == [] and st.settings_id(old) == st.settings_id(new)
    changed = {**new, "protocol": "tavaal", "subset_size": 10_000}
    assert {d[0] for d in st.differences(old, changed)} == {"protocol", "subset_size"}
    assert "--subset-size" in st.describe(st.differences(old, changed))


def test_requests_the_protocol_cannot_serve_are_one_error(tmp_path, capsys):
    root = write_cifar10(tmp_path / "data")
    base = ["--dataset", "cifar10", "--protocol", "tavaal", "--data-root", str(root), "--out", str(tmp_path / "o")]
    for name in ("pfk-phat-L768", "similar-phat-L768"):
        assert main(base + ["--only", name]) == 2
        assert "--val-size" in capsys.readouterr().err
    assert main(base + ["--only", "random", "--subset-size", "500"]) == 2          # fewer than P = 1,000
    assert "--subset-size" in capsys.readouterr().err
    assert main(["--dataset", "caltech101", "--protocol", "tavaal", "--crop-padding", "4", "--data-root",
                 str(write_caltech(tmp_path / "cal")), "--out", str(tmp_path / "o"), "--only", "random"]) == 2
    assert "--crop-padding" in capsys.readouterr().err


def test_crop_padding_replaces_the_loaders_augmentation(tmp_path):
    from fkal.data.cifar import load_cifar10
    args, spec, _ = settings_for("--protocol", "tavaal")
    raw = protocols.prepare_data(load_cifar10(str(write_cifar10(tmp_path)), download=False), spec, args, tmp_path)
    assert raw.train.augment.padding == 4 and raw.train.augment.flip
    torch.manual_seed(0)
    x = raw.train.get(np.arange(4))
    shifted = raw.train.augment(x)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------
def test_cifar100_loader_reads_the_fine_labels(tmp_path):
    root = write_cifar100(tmp_path)
    raw = load_cifar100(str(root), download=False)
    assert len(raw.train) == 300 and len(raw.test) == 20 and raw.train.image_shape == (3, 32, 32)
    with open(root / "cifar-100-python" / "train", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert raw.train.labels.tolist() == entry["fine_labels"] and raw.train.labels.max() == 99
    assert torch.equal(raw.train.images[7], torch.from_numpy(entry["data"][7].reshape(3, 32, 32)))


def test_caltech_split_is_fixed_and_the_background_a_choice(tmp_path):
    root = write_caltech(tmp_path)
    raw = CaltechLoader(image_size=32)(str(root))
    n = 4 * 12
    assert len(raw.train) + len(raw.test) == n and len(raw.test) == round(n * 1019 / 9144)
    assert set(raw.train.labels.tolist()) | set(raw.test.labels.tolist()) <= {0, 1, 2, 3}
    assert raw.manifest["classes"] == sorted(CALTECH_CLASSES) and not set(raw.manifest["train"]) & set(raw.manifest["test"])
    assert raw.train.image_shape == (3, 32, 32) and raw.train.augment.padding == 0 and raw.train.augment.flip
    again = CaltechLoader(image_size=32)(str(root))
    assert again.manifest == raw.manifest and torch.equal(again.test.images, raw.test.images)
    with_bg = CaltechLoader(background=True, image_size=32)(str(root))
    assert len(with_bg.train) + len(with_bg.test) == n + 6 and "BACKGROUND_Google" in with_bg.manifest["classes"]
    train, test = fixed_split(9_144, 1019 / 9144, 0)
    assert (len(train), len(test)) == (8_125, 1_019) and not np.isin(test, train).any()
    with pytest.raises(UserError, match="caltech101"):
        CaltechLoader()(str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------------------------------------------
# In the loop: the subset, random's picks, the fresh model, the module on every method
# ----------------------------------------------------------------------------------------------------------------
def mnist_args(root, out, *extra):
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "1", "--iterations", "3",
            "--pool-size", "10", "--no-progress", "--eval-batch", "128", "--unsupervised", "0", *extra]


def test_queries_see_only_a_subset_of_the_unlabeled_pool_and_random_never_repeats(tiny_mnist, tmp_path, monkeypatch):
    seen = []
    random_query = registry.ACQUISITIONS["random"]

    def spy(ctx):
        result = random_query(ctx)
        seen.append((ctx.labeled.copy(), ctx.unlabeled.copy(), np.asarray(result.indices)))
        return result
    monkeypatch.setitem(registry.ACQUISITIONS, "random", spy)
    out = tmp_path / "out"
    assert main(mnist_args(tiny_mnist, out, "--only", "random", "--initial-labels", "30", "--subset-size", "4x")) == 0
    assert len(seen) == 2                                      # iteration 1 is the initial random set, not a query
    picked_before = set(range(0))
    for labeled, offered, picks in seen:
        assert len(offered) == 40 and not np.isin(offered, labeled).any()       # 4 x P, none labeled
        assert len(set(picks.tolist())) == 10 and np.isin(picks, offered).all()
        assert not set(picks.tolist()) & picked_before
        picked_before |= set(picks.tolist())
    state = torch.load(out / "MNIST" / "run0" / "ir4" / "random" / "random" / "state_b03.pt")
    labeled_at = state["labeled_at"].numpy()
    assert [(labeled_at == b).sum() for b in (1, 2, 3)] == [30, 10, 10]
    records, _ = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert [r["labeled"] for r in records] == [30, 40, 50] and [r["query_size"] for r in records] == [30, 10, 10]
    assert all(r["settings"]["subset_size"] == "4x" and r["settings"]["initial_labels"] == 30 for r in records)


def test_fresh_model_trains_from_the_initial_weights_every_cycle(tiny_mnist, tmp_path, monkeypatch):
    import fkal.loop as loop
    starts = {}
    real_train = loop.train

    def spy(model, *args, **kwargs):
        starts.setdefault(kwargs.get("desc"), []).append(next(model.parameters()).detach().clone())
        return real_train(model, *args, **kwargs)
    monkeypatch.setattr(loop, "train", spy)
    for mode in ("fresh", "warm"):
        starts.clear()
        assert main(mnist_args(tiny_mnist, tmp_path / mode, "--only", "random", "--model-per-cycle", mode)) == 0
        first = [starts[f"train b={b} e0"][0] for b in (1, 2, 3)]
        same = [torch.equal(first[0], w) for w in first[1:]]
        assert same == ([True, True] if mode == "fresh" else [False, False]), mode


def test_loss_module_on_every_method(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    assert main(mnist_args(tiny_mnist, out, "--only", "random", "coreset", "--loss-module-all", "1",
                           "--initial-labels", "20")) == 0
    records, _ = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert len(records) == 6 and all(r["settings"]["loss_module_all"] == 1 for r in records)
    assert all(r["settings"]["options"] == {"lloss_cutoff": 0.6, "lloss_weight": 1.0} for r in records)
    for name in ("random", "coreset"):
        state = torch.load(out / "MNIST" / "run0" / "ir4" / "random" / name / "state_b03.pt")
        assert any(k.startswith("loss_module.") for k in state["models"][0])
    # the initial set is the same for every configuration of a run
    firsts = [torch.load(out / "MNIST" / "run0" / "ir4" / "random" / n / "state_b01.pt")["labeled_at"]
              for n in ("random", "coreset")]
    assert torch.equal(firsts[0], firsts[1])


# ----------------------------------------------------------------------------------------------------------------
# End to end: CIFAR-10 x100, CIFAR-100 and Caltech-101 under the protocol, completed and resumed
# ----------------------------------------------------------------------------------------------------------------
TINY_VAE = ["--vaal-width", "4", "--vaal-batch", "8", "--vaal-latent", "4", "--vaal-disc-hidden", "8",
            "--vaal-disc-layers", "1", "--tavaal-epochs", "1", "--vaal-epochs", "1"]


def tiny_protocol(dataset: str, root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", dataset, "--protocol", "tavaal", "--data-root", str(root), "--out", str(out),
            "--run-stop", "1", "--epochs", "1", "--batch-size", "8", "--eval-batch", "64", "--no-progress",
            *TINY_VAE, *extra]


def completes_and_resumes(argv: list[str], out: Path, folder: str, configs: list[str], ir: str) -> list[dict]:
    """Two iterations, then the same command with three: only the third is added; a third call adds nothing."""
    assert main(argv + ["--iterations", "2", "--only", *configs]) == 0
    results = out / folder / "run0" / "results.jsonl"
    first, _ = read_jsonl(results)
    assert len(first) == 2 * len(configs)
    assert main(argv + ["--iterations", "3", "--only", *configs]) == 0
    assert main(argv + ["--iterations", "3", "--only", *configs]) == 0
    records, warnings = read_jsonl(results)
    assert not warnings and records[:len(first)] == first and len(records) == 3 * len(configs)
    assert sorted((r["config"], r["iteration"]) for r in records) == sorted((c, b) for c in configs for b in (1, 2, 3))
    assert all(r["protocol"] == "tavaal" and r["settings"]["protocol"] == "tavaal" for r in records)
    labeled = [torch.load(out / folder / "run0" / f"ir{ir}" / "random" / c / "state_b01.pt")["labeled_at"]
               for c in configs]
    assert all(torch.equal(labeled[0], other) for other in labeled[1:])     # one initial set for every method
    return records


def test_cifar10_x100_under_the_protocol(tmp_path):
    root = write_cifar10(tmp_path / "data", per_batch=200, n_test=10)      # 100 train images per class
    out = tmp_path / "out"
    argv = tiny_protocol("cifar10", root, out, "--imbalance-ratios", "100", "--initial-labels", "8",
                         "--pool-size", "4", "--subset-size", "12")
    records = completes_and_resumes(argv, out, "CIFAR10", ["random", "tavaal"], "100")
    split = np.load(out / "CIFAR10" / "run0" / "ir100" / "split.npz")
    counts = np.bincount(split["pool_labels"], minlength=10)
    assert counts.tolist() == [1, 100] * 5                                    # the code's rule: 100 / 100 = 1
    assert all(r["pool_size"] == 505 and r["labeled"] == 8 + 4 * (r["iteration"] - 1) for r in records)
    assert all(r["rare_classes"] == [0, 2, 4, 6, 8] for r in records)


def test_cifar100_under_the_protocol(tmp_path):
    root = write_cifar100(tmp_path / "data")
    out = tmp_path / "out"
    argv = tiny_protocol("cifar100", root, out, "--initial-labels", "8", "--pool-size", "4", "--subset-size", "3x")
    records = completes_and_resumes(argv, out, "CIFAR100", ["random", "lloss-v2"], "1")
    assert all(len(r["selected_class_counts"]) == 100 and r["pool_size"] == 300 for r in records)


def test_caltech101_under_the_protocol(tmp_path, monkeypatch):
    spec = DATASETS["caltech101"]
    monkeypatch.setitem(DATASETS, "caltech101", replace(spec, load=replace(spec.load, image_size=32, workers=1)))
    root = write_caltech(tmp_path / "data")
    out = tmp_path / "out"
    argv = tiny_protocol("caltech101", root, out, "--initial-labels", "12", "--pool-size", "6",
                         "--vaal-image-size", "32")
    records = completes_and_resumes(argv, out, "Caltech101", ["random", "coreset"], "1")
    manifest = json.loads((out / "Caltech101" / "dataset_split.json").read_text())
    assert len(manifest["train"]) == records[0]["pool_size"] == 43 and len(manifest["test"]) == 5
    assert all(len(r["per_class_accuracy"]) == 101 for r in records)


# A configuration name per acquisition of the registry (an acquisition missing here runs under its bare name).
PROTOCOL_NAMES = {"pcc": "pcc-L768", "pfk": "pfk-phat-L768", "pfk-sum": "pfk-sum-phat-L768", "varR": "varR-K2",
                  "entropy": "entropy-K2", "bald": "bald-K2", "std": "std-E2-K2", "similar": "similar-phat-L768"}


def protocol_name(acquisition: str) -> str:
    """A small configuration of ``acquisition`` for the CIFAR ResNet: the table's, else its spec's example with the
    ResNet's L = 768 where the example names an L."""
    if acquisition in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[acquisition]
    return re.sub(r"-L\d+", "-L768", registry.spec_of(acquisition).example_case.config)


@pytest.mark.e2e
def test_every_acquisition_of_the_registry_runs_under_the_protocol(tmp_path):
    """One query of each acquisition after the initial random set, on the protocol's subset; the Fisher-kernel
    method and SIMILAR with the validation set they need (--val-size); TypiClust on the task model's features
    (its rotation-pretrained path is tested in test_typiclust.py)."""
    root = write_cifar10(tmp_path / "data", per_batch=40, n_test=10)       # 200 train images
    out = tmp_path / "out"
    names = [protocol_name(a) for a in registry.ACQUISITIONS]
    argv = tiny_protocol("cifar10", root, out, "--imbalance-ratios", "1", "--val-size", "20", "--initial-labels",
                         "10", "--pool-size", "4", "--subset-size", "3x", "--iterations", "2",
                         "--typiclust-features", "current", "--only", *names)
    assert main(argv) == 0
    records, _ = read_jsonl(out / "CIFAR10" / "run0" / "results.jsonl")
    assert sorted((r["config"], r["iteration"]) for r in records) == sorted((n, b) for n in names for b in (1, 2))
    assert all(r["labeled"] == (10 if r["iteration"] == 1 else 14) and r["pool_size"] == 180 for r in records)
    initial = {n: torch.load(out / "CIFAR10" / "run0" / "ir1" / "random" / n / "state_b02.pt")["labeled_at"]
               for n in names}
    first = initial[names[0]] == 1
    assert all(torch.equal(labeled_at == 1, first) for labeled_at in initial.values())  # one initial set for all
    assert all(int((labeled_at == 2).sum()) == 4 for labeled_at in initial.values())


def test_every_acquisition_of_the_registry_is_known_to_reporting():
    from fkal.reporting.names import ACQUISITIONS as REPORTED
    assert set(registry.ACQUISITIONS) <= set(REPORTED)
    assert parse_config("lloss-v2", registry.ACQUISITIONS).acquisition == "lloss-v2"


# ----------------------------------------------------------------------------------------------------------------
# TA-VAAL as its code runs it: the raw score for the discriminator, r uniform at the first iteration, the length
# ----------------------------------------------------------------------------------------------------------------
def test_vae_training_length_from_epochs_is_the_codes():
    from vaal.train import iterations_for
    assert iterations_for(300, None, 1000, 10_000, 128) == 300
    assert iterations_for(300, 100, 1000, 10_000, 128) == 8593          # int((1000 * 1 + 10000) * 100 / 128)
    assert iterations_for(300, 100, 5000, 10_000, 128) == 11718


def test_first_iteration_gives_uniform_ranks_then_the_feeds_own(monkeypatch):
    from vaal.models import VAE, Discriminator
    from vaal.train import AdversarySchedule, ImageFeed, train_adversary
    src = TensorSource(torch.randint(0, 255, (40, 1, 16, 16), dtype=torch.uint8), np.zeros(40), (0.5,), (0.25,))
    lab = ImageFeed(src, np.arange(10), 16, ranks=torch.full((10,), 0.9), disc_ranks=torch.full((10,), 7.0))
    unl = ImageFeed(src, np.arange(10, 40), 16, ranks=torch.full((30,), 0.9), disc_ranks=torch.full((30,), 7.0))
    torch.manual_seed(0)
    vae, disc = VAE(1, 4, 4, 16, rank_dim=1), Discriminator(4, 8, 1, rank_dim=1)
    seen = {"disc": [], "dec": []}
    real_logits, real_decode = disc.logits, vae.decode
    monkeypatch.setattr(disc, "logits", lambda mu, r=None: seen["disc"].append(r.clone()) or real_logits(mu, r))
    monkeypatch.setattr(vae, "decode", lambda z, r=None: seen["dec"].append(r.clone()) or real_decode(z, r))
    for first_uniform in (True, False):
        seen["disc"].clear(), seen["dec"].clear()
        train_adversary(vae, disc, lab, unl, AdversarySchedule(3, 8, vae_steps=1, disc_steps=1, kl="mean",
                                                               first_uniform=first_uniform),
                        torch.device("cpu"), torch.Generator().manual_seed(0), progress=False)
        # per iteration: 2 decoder calls (labeled, unlabeled), 4 discriminator calls (2 VAE step, 2 own step)
        first_disc, later_disc = torch.cat(seen["disc"][:4]), torch.cat(seen["disc"][4:])
        first_dec, later_dec = torch.cat(seen["dec"][:2]), torch.cat(seen["dec"][2:])
        assert torch.all(later_disc == 7.0) and torch.all(later_dec == 0.9)      # raw r to D, sigmoid(r) to decoder
        if first_uniform:
            assert torch.all((first_disc >= 0) & (first_disc < 1)) and len(first_disc.unique()) > 2
            assert torch.equal(first_dec, torch.cat(seen["disc"][:2]))          # the same draws for both
        else:
            assert torch.all(first_disc == 7.0) and torch.all(first_dec == 0.9)


@pytest.mark.parametrize("disc_rank", ["raw", "sigmoid"])
def test_tavaal_gives_the_discriminator_the_raw_or_the_normalized_score(query_ctx, monkeypatch, disc_rank):
    import vaal.acquisitions as va
    from vaal.train import predicted_losses
    feeds = []
    real = va.ImageFeed
    monkeypatch.setattr(va, "ImageFeed", lambda *a, **k: feeds.append(a) or real(*a, **k))
    options = {"tavaal_iterations": 2, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4, "vaal_disc_hidden": 8,
               "vaal_disc_layers": 1, "tavaal_disc_rank": disc_rank, "tavaal_first_uniform": 1}
    ctx = query_ctx("tavaal", wrapped=True, options=options)
    picked = registry.ACQUISITIONS["tavaal"](ctx).indices
    assert len(set(picked.tolist())) == ctx.budget and np.isin(picked, ctx.unlabeled).all()
    pool = ctx.data.split.pool
    raw = predicted_losses(ctx.models[0], ctx.data.pool_source, pool[ctx.labeled], ctx.device, 64)
    (_, idx, _, ranks, disc_ranks) = feeds[0]
    np.testing.assert_array_equal(idx, pool[ctx.labeled])
    torch.testing.assert_close(ranks, torch.sigmoid(raw))
    torch.testing.assert_close(disc_ranks, raw if disc_rank == "raw" else torch.sigmoid(raw))


# ----------------------------------------------------------------------------------------------------------------
# Reporting: improvement over random, paired by run
# ----------------------------------------------------------------------------------------------------------------
def record(config, run, labeled, accuracy, **settings):
    return {"config": config, "dataset": "cifar10", "run": run, "seed": run, "imbalance_ratio": 100.0,
            "unsupervised": 0, "iteration": labeled // 1000, "labeled": labeled, "pool_size": 25_250,
            "test_accuracy": accuracy, "ensemble_test_accuracy": None, "per_class_accuracy": [accuracy] * 10,
            "selected_class_counts": [100] * 10, "pseudo_label_accuracy": None, "query_seconds": 1.0,
            "train_seconds": 2.0, "settings": {"config": config, "seed": run, "protocol": "tavaal", **settings}}


def test_improvement_over_random_is_paired_by_run():
    from fkal import reporting as report
    lines = [record("random", 0, 1000, 40.0), record("random", 0, 2000, 50.0),
             record("random", 1, 1000, 44.0), record("random", 1, 2000, 52.0),
             record("tavaal", 0, 1000, 41.0), record("tavaal", 0, 2000, 55.0),
             record("tavaal", 1, 1000, 47.0), record("tavaal", 1, 2000, 53.0),
             record("tavaal", 2, 1000, 90.0),                                    # no random run 2: left out
             record("coreset", 0, 1000, 45.0, epochs=5)]                         # other settings: no baseline
    groups = report.group_records(lines)
    key = next(k for k in groups if k.config == "tavaal")
    base = report.baseline_key(groups, key)
    assert base is not None and base.config == "random"
    curve = report.improvement_curve(groups[key], groups[base])
    assert [(p.labeled, p.mean, p.runs) for p in curve] == [(1000, 2.0, 2), (2000, 3.0, 2)]   # (1+3)/2, (5+1)/2
    assert curve[0].std == pytest.approx(np.std([1.0, 3.0], ddof=1)) and curve[1].std == pytest.approx(np.std([5.0, 1.0], ddof=1))
    # unpaired, the mean gain at 1000 labels would read (41 + 47 + 90) / 3 - 42 = 17.3
    rows, notes = report.improvement_table(groups)
    assert {r.config for r in rows} == {"tavaal"} and len(notes) == 1 and "coreset" in notes[0]
    text = report.format_improvement_markdown(rows)
    assert "+2.00 ± 1.41 (2)" in text and "+3.00 ± 2.83 (2)" in text


def test_run_plot_draws_the_improvement_and_band_figures(tmp_path):
    from fkal.reporting import cli as run_plot
    folder = tmp_path / "CIFAR10" / "run0"
    folder.mkdir(parents=True)
    lines = [record(c, 0, n, a, rare=[0, 2]) for c, n, a in
             (("random", 1000, 40.0), ("random", 2000, 50.0), ("tavaal", 1000, 42.0), ("tavaal", 2000, 54.0))]
    for line in lines:
        line["rare_classes"] = [0, 2, 4, 6, 8]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run_plot.main(["--dataset", "cifar10", "--out", str(tmp_path), "--save", "--figures",
                          str(tmp_path / "figs")]) == 0
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"improvement_IR100.png", "accuracy_band_IR100.png", "improvement.csv", "cost_IR100.png",
            "selection_summary_IR100.png"} <= names
    assert "tavaal,100.0,0,2000,4.0" in (tmp_path / "figs" / "improvement.csv").read_text()
