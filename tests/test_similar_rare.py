"""SIMILAR's rare-class split as a named imbalance rule (``--imbalance-rule similar-rare``): the last five classes
each keep int(n_c / IR) of their n_c pool images, drawn at random; the other classes keep all of theirs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fkal.cli import build_parser, main
from fkal.data import DATASETS, RawData, TensorSource, make_split
from fkal.data.split import IMBALANCE_RULES, Split, rule_rare_classes
from fkal.errors import UserError

# Unequal classes, as MNIST's: class c has 100 + 7c train images (100, 107, ..., 163), shuffled.
COUNTS = 100 + 7 * np.arange(10)
LABELS = np.random.default_rng(3).permutation(np.repeat(np.arange(10), COUNTS))


def raw_of(labels: np.ndarray) -> RawData:
    """1x1 images with the given train labels (the split reads only the labels)."""
    def source(lab):
        return TensorSource(torch.zeros(len(lab), 1, 1, 1, dtype=torch.uint8), lab, (0.5,), (0.25,))
    return RawData(train=source(labels), test=source(np.arange(10)))


def similar_split(ir: float, seed: int = 0, train_size: int = 0, val_size: int = 0, dataset: str = "mnist") -> Split:
    spec = DATASETS[dataset]
    spec = replace(spec, imbalance="similar-rare", rare_classes=rule_rare_classes("similar-rare", spec.num_classes))
    return make_split(spec, raw_of(LABELS), seed, ir, train_size=train_size, val_size=val_size)


def test_the_last_five_classes_each_keep_a_tenth_of_their_images():
    split = similar_split(10)
    counts = np.bincount(split.pool_labels, minlength=10)
    # 135 // 10, 142 // 10, 149 // 10, 156 // 10, 163 // 10
    assert counts.tolist() == [100, 107, 114, 121, 128, 13, 14, 14, 15, 16]
    assert len(split.pool) == 570 + 72 and split.rare_classes == (5, 6, 7, 8, 9)
    assert rule_rare_classes("similar-rare", 10) == (5, 6, 7, 8, 9)


def test_counts_are_of_the_pool_after_the_validation_set_and_the_rare_images_drawn_at_random():
    before = similar_split(1, seed=4, train_size=800, val_size=200)          # the same draw of D_v and D, unreduced
    after = similar_split(10, seed=4, train_size=800, val_size=200)
    n_before = np.bincount(before.pool_labels, minlength=10)
    expected = np.where(np.arange(10) >= 5, n_before // 10, n_before)
    assert np.bincount(after.pool_labels, minlength=10).tolist() == expected.tolist()
    np.testing.assert_array_equal(after.val, before.val)                   # D_v is left balanced
    assert np.isin(after.pool, before.pool).all()
    common = before.pool[before.pool_labels < 5]
    np.testing.assert_array_equal(after.pool[after.pool_labels < 5], common)   # common classes keep every image
    other = similar_split(10, seed=5, train_size=800, val_size=200)
    assert not np.array_equal(after.pool[after.pool_labels >= 5], other.pool[other.pool_labels >= 5])


def test_the_rule_needs_more_than_five_classes():
    with pytest.raises(UserError, match="more than 5 classes"):
        rule_rare_classes("similar-rare", 5)
    assert rule_rare_classes("similar-rare", 100) == tuple(range(95, 100))


def test_the_option_is_named_in_help_and_reaches_the_split(tiny_mnist, tmp_path, capsys):
    text = build_parser().format_help()
    assert "similar-rare" in text and "similar-rare" in IMBALANCE_RULES
    out = tmp_path / "out"
    args = ["--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1", "--train-size", "400",
            "--val-size", "100", "--unsup-epochs", "1", "--no-progress", "--unsupervised", "0", "--initial",
            "--imbalance-rule", "similar-rare"]
    assert main(args + ["--imbalance-ratios", "1", "10"]) == 0
    before = Split.load(out / "MNIST" / "run0" / "ir1" / "split.npz")
    after = Split.load(out / "MNIST" / "run0" / "ir10" / "split.npz")
    n_before = np.bincount(before.pool_labels, minlength=10)
    expected = np.where(np.arange(10) >= 5, n_before // 10, n_before)
    assert np.bincount(after.pool_labels, minlength=10).tolist() == expected.tolist()
    assert after.rare_classes == (5, 6, 7, 8, 9)
    assert after.settings["imbalance"]["rule"] == "similar-rare"
    grouped = tmp_path / "grouped"                                  # MNIST's own rule: classes 5-9 together
    assert main([a if a != str(out) else str(grouped) for a in args[:-2]] + ["--imbalance-ratios", "10"]) == 0
    kept = Split.load(grouped / "MNIST" / "run0" / "ir10" / "split.npz")
    assert kept.settings["imbalance"]["rule"] == "grouped"
    assert np.bincount(kept.pool_labels, minlength=10)[5:].sum() == n_before[:5].sum() // 10
