"""Dataset registry, image sources, and the biased pool / validation split (DESIGN section 3).

A dataset is a small frozen dataclass of protocol numbers plus a loader. Everything an active-learning run
needs is an index array into a stored source: the pool D, the validation set D_v and the test set, so the
labeled / unlabeled bookkeeping is index arithmetic.
"""
from __future__ import annotations

import json
import shutil
import warnings
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
    #                                 "per_class": each rare class c keeps int(n_c / IR) of its pool images
    rare_share: float = 0.0         # "per_class" with no fixed rare_classes: this share of the classes present in
    #                                 the pool is chosen as rare by the split's seed (ImageNet: 0.5, 500 of 1000)
    configs: tuple[str, ...] = ()   # the dataset's default cfg list (configuration names); empty: the command
    #                                 line's default list


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


# ----------------------------------------------------------------------------------------------------------------
# SVHN, CIFAR-10 (in memory, torchvision readers) and ImageNet (an ImageFolder tree, see fkal/folder.py)
# ----------------------------------------------------------------------------------------------------------------
class RandomCropFlip:
    """torchvision's ``RandomCrop(size, padding)`` (and ``RandomHorizontalFlip``) on a normalized batch.

    The ``augment`` of a ``TensorSource``: ``[B, C, H, W]`` float (as ``TensorSource.get`` returns it) to the same
    shape, one random offset (and flip) per image from the global torch generator, which the loop seeds. The
    padding is black like torchvision's zero padding of the raw image, i.e. ``-mean / std`` per channel.
    """

    def __init__(self, padding: int, flip: bool, mean: tuple[float, ...], std: tuple[float, ...]):
        self.padding, self.flip = padding, flip
        self.fill = (-torch.tensor(mean) / torch.tensor(std)).float().view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        if p > 0:
            padded = self.fill.to(x).expand(b, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = x
            dy, dx = (torch.randint(0, 2 * p + 1, (b, 1)).to(x.device) for _ in range(2))
            rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
            cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
            x = padded.gather(2, rows).gather(3, cols)
        if self.flip:
            flip = (torch.rand(b) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        return x


def _official_or_warn(name: str, files: list[tuple[Path, str]]) -> None:
    """Warn (do not fail) when files differ from the official release: a re-packed or partial copy still loads."""
    from torchvision.datasets.utils import check_integrity

    odd = [p.name for p, md5 in files if not check_integrity(str(p), md5)]
    if odd:
        warnings.warn(f"{name}: the md5 of {', '.join(odd)} differs from the official release; loading the files "
                      "as they are", stacklevel=3)


def _svhn_without_md5():
    """torchvision's SVHN with the md5 sums removed: it then checks that the file exists and reads it as usual
    (``_official_or_warn`` checks the sums apart)."""
    from torchvision.datasets import SVHN

    class SVHNFiles(SVHN):
        split_list = {k: [url, filename, None] for k, (url, filename, _) in SVHN.split_list.items()}

    return SVHNFiles


def _cifar10_without_md5():
    """torchvision's CIFAR10 with the md5 sums removed (as ``_svhn_without_md5``)."""
    from torchvision.datasets import CIFAR10

    class CIFAR10Files(CIFAR10):
        train_list = [[filename, None] for filename, _ in CIFAR10.train_list]
        test_list = [[filename, None] for filename, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10Files


# Normalization: the per-channel mean and std of each training set.
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_svhn(root: str, download: bool = True) -> RawData:
    """SVHN through ``torchvision.datasets.SVHN`` from ``{root}/SVHN/{train,extra,test}_32x32.mat``.

    train + extra (73,257 + 531,131 = 604,388 images) are the source of the pool and the validation set, test
    (26,032) the test set; labels 0..9 (the files' label 10 is digit 0). Training augmentation: random crop 32
    after zero padding 4, no flip (digits are not mirror-symmetric).
    """
    from torchvision.datasets import SVHN

    folder = Path(root) / "SVHN"
    splits = ("train", "extra", "test")
    what = "SVHN/train_32x32.mat, SVHN/extra_32x32.mat and SVHN/test_32x32.mat"
    for split in splits:
        if not (folder / SVHN.split_list[split][1]).exists():
            if not download:
                raise _missing("SVHN", root, what)
            with _undo_new_folders(folder):
                try:
                    SVHN(str(folder), split=split, download=True)
                except Exception:
                    raise _missing("SVHN", root, what) from None
    _official_or_warn("SVHN", [(folder / SVHN.split_list[s][1], SVHN.split_list[s][2]) for s in splits])
    images, labels = {}, {}
    for split in splits:
        try:
            ds = _svhn_without_md5()(str(folder), split=split)
        except Exception as e:          # scipy.io's errors for a damaged or foreign file
            raise UserError(f"cannot read {folder / SVHN.split_list[split][1]}: {e}") from None
        images[split], labels[split] = ds.data, ds.labels                     # [N, 3, 32, 32] uint8, [N] 0..9
    augment = RandomCropFlip(4, flip=False, mean=SVHN_MEAN, std=SVHN_STD)
    train = TensorSource(torch.from_numpy(np.concatenate([images.pop("train"), images.pop("extra")])),
                         np.concatenate([labels["train"], labels["extra"]]), SVHN_MEAN, SVHN_STD, augment)
    test = TensorSource(torch.from_numpy(np.ascontiguousarray(images.pop("test"))), labels["test"],
                        SVHN_MEAN, SVHN_STD)
    return RawData(train=train, test=test)


def load_cifar10(root: str, download: bool = True) -> RawData:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` from ``{root}/cifar-10-batches-py`` (the python pickle
    batches ``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    The 50,000 train images are the source of the pool and the validation set, the 10,000 test images the test
    set. Training augmentation as TA-VAAL (its section 4.2): a 32x32 random crop of the 36x36 zero-padded image
    and a horizontal flip.
    """
    from torchvision.datasets import CIFAR10

    folder = Path(root) / CIFAR10.base_folder
    files = [(folder / f, md5) for f, md5 in CIFAR10.train_list + CIFAR10.test_list]
    files.append((folder / CIFAR10.meta["filename"], CIFAR10.meta["md5"]))
    what = "cifar-10-batches-py/ (data_batch_1..5, test_batch and batches.meta)"
    if not all(p.exists() for p, _ in files):
        if not download:
            raise _missing("CIFAR-10", root, what)
        with _undo_new_folders(folder):
            try:
                CIFAR10(root, train=True, download=True)
            except Exception:
                raise _missing("CIFAR-10", root, what) from None
    _official_or_warn("CIFAR-10", files)
    augment = RandomCropFlip(2, flip=True, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    sets = []
    for train in (True, False):
        try:
            ds = _cifar10_without_md5()(root, train=train)
        except Exception as e:      # unpickling errors for a damaged or foreign file
            raise UserError(f"cannot read the CIFAR-10 batches in {folder}: {e}") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()     # [N, 32, 32, 3] -> [N, 3, 32, 32]
        sets.append(TensorSource(images, np.asarray(ds.targets), CIFAR10_MEAN, CIFAR10_STD,
                                 augment if train else None))
    return RawData(train=sets[0], test=sets[1])


@dataclass(frozen=True)
class ImageFolderLoader:
    """How an ImageFolder dataset (ImageNet) is read; calling it loads the data (``DatasetSpec.load``).

    ``{root}/{folder}/train/<class>/*.JPEG`` is the source of the pool, ``{root}/{folder}/val/<class>/*.JPEG`` the
    validation set and the test set (the same images, as in the paper). Training: ``RandomResizedCrop(image_size)``
    and a horizontal flip; evaluation: ``Resize(resize_size)`` and ``CenterCrop(image_size)``. The images are
    decoded by DALI on the GPU when ``nvidia-dali`` is installed and a GPU is present (``backend="auto"``), else by
    a torchvision DataLoader with ``num_workers`` processes (None: min(8, CPU count)). See ``fkal.folder``.
    """

    folder: str = "ImageNet"
    num_classes: int = 1000              # the most classes the tree may have (the model's outputs)
    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_workers: Optional[int] = None
    backend: str = "auto"                # "auto", "torchvision" or "dali"

    def __call__(self, root: str, download: bool = True) -> RawData:
        from .folder import load_image_folder   # (no download: ImageNet is fetched and laid out by hand)

        return load_image_folder(root, self)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="MNIST", num_classes=10, pool_size=50_000, val_size=10_000,
        rare_classes=(5, 6, 7, 8, 9), model="lenet",
        train=Schedule(epochs=50, lr=0.05, batch_size=25, milestones=(15, 30, 45), momentum=0.5),
        unsup=Schedule(epochs=8, lr=0.05, batch_size=25, milestones=(3, 6), momentum=0.5),
        query_size=125, iterations=10, runs=10, default_L=80, load=load_mnist),
    # Paper section 5.2: pool 500k / validation 104,388 from train + extra; ResNet-10; SGD lr 0.1, batch 128,
    # 35 epochs, lr x0.1 every 15 epochs; P = 1,250 (0.25% of D), B = 10, 5 runs; L = 256 (block 3) or 768
    # (blocks 3 + 4). Momentum and weight decay are not given: the usual 0.9 and 5e-4 of ResNets on 32x32 images.
    # Rotation pretraining (not given either): 15 epochs over the whole pool (x4 rotations), lr x0.1 at epoch 10.
    "svhn": DatasetSpec(
        name="svhn", folder="SVHN", num_classes=10, pool_size=500_000, val_size=104_388,
        rare_classes=(5, 6, 7, 8, 9), model="resnet10-small",
        train=Schedule(epochs=35, lr=0.1, batch_size=128, milestones=(15, 30), momentum=0.9, weight_decay=5e-4),
        unsup=Schedule(epochs=15, lr=0.1, batch_size=128, milestones=(10,), momentum=0.9, weight_decay=5e-4),
        query_size=1_250, iterations=10, runs=5, default_L=768, load=load_svhn,
        # Figure 5(a, b); varR at E*K = 64 passes (section 5.2: 32x the query cost of ours, which is EK/2, Table 1)
        configs=("random", "pcc-L256", "pfk-y-L256", "pfk-yhat-L256", "pfk-phat-L256", "pfk-phat-L768", "varR-K64",
                 "coreset", "vaal")),
    # Paper section 5.3: the 1.28M train images are D, the 50k val images D_v and the test set; ResNet-18; SGD
    # lr 0.1, batch 128, 60 epochs, lr x0.1 at 30, 50, 57; P = 64,000 (5% of D), B = 10, 1 run; taps as SVHN.
    # 500 of the 1,000 classes, drawn by the run's seed, keep int(n_c / IR) images each (section 5). Momentum 0.9
    # and weight decay 1e-4 are the usual ImageNet values (not given). Rotation pretraining (not given): 15 epochs
    # over the pool (x4 rotations, like 60 ordinary epochs), lr x0.1 at epoch 10.
    "imagenet": DatasetSpec(
        name="imagenet", folder="ImageNet", num_classes=1000, pool_size=1_281_167, val_size=50_000,
        rare_classes=(), rare_share=0.5, imbalance="per_class", model="resnet18",
        train=Schedule(epochs=60, lr=0.1, batch_size=128, milestones=(30, 50, 57), momentum=0.9, weight_decay=1e-4),
        unsup=Schedule(epochs=15, lr=0.1, batch_size=128, milestones=(10,), momentum=0.9, weight_decay=1e-4),
        query_size=64_000, iterations=10, runs=1, default_L=768, load=ImageFolderLoader(),
        # Figure 5(c, d); varR at E*K = 32 passes (section 5.3: 16x the query cost of ours)
        configs=("random", "pfk-y-L256", "pfk-phat-L256", "pfk-phat-L768", "varR-K32")),
    # TA-VAAL (Kim et al. 2021, section 4.2 and its supplement's table): ResNet-18 (small stem for 32x32), SGD
    # lr 0.1, momentum 0.9, weight decay 5e-4 (the table and the learning-loss code; the text's "0.005" reads as
    # a typo), batch 128, 200 epochs, lr x0.1 at 160; budget P = 1,000 per stage, 10 stages, 5 trials. Imbalance
    # as TA-VAAL's code: the even classes are the rare ones, each keeping int(n_c / IR) images (50 of 5,000 at
    # x100; the paper's text says "the first 5 classes": set rare_classes=(0, 1, 2, 3, 4) for that). TA-VAAL has
    # no validation set; the Fisher-kernel method needs one, so 5,000 of the 50,000 train images are D_v.
    # Rotation pretraining (not in TA-VAAL): 30 epochs over the pool, lr x0.1 at 15 and 25.
    "cifar10": DatasetSpec(
        name="cifar10", folder="CIFAR10", num_classes=10, pool_size=45_000, val_size=5_000,
        rare_classes=(0, 2, 4, 6, 8), imbalance="per_class", model="resnet18-small",
        train=Schedule(epochs=200, lr=0.1, batch_size=128, milestones=(160,), momentum=0.9, weight_decay=5e-4),
        unsup=Schedule(epochs=30, lr=0.1, batch_size=128, milestones=(15, 25), momentum=0.9, weight_decay=5e-4),
        query_size=1_000, iterations=10, runs=5, default_L=768, load=load_cifar10,
        # TA-VAAL's comparison (random, MC dropout, core-set, learning loss, VAAL, TA-VAAL) and ours
        configs=("random", "varR-K64", "coreset", "lloss", "vaal", "tavaal", "pfk-phat-L256", "pfk-phat-L768")),
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
    if spec.imbalance == "per_class":
        rare_classes = rare_classes_of(spec, labels, rng)
        kept = [pool[~np.isin(labels, rare_classes)]]
        for c in rare_classes:
            members = np.flatnonzero(labels == c)
            kept.append(pool[rng.choice(members, size=int(len(members) / ir), replace=False)])
        return np.concatenate(kept)
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
