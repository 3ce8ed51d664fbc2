"""Protocol numbers: a dataset is a small frozen dataclass of them plus a loader (docs/protocol.md), and
``DATASETS`` is the registry ``--dataset`` reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import UserError
from .caltech import CaltechLoader
from .cifar import load_cifar10, load_cifar100
from .folder import ImageFolderLoader
from .mnist import load_mnist
from .sources import RawData
from .svhn import load_svhn


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
    train_size: int                 # |D| before the imbalance is applied (0: every train image not in D_v)
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
    imbalance: str = "grouped"      # a rule of fkal.data.split.IMBALANCE_RULES, e.g. "grouped": rare classes
    #                                 together keep int(n_common / IR); "per_class": each rare class c keeps
    #                                 int(n_c / IR) of its pool images
    rare_share: float = 0.0         # "per_class" with no fixed rare_classes: this share of the classes present in
    #                                 the pool is chosen as rare by the split's seed (ImageNet: 0.5, 500 of 1000)
    configs: tuple[str, ...] = ()   # the dataset's default cfg list (configuration names); empty: the command


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="MNIST", num_classes=10, train_size=50_000, val_size=10_000,
        rare_classes=(5, 6, 7, 8, 9), model="lenet",
        train=Schedule(epochs=50, lr=0.05, batch_size=25, milestones=(15, 30, 45), momentum=0.5),
        unsup=Schedule(epochs=8, lr=0.05, batch_size=25, milestones=(3, 6), momentum=0.5),
        query_size=125, iterations=10, runs=10, default_L=80, load=load_mnist),
    # Paper section 5.2: pool 500k / validation 104,388 from train + extra; ResNet-10; SGD lr 0.1, batch 128,
    # 35 epochs, lr x0.1 every 15 epochs; P = 1,250 (0.25% of D), B = 10, 5 runs; L = 256 (block 3) or 768
    # (blocks 3 + 4). Momentum and weight decay are not given: the usual 0.9 and 5e-4 of ResNets on 32x32 images.
    # Rotation pretraining (not given either): 15 epochs over the whole pool (x4 rotations), lr x0.1 at epoch 10.
    "svhn": DatasetSpec(
        name="svhn", folder="SVHN", num_classes=10, train_size=500_000, val_size=104_388,
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
        name="imagenet", folder="ImageNet", num_classes=1000, train_size=1_281_167, val_size=50_000,
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
        name="cifar10", folder="CIFAR10", num_classes=10, train_size=45_000, val_size=5_000,
        rare_classes=(0, 2, 4, 6, 8), imbalance="per_class", model="resnet18-small",
        train=Schedule(epochs=200, lr=0.1, batch_size=128, milestones=(160,), momentum=0.9, weight_decay=5e-4),
        unsup=Schedule(epochs=30, lr=0.1, batch_size=128, milestones=(15, 25), momentum=0.9, weight_decay=5e-4),
        query_size=1_000, iterations=10, runs=5, default_L=768, load=load_cifar10,
        # TA-VAAL's comparison (random, MC dropout, core-set, learning loss, VAAL, TA-VAAL) and ours
        configs=("random", "varR-K64", "coreset", "lloss", "vaal", "tavaal", "pfk-phat-L256", "pfk-phat-L768")),
    # CIFAR-100 (TA-VAAL section 4.2, balanced only): as CIFAR-10, 100 classes of 500 train / 100 test images;
    # P = 1,000 (the text; its supplement and code: 2,000, see fkal.protocols). The imbalance (not in TA-VAAL)
    # reduces the 50 even classes as CIFAR-10's.
    "cifar100": DatasetSpec(
        name="cifar100", folder="CIFAR100", num_classes=100, train_size=45_000, val_size=5_000,
        rare_classes=tuple(range(0, 100, 2)), imbalance="per_class", model="resnet18-small",
        train=Schedule(epochs=200, lr=0.1, batch_size=128, milestones=(160,), momentum=0.9, weight_decay=5e-4),
        unsup=Schedule(epochs=30, lr=0.1, batch_size=128, milestones=(15, 25), momentum=0.9, weight_decay=5e-4),
        query_size=1_000, iterations=10, runs=5, default_L=768, load=load_cifar100,
        configs=("random", "varR-K64", "coreset", "lloss", "lloss-v2", "vaal", "tavaal", "pfk-phat-L768")),
    # Caltech-101 (TA-VAAL section 4.3 and its supplement's table): one fixed seeded split of the image folder
    # (fkal.data.caltech), every train image in the pool, no validation set (the Fisher-kernel method needs
    # --val-size); 224 x 224 images with flips, ResNet-18 (ImageNet stem), SGD lr 0.01, batch 16, 200 epochs
    # (x0.1 at 160 and momentum 0.9, weight decay 5e-4 as for CIFAR: not given); 500 per stage, 10 stages, 5
    # trials. Naturally imbalanced: no rare classes are reduced. Rotation pretraining (not in TA-VAAL): 30
    # epochs, lr x0.1 at 20. ``caltech101-bg`` adds the background folder as class 102 (TA-VAAL's 9,144 images).
    "caltech101": DatasetSpec(
        name="caltech101", folder="Caltech101", num_classes=101, train_size=0, val_size=0,
        rare_classes=(), imbalance="per_class", model="resnet18",
        train=Schedule(epochs=200, lr=0.01, batch_size=16, milestones=(160,), momentum=0.9, weight_decay=5e-4),
        unsup=Schedule(epochs=30, lr=0.01, batch_size=16, milestones=(20,), momentum=0.9, weight_decay=5e-4),
        query_size=500, iterations=10, runs=5, default_L=768, load=CaltechLoader(),
        configs=("random", "varR-K64", "coreset", "lloss", "lloss-v2", "vaal", "tavaal")),
}
DATASETS["caltech101-bg"] = replace(DATASETS["caltech101"], name="caltech101-bg", folder="Caltech101-bg",
                                    num_classes=102, load=CaltechLoader(background=True))


def load_raw(spec: DatasetSpec, root: str, download: bool = True, device=None) -> RawData:
    """The dataset's sources for a run on ``device`` (None: the CPU). Sources held in memory do not depend on the
    device; an image-folder source decodes for it (DALI on a CUDA device only, ``fkal.data.folder``)."""
    if isinstance(spec.load, ImageFolderLoader):
        return spec.load(root, download, device=device)
    return spec.load(root, download)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(sorted(DATASETS))}") from None
