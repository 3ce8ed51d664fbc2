"""Dataset registry, image sources, and the biased pool / validation split (DESIGN section 3).

A dataset is a small frozen dataclass of protocol numbers plus a loader. Everything an active-learning run
needs is an index array into a stored source: the pool D, the validation set D_v and the test set, so the
labeled / unlabeled bookkeeping is index arithmetic.
"""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from .errors import UserError
from .io import save_npz


# ----------------------------------------------------------------------------------------------------------------
# Protocol numbers
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """SGD with a step learning-rate schedule: lr x gamma at each milestone epoch."""

    epochs: int
    lr: float
    batch_size: int
    milestones: tuple[int, ...]
    momentum: float = 0.9
    weight_decay: float = 0.0
    gamma: float = 0.1

    def with_epochs(self, epochs: int) -> "Schedule":
        """The same schedule squeezed into ``epochs`` (milestones scaled, for quick tries)."""
        if epochs == self.epochs:
            return self
        scale = epochs / self.epochs
        milestones = tuple(sorted({max(1, round(m * scale)) for m in self.milestones if round(m * scale) < epochs}))
        return replace(self, epochs=epochs, milestones=milestones)


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between datasets: sizes, model, taps, protocol numbers and the loader."""

    name: str                       # command-line name, e.g. "mnist"
    folder: str                     # folder under --out, e.g. "MNIST"
    num_classes: int
    pool_size: int                  # |D| before the imbalance is applied
    val_size: int                   # |D_v|
    rare_classes: tuple[int, ...]   # classes decimated by the imbalance ratio
    model: str                      # builder name in fkal.models.MODELS
    train: Schedule                 # supervised training (each AL iteration, warm start)
    unsup: Schedule                 # rotation pretraining
    query_size: int                 # P, images added per iteration
    iterations: int                 # B
    runs: int
    default_L: int                  # descriptor length of the paper's best configuration
    load: Callable[[str, bool], "RawData"] = field(repr=False, compare=False, default=None)
    imbalance: str = "grouped"      # "grouped": rare classes together keep int(n_common / IR)


# ----------------------------------------------------------------------------------------------------------------
# Image sources
# ----------------------------------------------------------------------------------------------------------------
class TensorSource:
    """Images held in memory as uint8 ``[N, C, H, W]``; batches come out normalized as float32."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.augment = augment          # batch-wise training augmentation, [B, C, H, W] -> [B, C, H, W]
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.images = images.contiguous()
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def get(self, idx: np.ndarray) -> torch.Tensor:
        """Normalized images ``[len(idx), C, H, W]``."""
        x = self.images[torch.as_tensor(np.asarray(idx), dtype=torch.long)].float().div_(255.0)
        return (x - self.mean) / self.std

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)``: positions index into ``idx`` so callers can pick labels alongside.

        ``augment`` applies the source's training augmentation (``self.augment``, batch-wise), if it has one.
        """
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        for start in range(0, len(idx), batch_size):
            pos = order[start:start + batch_size]
            x = self.get(idx[pos])
            yield pos, (self.augment(x) if augment and self.augment is not None else x)


@dataclass
class RawData:
    """A dataset as stored: the source the pool and validation set are drawn from, and the test source.

    ``val`` is None where the validation set is drawn from ``train`` (MNIST, SVHN); ImageNet's val folder is
    both validation and test set.
    """

    train: TensorSource
    test: TensorSource
    val: Optional[TensorSource] = None


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def load_mnist(root: str, download: bool = True) -> RawData:
    """MNIST through ``torchvision.datasets.MNIST``; ``root`` holds ``MNIST/raw``."""
    from torchvision.datasets import MNIST

    what = "MNIST/raw/train-images-idx3-ubyte (and the other three idx files)"
    sets = []
    for train in (True, False):
        try:
            ds = MNIST(root, train=train, download=False)
        except RuntimeError:
            if not download:
                raise _missing("MNIST", root, what)
            with _undo_new_folders(Path(root) / "MNIST"):
                try:
                    ds = MNIST(root, train=train, download=True)
                except Exception:
                    raise _missing("MNIST", root, what) from None
        sets.append(TensorSource(ds.data, ds.targets.numpy(), MNIST_MEAN, MNIST_STD))
    return RawData(train=sets[0], test=sets[1])


@contextmanager
def _undo_new_folders(folder: Path):
    """Remove ``folder`` and its new parents again if what runs inside fails (a failed download writes nothing)."""
    new = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        yield
    except BaseException:
        for p in new:
            shutil.rmtree(p, ignore_errors=True)
        raise


def _missing(name: str, root: str, what: str) -> UserError:
    return UserError(f"{name} not found under {Path(root).resolve()} and it could not be downloaded: "
                     f"put {what} there, or pass --data-root with the folder that holds them")


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="MNIST", num_classes=10, pool_size=50_000, val_size=10_000,
        rare_classes=(5, 6, 7, 8, 9), model="lenet",
        train=Schedule(epochs=50, lr=0.05, batch_size=25, milestones=(15, 30, 45), momentum=0.5),
        unsup=Schedule(epochs=8, lr=0.05, batch_size=25, milestones=(3, 6), momentum=0.5),
        query_size=125, iterations=10, runs=10, default_L=80, load=load_mnist),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(sorted(DATASETS))}") from None


# ----------------------------------------------------------------------------------------------------------------
# The biased split
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Index arrays of one run: the biased pool D and the validation set D_v.

    pool:        [N] indices into ``RawData.train``
    pool_labels: [N] the labels an annotator returns for them (after label noise, if any)
    val:         [M] indices into the validation source (``RawData.val`` or ``RawData.train``)
    """

    pool: np.ndarray
    pool_labels: np.ndarray
    val: np.ndarray
    seed: int
    imbalance_ratio: float
    noise_ratio: float = 0.0

    def save(self, path: Path) -> None:
        meta = json.dumps({"seed": self.seed, "imbalance_ratio": self.imbalance_ratio,
                           "noise_ratio": self.noise_ratio})
        save_npz(path, pool=self.pool, pool_labels=self.pool_labels, val=self.val, meta=np.array(meta))

    @classmethod
    def load(cls, path: Path) -> "Split":
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            return cls(pool=f["pool"], pool_labels=f["pool_labels"], val=f["val"], **meta)


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
                            f"{spec.name} train images, but only {n_train} exist: lower --pool-size or --val-size")
        perm = rng.permutation(n_train)
        val, pool = np.sort(perm[:val_size]), perm[val_size:val_size + pool_size]
    else:
        if pool_size > n_train or val_size > len(raw.val):
            raise UserError(f"the request (pool {pool_size}, validation {val_size}) exceeds the {spec.name} data "
                            f"({n_train} train, {len(raw.val)} val images): lower --pool-size or --val-size")
        pool = rng.permutation(n_train)[:pool_size]
        val = np.sort(rng.permutation(len(raw.val))[:val_size])
    labels = raw.train.labels[pool]
    if imbalance_ratio > 1:
        pool = _decimate(pool, labels, spec, imbalance_ratio, rng)
    pool = np.sort(pool)
    pool_labels = raw.train.labels[pool].copy()
    if noise_ratio > 0:
        noisy = rng.choice(len(pool), size=int(round(noise_ratio * len(pool))), replace=False)
        shift = rng.integers(1, spec.num_classes, size=len(noisy))
        pool_labels[noisy] = (pool_labels[noisy] + shift) % spec.num_classes
    return Split(pool=pool, pool_labels=pool_labels, val=val, seed=seed,
                 imbalance_ratio=float(imbalance_ratio), noise_ratio=float(noise_ratio))


def _decimate(pool: np.ndarray, labels: np.ndarray, spec: DatasetSpec, ir: float,
              rng: np.random.Generator) -> np.ndarray:
    rare = np.isin(labels, spec.rare_classes)
    if spec.imbalance == "grouped":
        keep = int((~rare).sum() / ir)
        kept_rare = rng.choice(np.flatnonzero(rare), size=keep, replace=False)
        return np.concatenate([pool[~rare], pool[kept_rare]])
    raise ValueError(f"unknown imbalance kind {spec.imbalance!r}")


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
