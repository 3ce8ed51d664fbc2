"""The biased split of one run (docs/protocol.md, "The bias") and ``ALData``, everything a run reads.

Everything an active-learning run needs is an index array into a stored source: the pool D, the validation set
D_v and the test set, so the labeled / unlabeled bookkeeping is index arithmetic.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from ..io import save_npz
from .protocol import DatasetSpec
from .sources import RawData, TensorSource


@dataclass
class Split:
    """Index arrays of one run: the biased pool D and the validation set D_v.

    pool:         [N] indices into ``RawData.train``
    pool_labels:  [N] the labels an annotator returns for them (after label noise, if any)
    val:          [M] indices into the validation source (``RawData.val`` or ``RawData.train``)
    rare_classes: the classes the imbalance decimated (the protocol's fixed ones, or those the split's seed drew);
                  None where they are not known (random rare classes at IR = 1)
    settings:     what made the split (``fkal.settings``), compared when a run folder is reused
    """

    pool: np.ndarray
    pool_labels: np.ndarray
    val: np.ndarray
    seed: int
    imbalance_ratio: float
    noise_ratio: float = 0.0
    rare_classes: Optional[tuple[int, ...]] = None
    settings: Optional[dict] = None

    def save(self, path: Path) -> None:
        meta = json.dumps({"seed": self.seed, "imbalance_ratio": self.imbalance_ratio,
                           "noise_ratio": self.noise_ratio, "rare_classes": self.rare_classes,
                           "settings": self.settings})
        save_npz(path, pool=self.pool, pool_labels=self.pool_labels, val=self.val, meta=np.array(meta))

    @classmethod
    def load(cls, path: Path, raw: Optional[RawData] = None) -> "Split":
        """The split saved at ``path``; a damaged file, or with ``raw`` one whose indices do not fit that data (a
        split of other data), is a ``UserError`` that names it and the fix."""
        fix = "delete it and run the same command again to make it anew (it is drawn from the run's seed)"
        try:
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                pool, pool_labels, val = f["pool"], f["pool_labels"], f["val"]
            if not isinstance(meta, dict):
                raise ValueError("its meta data is not a JSON object")
            rare = meta.pop("rare_classes", None)
            split = cls(pool=pool, pool_labels=pool_labels, val=val,
                        rare_classes=None if rare is None else tuple(rare), **meta)
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot read {path}: the file is damaged ({type(e).__name__}: {e}); {fix}") from None
        if raw is not None:
            problem = split.misfit(raw)
            if problem:
                raise UserError(f"{path} does not fit the data: {problem} (a split of other data?); {fix}")
        return split

    def misfit(self, raw: RawData) -> Optional[str]:
        """What makes the split's index arrays impossible for ``raw`` (None when they fit)."""
        sources = {"pool": (self.pool, len(raw.train)),
                   "val": (self.val, len(raw.train if raw.val is None else raw.val))}
        for name, (idx, n) in sources.items():
            if idx.ndim != 1 or idx.dtype.kind not in "iu":
                return f"its {name} is not a list of indices"
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                return f"its {name} holds indices outside 0-{n - 1}"
        if self.pool_labels.shape != self.pool.shape:
            return f"{len(self.pool_labels)} pool labels for {len(self.pool)} pool images"
        return None


def check_request(spec: DatasetSpec, imbalance_ratio: float, noise_ratio: float = 0.0) -> None:
    if not imbalance_ratio >= 1:
        raise UserError(f"imbalance ratio {imbalance_ratio} is below 1: it is n(common classes) / n(rare classes), "
                        "use 1 for no imbalance or a larger number such as 100")
    if not 0.0 <= noise_ratio < 1.0:
        raise UserError(f"label noise ratio {noise_ratio} must be in [0, 1)")


def make_split(spec: DatasetSpec, raw: RawData, seed: int, imbalance_ratio: float,
               noise_ratio: float = 0.0, train_size: Optional[int] = None, val_size: Optional[int] = None) -> Split:
    """The seeded split of the protocol (docs/protocol.md, "The bias").

    1. A permutation of the train source gives D_v (``val_size``) and the pool (``train_size``; 0: every train
       image not in D_v), unless the dataset has its own validation source.
    2. Imbalance by the spec's rule (``IMBALANCE_RULES``), e.g. "grouped": common classes keep all their pool
       images; the rare classes together keep ``int(n_common / IR)`` images drawn at random.
    3. Label noise: a ``noise_ratio`` share of the pool gets a random wrong label.
    """
    check_request(spec, imbalance_ratio, noise_ratio)
    train_size = spec.train_size if train_size is None else train_size
    val_size = spec.val_size if val_size is None else val_size
    rng = np.random.default_rng(seed)
    n_train = len(raw.train)
    if train_size == 0:                                      # the whole train source (less D_v)
        train_size = n_train - (val_size if raw.val is None else 0)
    if imbalance_ratio > 1 and not spec.rare_classes and not spec.rare_share:
        raise UserError(f"{spec.name} names no rare classes to reduce: use --imbalance-ratios 1 (Caltech-101 is "
                        "imbalanced as it is)")
    if raw.val is None:
        if train_size + val_size > n_train:
            raise UserError(f"a pool of {train_size} and a validation set of {val_size} need {train_size + val_size} "
                            f"{spec.name} train images, but only {n_train} exist: lower --train-size or --val-size")
        perm = rng.permutation(n_train)
        val, pool = np.sort(perm[:val_size]), perm[val_size:val_size + train_size]
    else:
        if train_size > n_train or val_size > len(raw.val):
            raise UserError(f"the request (pool {train_size}, validation {val_size}) exceeds the {spec.name} data "
                            f"({n_train} train, {len(raw.val)} val images): lower --train-size or --val-size")
        pool = rng.permutation(n_train)[:train_size]
        val = np.sort(rng.permutation(len(raw.val))[:val_size])
    labels = raw.train.labels[pool]
    rare_classes = tuple(int(c) for c in spec.rare_classes) or None
    if imbalance_ratio > 1:
        pool, rare_classes = _decimate(pool, labels, spec, imbalance_ratio, rng, raw.train.labels)
    pool = np.sort(pool)
    pool_labels = raw.train.labels[pool].copy()
    if noise_ratio > 0:
        noisy = rng.choice(len(pool), size=int(round(noise_ratio * len(pool))), replace=False)
        shift = rng.integers(1, spec.num_classes, size=len(noisy))
        pool_labels[noisy] = (pool_labels[noisy] + shift) % spec.num_classes
    return Split(pool=pool, pool_labels=pool_labels, val=val, seed=seed, imbalance_ratio=float(imbalance_ratio),
                 noise_ratio=float(noise_ratio), rare_classes=rare_classes)


# The imbalance rules by name (``DatasetSpec.imbalance``, ``--imbalance-rule``): which classes are reduced and how.
IMBALANCE_RULES = {
    "grouped": "the rare classes together keep int(n_common / IR) of their pool images, drawn at random (the "
               "Fisher-kernel paper: MNIST and SVHN classes 5-9)",
    "per_class": "each rare class keeps int(n_c / IR) of its n_c pool images, drawn at random",
    "tavaal-paper": "the first half of the classes (CIFAR-10: 0-4) each keep int(N_c / IR) images drawn at random, "
                    "N_c the class's images in the train source (5,000 for CIFAR-10: 500 at x10, 50 at x100; "
                    "TA-VAAL section 4.3)",
    "tavaal-code": "the even classes each keep their first int(N_c / IR) images in file order (50 of 5,000 at "
                   "x100: the TA-VAAL code's cifar10im, which has x100 only)",
    "similar-rare": "the last five classes (MNIST and CIFAR-10: 5-9) each keep int(n_c / IR) of their n_c pool "
                    "images, drawn at random: SIMILAR's rare-class split (Kothawade et al., NeurIPS 2021) with "
                    "--imbalance-ratios 10",
}
SIMILAR_RARE_COUNT = 5          # "similar-rare": how many classes are made rare


def rule_rare_classes(rule: str, num_classes: int) -> Optional[tuple[int, ...]]:
    """The classes a TA-VAAL or SIMILAR rule reduces (None for the rules that take the spec's ``rare_classes``)."""
    if rule == "tavaal-paper":
        return tuple(range(num_classes // 2))
    if rule == "tavaal-code":
        return tuple(range(0, num_classes, 2))
    if rule == "similar-rare":
        if num_classes <= SIMILAR_RARE_COUNT:
            raise UserError(f"imbalance rule similar-rare makes {SIMILAR_RARE_COUNT} classes rare and needs more "
                            f"than {SIMILAR_RARE_COUNT} classes (the dataset has {num_classes})")
        return tuple(range(num_classes - SIMILAR_RARE_COUNT, num_classes))
    if rule in IMBALANCE_RULES:
        return None
    raise UserError(f"unknown imbalance rule {rule!r}: choose one of {', '.join(IMBALANCE_RULES)}")


def _decimate(pool: np.ndarray, labels: np.ndarray, spec: DatasetSpec, ir: float,
              rng: np.random.Generator, source_labels: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The pool after the imbalance, and the rare classes it reduced. ``pool`` [N] train-source indices,
    ``labels`` [N] their classes, ``source_labels`` the classes of the whole train source."""
    rare = np.isin(labels, spec.rare_classes)
    if spec.imbalance == "grouped":
        keep = int((~rare).sum() / ir)
        kept_rare = rng.choice(np.flatnonzero(rare), size=keep, replace=False)
        return np.concatenate([pool[~rare], pool[kept_rare]]), tuple(int(c) for c in spec.rare_classes)
    if spec.imbalance in ("per_class", "similar-rare"):
        rare_classes = (rare_classes_of(spec, labels, rng) if spec.imbalance == "per_class"
                        else np.asarray(rule_rare_classes(spec.imbalance, spec.num_classes)))
        kept = [pool[~np.isin(labels, rare_classes)]]
        for c in rare_classes:
            members = np.flatnonzero(labels == c)
            kept.append(pool[rng.choice(members, size=int(len(members) / ir), replace=False)])
        return np.concatenate(kept), tuple(int(c) for c in rare_classes)
    if spec.imbalance in ("tavaal-paper", "tavaal-code"):
        rare_classes = rule_rare_classes(spec.imbalance, spec.num_classes)
        totals = np.bincount(source_labels, minlength=spec.num_classes)          # N_c over the train source
        kept = [pool[~np.isin(labels, rare_classes)]]
        for c in rare_classes:
            members = pool[labels == c]
            keep = min(int(totals[c] / ir), len(members))
            if spec.imbalance == "tavaal-paper":
                kept.append(rng.choice(members, size=keep, replace=False))
            else:                                                              # first in file order
                kept.append(np.sort(members)[:keep])
        return np.concatenate(kept), tuple(int(c) for c in rare_classes)
    raise ValueError(f"unknown imbalance kind {spec.imbalance!r}")


def rare_classes_of(spec: DatasetSpec, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The classes a "per_class" imbalance decimates: the spec's fixed ``rare_classes``, or else
    ``int(rare_share * classes present)`` of the classes present in ``labels`` drawn with the split's ``rng``."""
    if spec.rare_classes:
        return np.asarray(spec.rare_classes)
    present = np.unique(labels)
    return np.sort(rng.choice(present, size=int(spec.rare_share * len(present)), replace=False))


@dataclass
class ALData:
    """Everything a run reads: the sources and the split."""

    spec: DatasetSpec
    raw: RawData
    split: Split

    @property
    def pool_source(self) -> TensorSource:
        return self.raw.train

    @property
    def val_source(self) -> TensorSource:
        return self.raw.train if self.raw.val is None else self.raw.val

    @property
    def val_labels(self) -> np.ndarray:
        return self.val_source.labels[self.split.val]

    @property
    def test_labels(self) -> np.ndarray:
        return self.raw.test.labels
