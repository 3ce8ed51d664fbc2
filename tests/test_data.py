import numpy as np
import torch
import pytest

from fkal.cli import main
from fkal.data import DATASETS, get_spec, make_split
from fkal.data.mnist import load_mnist
from fkal.errors import UserError

MNIST = DATASETS["mnist"]


def test_idx_files_load_through_torchvision(tiny_mnist):
    raw = load_mnist(str(tiny_mnist), download=False)
    assert raw.train.images.shape == (600, 1, 28, 28) and raw.test.images.shape == (200, 1, 28, 28)
    x = raw.train.get(np.arange(5))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, 0, 0, 0].item(), (raw.train.images[0, 0, 0, 0] / 255 - 0.1307) / 0.3081, rtol=1e-5)


def test_split_sizes_disjoint_and_imbalance(tiny_mnist):
    raw = load_mnist(str(tiny_mnist), download=False)
    split = make_split(MNIST, raw, seed=3, imbalance_ratio=10, train_size=500, val_size=100)
    assert len(split.val) == 100 and len(np.intersect1d(split.pool, split.val)) == 0
    labels = raw.train.labels[split.pool]
    n_common = (labels < 5).sum()
    assert n_common == (raw.train.labels[np.setdiff1d(np.arange(600), split.val)] < 5).sum()
    assert (labels >= 5).sum() == int(n_common / 10)
    np.testing.assert_array_equal(split.pool_labels, labels)


def test_label_noise_flips_the_requested_share(tiny_mnist):
    raw = load_mnist(str(tiny_mnist), download=False)
    split = make_split(MNIST, raw, seed=0, imbalance_ratio=1, noise_ratio=0.2, train_size=500, val_size=100)
    wrong = split.pool_labels != raw.train.labels[split.pool]
    assert wrong.sum() == 100


def test_split_is_seeded(tiny_mnist):
    raw = load_mnist(str(tiny_mnist), download=False)
    a = make_split(MNIST, raw, 1, 100, train_size=500, val_size=100)
    b = make_split(MNIST, raw, 1, 100, train_size=500, val_size=100)
    c = make_split(MNIST, raw, 2, 100, train_size=500, val_size=100)
    np.testing.assert_array_equal(a.pool, b.pool)
    assert not np.array_equal(a.val, c.val)


def test_split_save_load_roundtrip(tiny_mnist, tmp_path):
    from fkal.data import Split
    raw = load_mnist(str(tiny_mnist), download=False)
    a = make_split(MNIST, raw, 1, 100, train_size=500, val_size=100)
    a.save(tmp_path / "s.npz")
    b = Split.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(a.pool, b.pool)
    assert (b.seed, b.imbalance_ratio) == (1, 100.0)


@pytest.mark.parametrize("argv, message", [
    (["--imbalance-ratios", "0.5"], "--imbalance-ratios: must be at least 1 (got 0.5)"),
    (["--train-size", "590", "--val-size", "100"], "but only 600 exist"),
    (["--dataset", "cifar1000"], "unknown dataset 'cifar1000'"),
])
def test_impossible_requests_exit_2_with_one_line_and_write_nothing(tiny_mnist, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    rc = main(["--initial", "--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1"] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_missing_dataset_exit_2_says_where_to_put_it(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.mnist as tvm
    monkeypatch.setattr(tvm.MNIST, "mirrors", ["http://127.0.0.1:9/"])   # no network in tests
    out = tmp_path / "out"
    rc = main(["--initial", "--data-root", str(tmp_path / "nothing"), "--out", str(out), "--run-stop", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "MNIST/raw/train-images-idx3-ubyte" in err and "--data-root" in err
    assert not out.exists()


def test_unknown_dataset_error():
    with pytest.raises(UserError, match="choose one of"):
        get_spec("nope")


# ---------------------------------------------------------------------------------------------------------------
# Real MNIST (integration)
# ---------------------------------------------------------------------------------------------------------------
def test_real_mnist_split(mnist_root):
    raw = load_mnist(str(mnist_root), download=False)
    split = make_split(MNIST, raw, seed=0, imbalance_ratio=1)
    assert (len(split.pool), len(split.val), len(raw.test)) == (50_000, 10_000, 10_000)
    assert len(np.intersect1d(split.pool, split.val)) == 0
    biased = make_split(MNIST, raw, seed=0, imbalance_ratio=100)
    labels = raw.train.labels[biased.pool]
    n_common = int((labels < 5).sum())
    assert n_common == int((raw.train.labels[split.pool] < 5).sum())
    assert int((labels >= 5).sum()) == n_common // 100
    np.testing.assert_array_equal(biased.val, split.val)
    again = make_split(MNIST, raw, seed=0, imbalance_ratio=100)
    other = make_split(MNIST, raw, seed=1, imbalance_ratio=100)
    np.testing.assert_array_equal(again.pool, biased.pool)
    assert not np.array_equal(other.pool, biased.pool) and not np.array_equal(other.val, biased.val)
