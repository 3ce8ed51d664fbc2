"""SVHN, ImageNet and CIFAR-10 splits and imbalance, the batch-wise augmentation, and the ImageNet loader choice."""
from __future__ import annotations

import sys
import types
from dataclasses import replace

import numpy as np
import pytest
import torch

from fkal.data import folder, protocol, split, svhn
from fkal.cli import main
from fkal.data import DATASETS, RandomCropFlip, RawData, TensorSource, make_split
from fkal.errors import UserError
from test_pipelines import write_svhn

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official release")


def labels_only(labels) -> TensorSource:
    """A source whose images are 1x1 pixels: splits only read labels, so 600k of them cost nothing."""
    labels = np.asarray(labels)
    return TensorSource(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, (0.0,), (1.0,))


def counts(labels, n: int) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=n)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet: 500 random classes (half of those present) keep int(n_c / IR) each
# ----------------------------------------------------------------------------------------------------------------
def imagenet_like(classes: int = 20, seed: int = 0) -> tuple[protocol.DatasetSpec, RawData, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_class = rng.integers(30, 80, size=classes)                                  # uneven class sizes
    train = np.repeat(np.arange(classes), per_class)
    rng.shuffle(train)
    val = labels_only(np.repeat(np.arange(classes), 5))
    spec = replace(DATASETS["imagenet"], num_classes=classes)
    return spec, RawData(train=labels_only(train), test=val, val=val), per_class


@pytest.mark.parametrize("ir", [4.0, 10.0, 100.0])
def test_imagenet_per_class_decimation_is_exact(ir):
    spec, raw, per_class = imagenet_like()
    split = make_split(spec, raw, seed=3, imbalance_ratio=ir, train_size=len(raw.train), val_size=50)
    after = counts(split.pool_labels, 20)
    decimated = np.flatnonzero(after != per_class)
    kept = np.flatnonzero(after == per_class)
    assert len(decimated) + len(kept) == 20
    assert after[decimated].tolist() == [int(n / ir) for n in per_class[decimated]]
    assert len(decimated) == 10                                                       # half of the 20 classes
    np.testing.assert_array_equal(split.pool_labels, raw.train.labels[split.pool])
    assert len(np.unique(split.pool)) == len(split.pool) and len(split.val) == 50     # D_v stays as it is


def test_imagenet_rare_classes_come_from_the_seed():
    spec, raw, per_class = imagenet_like()

    def rare(seed):
        split = make_split(spec, raw, seed=seed, imbalance_ratio=100, train_size=len(raw.train), val_size=100)
        return tuple(np.flatnonzero(counts(split.pool_labels, 20) < per_class))

    assert len(rare(0)) == 10 and rare(0) == rare(0)                                   # half of them, repeatable
    assert len({rare(s) for s in range(5)}) > 1                                       # other seeds, other classes
    rng = np.random.default_rng(0)
    assert tuple(split.rare_classes_of(replace(spec, rare_share=0.5), np.repeat(np.arange(1000), 2), rng).shape) \
        == (500,)                                                                    # 500 of 1,000 classes


def test_imagenet_no_decimation_at_ir_1():
    spec, raw, per_class = imagenet_like()
    split = make_split(spec, raw, seed=0, imbalance_ratio=1, train_size=len(raw.train), val_size=100)
    assert counts(split.pool_labels, 20).tolist() == per_class.tolist()


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10 (TA-VAAL): the even classes keep int(n_c / IR) each
# ----------------------------------------------------------------------------------------------------------------
def test_cifar10_imbalance():
    spec = DATASETS["cifar10"]
    assert spec.imbalance == "per_class" and spec.rare_classes == (0, 2, 4, 6, 8)
    raw = RawData(train=labels_only(np.repeat(np.arange(10), 5000)), test=labels_only(np.arange(10)))
    split = make_split(spec, raw, seed=0, imbalance_ratio=100)
    before = counts(raw.train.labels[np.random.default_rng(0).permutation(50_000)[5_000:]], 10)
    after = counts(split.pool_labels, 10)
    assert after[1::2].tolist() == before[1::2].tolist() and after[0::2].tolist() == (before[0::2] // 100).tolist()
    assert len(split.val) == 5_000 and before.sum() == 45_000
    # the whole 50,000 as the pool (TA-VAAL's own setting): 5,000 odd, 50 even
    whole = RawData(train=raw.train, test=raw.test, val=labels_only(np.arange(10)))
    split = make_split(spec, whole, seed=0, imbalance_ratio=100, train_size=50_000, val_size=10)
    assert counts(split.pool_labels, 10).tolist() == [50, 5000] * 5


# ----------------------------------------------------------------------------------------------------------------
# SVHN: pool 500,000 / validation 104,388 of train + extra; a clear error when the data is smaller
# ----------------------------------------------------------------------------------------------------------------
def test_svhn_default_split_sizes():
    spec = DATASETS["svhn"]
    labels = np.arange(604_388) % 10
    raw = RawData(train=labels_only(labels), test=labels_only(np.arange(26_032) % 10))
    split = make_split(spec, raw, seed=0, imbalance_ratio=1)
    assert len(split.pool) == 500_000 and len(split.val) == 104_388
    assert len(np.intersect1d(split.pool, split.val)) == 0
    split = make_split(spec, raw, seed=0, imbalance_ratio=100)
    after = counts(split.pool_labels, 10)
    assert after[5:].sum() == after[:5].sum() // 100 and len(split.val) == 104_388


def test_svhn_smaller_than_the_split_is_a_clear_error(tmp_path, capsys):
    root = write_svhn(tmp_path / "data")
    raw = svhn.load_svhn(str(root), download=False)
    with pytest.raises(UserError, match="only 100 exist"):
        make_split(DATASETS["svhn"], raw, seed=0, imbalance_ratio=100)
    argv = ["--dataset", "svhn", "--data-root", str(root), "--out", str(tmp_path / "out"), "--initial",
            "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "500000" in err and "104388" in err and "--train-size or --val-size" in err
    assert len(err.strip().splitlines()) == 1


def test_protocol_numbers():
    svhn, imagenet, cifar = DATASETS["svhn"], DATASETS["imagenet"], DATASETS["cifar10"]
    assert (svhn.model, svhn.query_size, svhn.iterations, svhn.runs, svhn.default_L) == \
        ("resnet10-small", 1250, 10, 5, 768)
    assert (svhn.train.epochs, svhn.train.lr, svhn.train.batch_size, svhn.train.milestones) == (35, 0.1, 128, (15, 30))
    assert (imagenet.model, imagenet.query_size, imagenet.runs, imagenet.train.milestones) == \
        ("resnet18", 64_000, 1, (30, 50, 57))
    assert (cifar.model, cifar.query_size, cifar.train.epochs, cifar.train.milestones, cifar.train.weight_decay) == \
        ("resnet18-small", 1000, 200, (160,), 5e-4)
    assert {s.folder for s in (svhn, imagenet, cifar)} == {"SVHN", "ImageNet", "CIFAR10"}


# ----------------------------------------------------------------------------------------------------------------
# Batch-wise augmentation of in-memory sources
# ----------------------------------------------------------------------------------------------------------------
def test_random_crop_takes_windows_of_the_black_padded_image():
    torch.manual_seed(0)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    x = torch.randn(16, 3, 6, 6)
    out = RandomCropFlip(2, flip=True, mean=mean, std=std)(x)
    assert out.shape == x.shape
    black = (-torch.tensor(mean) / torch.tensor(std)).view(3, 1, 1)
    padded = black.expand(16, 3, 10, 10).clone()
    padded[:, :, 2:8, 2:8] = x
    flips = 0
    for i in range(16):
        windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
                   if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6].flip(2) if f
                                  else padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert windows, i
        flips += all(f for _, _, f in windows)
    assert 0 < flips < 16                                                            # some flipped, some not
    assert torch.equal(RandomCropFlip(0, flip=False, mean=mean, std=std)(x), x)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet loader choice (the DALI path itself needs a GPU and nvidia-dali)
# ----------------------------------------------------------------------------------------------------------------
CUDA1 = torch.device("cuda", 1)


def test_torchvision_loader_when_dali_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)                            # import fails
    assert folder.choose_backend("auto", CUDA1) == ("torchvision", "torchvision (DALI not installed)")
    with pytest.raises(UserError, match="requirements-dali.txt"):
        folder.choose_backend("dali", CUDA1)
    assert folder.choose_backend("torchvision", CUDA1)[0] == "torchvision"


def test_dali_loader_on_cuda_runs_only(monkeypatch):
    nvidia = types.ModuleType("nvidia")
    dali = types.ModuleType("nvidia.dali")
    nvidia.dali = dali
    monkeypatch.setitem(sys.modules, "nvidia", nvidia)
    monkeypatch.setitem(sys.modules, "nvidia.dali", dali)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)                   # a GPU is here, but ...
    for cpu_run in (None, torch.device("cpu")):                                     # ... a CPU run does not use it
        assert folder.choose_backend("auto", cpu_run) == ("torchvision", "torchvision (a CPU run)")
        with pytest.raises(UserError, match="--gpu"):
            folder.choose_backend("dali", cpu_run)
    assert folder.choose_backend("auto", CUDA1) == ("dali", "DALI (GPU decode on cuda:1)")
    assert folder.choose_backend("torchvision", CUDA1)[0] == "torchvision"


def test_loader_choice_is_printed_once(capsys, monkeypatch):
    monkeypatch.setattr(folder, "_announced", set())
    folder.announce("ImageNet loader: torchvision (DALI not installed)")
    folder.announce("ImageNet loader: torchvision (DALI not installed)")
    assert capsys.readouterr().out.count("ImageNet loader") == 1


def test_default_configurations_fit_the_models():
    from fkal.acquisitions.registry import ACQUISITIONS
    from fkal.config import parse_config
    from fkal.models import build_model, taps_for
    for spec in DATASETS.values():
        model = build_model(spec.model, spec.num_classes)
        taps_for(model, spec.default_L)
        for name in spec.configs:
            cfg = parse_config(name, ACQUISITIONS)
            if cfg.L is not None:
                taps_for(model, cfg.L)


def test_a_validation_set_drawn_from_the_test_set_is_named_where_its_labels_are_read():
    """ImageNet's val folder is D_v and the test set at once (the paper's protocol): a run that reads D_v's labels
    (--epoch-selection val, or an acquisition that matches D_v) says its test accuracy is not held out."""
    import warnings
    from types import SimpleNamespace

    from fkal.cli import _warn_if_validation_is_test
    from fkal.config import Config

    shared = object()
    raw = SimpleNamespace(val=shared, test=shared)
    spec = SimpleNamespace(name="imagenet")
    for configs, selection, warned in ([[Config("random")], "final", False], [[Config("random")], "val", True],
                                       [[Config("pfk", "phat", 768)], "final", True]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            _warn_if_validation_is_test(raw, spec, configs, SimpleNamespace(epoch_selection=selection))
        assert bool(seen) == warned
        if warned:
            assert "the test accuracy of these runs is not held out" in str(seen[0].message)
    with warnings.catch_warnings(record=True) as seen:           # a D_v of its own (MNIST): nothing to say
        warnings.simplefilter("always")
        _warn_if_validation_is_test(SimpleNamespace(val=None, test=shared), spec, [Config("pfk", "phat", 80)],
                                    SimpleNamespace(epoch_selection="val"))
    assert not seen
