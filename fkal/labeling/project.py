"""The state folder of a labeling project: where every file lives, the settings fixed by the first round, the
list of images and the labeled set.

All state lives in one folder (``--state``); every file is written to a temporary name and renamed
(``fkal.io``), so a killed command leaves each file whole, old or new. ``STATE_LAYOUT`` is the description that
``label_next.py --help`` prints.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..data import DatasetSpec, Schedule
from ..errors import UserError
from ..io import save_json, save_text

STATE_LAYOUT = """\
The state folder (--state DIR) holds everything of a project:
  project.json        the settings fixed by the first round: classes, model, image size and normalization,
                      acquisition, training schedules, seed, where the images came from
  images.csv          every image of the project, in the order of the pixel cache: path, role (pool = may be
                      picked, labeled = given with a label, val = the validation set D_v), label (empty if unknown)
  labeled.csv         the labeled set: path, label (class name), round (0 = given, n = annotations of round n),
                      source (the file the label came from); merge rewrites it atomically
  cache/              the decoded images (pixels_{C}x{S}.npy, uint8 [N, C, S, S]) and their key (.json)
  initial/            the initial model of each ensemble member (rotation-pretrained once on the pool, or the
                      weights you gave), member{e}.pt
  round{n}/           one labeling round:
    model.pt            the model(s) trained on the labeled set at the start of the round (the next round starts
                        from them)
    picks.npz           the query's picks (positions, scores, pseudo-labels and their probabilities)
    to_label.csv        the images to label: rank, path, score (the acquisition's, empty if it has none),
                        pseudo_label (the model's predicted class name) and probability (its softmax probability)
    label_studio_tasks.json   Label Studio import file: one task per image, the pseudo-label as a prediction
    label_studio_config.xml   the Label Studio labeling config that goes with it (an image and one Choices tag)
    contact_sheet.png   the picked images in rank order with their pseudo-labels
    round.json          the round's settings, counts and timings; written last: the round is complete
A killed round is resumed by running the same select command again: finished steps are kept."""


@dataclass(frozen=True)
class StatePaths:
    """The one place that names the files of a state folder."""

    root: Path

    @property
    def project(self) -> Path:
        return self.root / "project.json"

    @property
    def images(self) -> Path:
        return self.root / "images.csv"

    @property
    def labeled(self) -> Path:
        return self.root / "labeled.csv"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def initial(self, member: int) -> Path:
        return self.root / "initial" / f"member{member}.pt"

    def round_dir(self, n: int) -> Path:
        return self.root / f"round{n}"

    def model(self, n: int) -> Path:
        return self.round_dir(n) / "model.pt"

    def picks(self, n: int) -> Path:
        return self.round_dir(n) / "picks.npz"

    def to_label(self, n: int) -> Path:
        return self.round_dir(n) / "to_label.csv"

    def tasks(self, n: int) -> Path:
        return self.round_dir(n) / "label_studio_tasks.json"

    def ls_config(self, n: int) -> Path:
        return self.round_dir(n) / "label_studio_config.xml"

    def sheet(self, n: int) -> Path:
        return self.round_dir(n) / "contact_sheet.png"

    def record(self, n: int) -> Path:
        return self.round_dir(n) / "round.json"

    def complete_rounds(self) -> list[int]:
        """Numbers of the rounds whose round.json exists, ascending."""
        out = []
        for p in self.root.glob("round*/round.json"):
            tail = p.parent.name[len("round"):]
            if tail.isdigit():
                out.append(int(tail))
        return sorted(out)


# ----------------------------------------------------------------------------------------------------------------
# Defaults by model
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDefaults:
    """What a model needs of the images and how it is trained unless told otherwise."""

    image_size: int
    channels: int                    # 1: grey, 3: RGB
    train: Schedule
    unsup: Schedule                  # rotation pretraining
    augment: str                     # "none", "crop" or "crop-flip" (RandomCropFlip, padding S/8)


_MNIST_TRAIN = Schedule(epochs=50, lr=0.05, batch_size=25, milestones=(15, 30, 45), momentum=0.5)
_MNIST_UNSUP = Schedule(epochs=8, lr=0.05, batch_size=25, milestones=(3, 6), momentum=0.5)
_RESNET_TRAIN = Schedule(epochs=35, lr=0.1, batch_size=128, milestones=(15, 30), momentum=0.9, weight_decay=5e-4)
_RESNET_UNSUP = Schedule(epochs=15, lr=0.1, batch_size=128, milestones=(10,), momentum=0.9, weight_decay=5e-4)
# fine-tuning any torchvision architecture (often from pretrained weights): a tenth of the ResNet learning rate
_TORCHVISION_TRAIN = Schedule(epochs=35, lr=0.01, batch_size=64, milestones=(15, 30), momentum=0.9,
                              weight_decay=5e-4)

# The project's models (fkal.models.MODELS) with the protocol numbers of the dataset each was made for
# (docs/protocol.md: LeNet on MNIST, ResNet-10 on SVHN, ResNet-18 on ImageNet); "torchvision" for any other
# torchvision architecture.
MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    "lenet": ModelDefaults(28, 1, _MNIST_TRAIN, _MNIST_UNSUP, "none"),
    "resnet10-small": ModelDefaults(32, 3, _RESNET_TRAIN, _RESNET_UNSUP, "crop-flip"),
    "resnet18-small": ModelDefaults(32, 3, _RESNET_TRAIN, _RESNET_UNSUP, "crop-flip"),
    "resnet10": ModelDefaults(224, 3, _RESNET_TRAIN, _RESNET_UNSUP, "crop-flip"),
    "resnet18": ModelDefaults(224, 3, _RESNET_TRAIN, _RESNET_UNSUP, "crop-flip"),
    "torchvision": ModelDefaults(224, 3, _TORCHVISION_TRAIN, _RESNET_UNSUP, "crop-flip"),
}

# the paper's descriptor length L of each project model (docs/protocol.md: L = 80 for LeNet, 768 for the ResNets);
# a torchvision architecture has one L, the summed width of its taps
DEFAULT_L = {"lenet": 80, "resnet10-small": 768, "resnet18-small": 768, "resnet10": 768, "resnet18": 768}


def auto_model(first_image: Path) -> str:
    """The model for a pool whose first image is ``first_image``: LeNet for small grey images (at most 32 pixels a
    side, MNIST-like), the small-stem ResNet-18 for other images up to 64 pixels, the ResNet-18 otherwise."""
    from PIL import Image

    try:
        with Image.open(first_image) as im:
            mode, (w, h) = im.mode, im.size
    except OSError as e:
        raise UserError(f"cannot read the image {first_image}: {e}") from None
    if max(w, h) <= 32 and mode in ("L", "1", "I", "I;16", "LA"):
        return "lenet"
    return "resnet18-small" if max(w, h) <= 64 else "resnet18"


def defaults_of(model: str) -> ModelDefaults:
    return MODEL_DEFAULTS.get(model, MODEL_DEFAULTS["torchvision"])


# ----------------------------------------------------------------------------------------------------------------
# project.json
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Project:
    """The settings a project keeps from its first round (``project.json``)."""

    classes: list[str]
    model: str                          # a name fkal.models.build_model knows
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    pretrain: str                       # "rotation", "weights" or "none"
    weights: Optional[str]              # a file or torchvision's weights name, if given
    acquisition: str                    # the canonical configuration name, e.g. pfk-phat-L80
    train: Schedule
    unsup: Schedule
    seed: int
    settings: dict = field(default_factory=dict)   # the fixed command-line settings (what later rounds compare)
    options: dict = field(default_factory=dict)    # the acquisitions' own options (argparse dests -> values)

    def save(self, path: Path) -> None:
        d = asdict(self)
        d["version"] = 1
        save_json(d, path)

    @classmethod
    def load(cls, path: Path) -> "Project":
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: {e}: the state folder is damaged; start a new --state folder")
        d.pop("version", None)
        for k in ("train", "unsup"):
            d[k] = Schedule(**{**d[k], "milestones": tuple(d[k]["milestones"])})
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def spec(self, n_candidates: int, n_val: int, budget: int, default_L: int) -> DatasetSpec:
        """The ``DatasetSpec`` the acquisitions read (name "own": no dataset's presets apply)."""
        return DatasetSpec(name="own", folder="own", num_classes=len(self.classes), train_size=n_candidates,
                           val_size=n_val, rare_classes=(), model=self.model, train=self.train, unsup=self.unsup,
                           query_size=budget, iterations=1, runs=1, default_L=default_L)


# ----------------------------------------------------------------------------------------------------------------
# images.csv and labeled.csv
# ----------------------------------------------------------------------------------------------------------------
ROLES = ("pool", "labeled", "val")


@dataclass
class ImageList:
    """Every image of the project in cache order: ``paths`` [N] (absolute), ``roles`` [N] (``ROLES``) and the
    given ``labels`` [N] (class names, "" where unknown)."""

    paths: list[str]
    roles: np.ndarray
    labels: list[str]

    def rows(self, role: str) -> np.ndarray:
        return np.flatnonzero(self.roles == role)

    def save(self, path: Path) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "role", "label"])
        w.writerows(zip(self.paths, self.roles.tolist(), self.labels))
        save_text(buf.getvalue(), path)

    @classmethod
    def load(cls, path: Path) -> "ImageList":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        return cls([r[0] for r in rows], np.array([r[1] for r in rows]), [r[2] for r in rows])


@dataclass(frozen=True)
class Label:
    label: str          # class name
    round: int          # 0: given with the project; n: an annotation of round n's picks
    source: str         # the file it came from


def load_labeled(path: Path) -> dict[str, Label]:
    """The labeled set, ``{path: Label}`` in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {r[0]: Label(r[1], int(r[2]), r[3]) for r in rows}


def save_labeled(labeled: dict[str, Label], path: Path) -> None:
    """Write the labeled set atomically (one rename: all of it or none of it)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "round", "source"])
    for p, lab in labeled.items():
        w.writerow([p, lab.label, lab.round, lab.source])
    save_text(buf.getvalue(), path)
