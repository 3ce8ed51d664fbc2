"""The biased split of one run (DESIGN section 3) and ``ALData``, everything a run reads.

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
               noise_ratio: float = 0.0, pool_size: Optional[int] = None, val_size: Optional[int] = None) -> Split:
    """The seeded split of DESIGN section 3.

    1. A permutation of the train source gives D_v (``val_size``) and the pool (``pool_size``), unless the
       dataset has its own validation source.
    2. Imbalance ("grouped"): common classes keep all their pool images; the rare classes together keep
       ``int(n_common / IR)`` images drawn at random.
    3. Label noise: a ``noise_ratio`` share of the pool gets a random wrong label.
    """
    check_request(spec, imbalance_ratio, noise_ratio)
    pool_size = spec.pool_size if pool_size is None else pool_size
    val_size = spec.val_size if val_size is None else val_size
    rng = np.random.default_rng(seed)
    n_train = len(raw.train)
    if raw.val is None:
        if pool_size + val_size > n_train:
            raise UserError(f"a pool of {pool_size} and a validation set of {val_size} need {pool_size + val_size} "
                            f"{spec.name} train images, but only {n_train} exist: lower --train-size or --val-size")
        perm = rng.permutation(n_train)
        val, pool = np.sort(perm[:val_size]), perm[val_size:val_size + pool_size]
    else:
        if pool_size > n_train or val_size > len(raw.val):
            raise UserError(f"the request (pool {pool_size}, validation {val_size}) exceeds the {spec.name} data "
                            f"({n_train} train, {len(raw.val)} val images): lower --train-size or --val-size")
        pool = rng.permutation(n_train)[:pool_size]
        val = np.sort(rng.permutation(len(raw.val))[:val_size])
    labels = raw.train.labels[pool]
    rare_classes = tuple(int(c) for c in spec.rare_classes) or None
    if imbalance_ratio > 1:
        pool, rare_classes = _decimate(pool, labels, spec, imbalance_ratio, rng)
    pool = np.sort(pool)
    pool_labels = raw.train.labels[pool].copy()
    if noise_ratio > 0:
        noisy = rng.choice(len(pool), size=int(round(noise_ratio * len(pool))), replace=False)
        shift = rng.integers(1, spec.num_classes, size=len(noisy))
        pool_labels[noisy] = (pool_labels[noisy] + shift) % spec.num_classes
    return Split(pool=pool, pool_labels=pool_labels, val=val, seed=seed, imbalance_ratio=float(imbalance_ratio),
                 noise_ratio=float(noise_ratio), rare_classes=rare_classes)


def _decimate(pool: np.ndarray, labels: np.ndarray, spec: DatasetSpec, ir: float,
              rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
    """The pool after the imbalance, and the rare classes it decimated."""
    rare = np.isin(labels, spec.rare_classes)
    if spec.imbalance == "grouped":
        keep = int((~rare).sum() / ir)
        kept_rare = rng.choice(np.flatnonzero(rare), size=keep, replace=False)
        return np.concatenate([pool[~rare], pool[kept_rare]]), tuple(int(c) for c in spec.rare_classes)
    if spec.imbalance == "per_class":
        rare_classes = rare_classes_of(spec, labels, rng)
        kept = [pool[~np.isin(labels, rare_classes)]]
        for c in rare_classes:
            members = np.flatnonzero(labels == c)
            kept.append(pool[rng.choice(members, size=int(len(members) / ir), replace=False)])
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
