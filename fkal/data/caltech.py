"""Caltech-101 as an image folder: ``{root}/caltech101/101_ObjectCategories/<class>/*.jpg`` (torchvision's
layout; ``{root}/101_ObjectCategories`` is read too), 101 object classes, and with ``background`` the 102nd
folder ``BACKGROUND_Google`` as a class of its own.

Caltech-101 comes without a test set. TA-VAAL (section 4.3) splits its 9,144 images (the 101 classes and the
background folder) into 8,125 train and 1,019 test images; the split here is one seeded permutation of the sorted
file list, the same for every run and configuration: ``round(N * 1,019 / 9,144)`` images are the test set
(exactly 1,019 of the full 9,144; 967 of the 8,677 without the background folder). The file lists go into
``RawData.manifest`` and are written beside the runs.

The images are decoded once, resized to ``image_size`` x ``image_size`` (TA-VAAL resizes to 224 x 224; the
aspect ratio is not kept) and held in memory as uint8 (9,144 images at 224 px take 1.4 GB); training flips them
horizontally at random (TA-VAAL: random horizontal flips only).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from ..errors import UserError
from .sources import RandomCropFlip, RawData, TensorSource

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKGROUND = "BACKGROUND_Google"
PAPER_TEST_SHARE = 1019 / 9144          # TA-VAAL: 8,125 train / 1,019 test of 9,144 images


def image_folder_root(root: str) -> Path:
    """The ``101_ObjectCategories`` folder under ``root`` (torchvision's ``caltech101/`` level or directly)."""
    for base in (Path(root) / "caltech101" / "101_ObjectCategories", Path(root) / "101_ObjectCategories"):
        if base.is_dir():
            return base
    raise UserError(f"Caltech-101 not found under {Path(root).resolve()}: put the extracted 101_ObjectCategories/ "
                    "(one folder of .jpg images per class) in {data-root}/caltech101/, or pass --data-root with the "
                    "folder that holds caltech101/")


class _Classes(ImageFolder):
    """An ImageFolder of the class folders, without ``BACKGROUND_Google`` unless ``background``."""

    def __init__(self, root: str, background: bool):
        self.background = background
        super().__init__(root)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir()
                         and (self.background or e.name != BACKGROUND))
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {c: i for i, c in enumerate(classes)}


def fixed_split(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` positions of ``n`` sorted files: the first ``round(n * test_share)`` of a permutation
    seeded with ``seed`` are the test set; both sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_share))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def decode(paths: list[str], size: int, workers: int | None = None) -> torch.Tensor:
    """RGB images resized to ``size`` x ``size`` (bilinear): uint8 ``[N, 3, size, size]``."""
    def one(path: str) -> np.ndarray:
        with Image.open(path) as image:
            return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for i, array in enumerate(pool.map(one, paths)):
            out[i] = torch.from_numpy(array).permute(2, 0, 1)                 # [size, size, 3] -> [3, size, size]
    return out


@dataclass(frozen=True)
class CaltechLoader:
    """How Caltech-101 is read; calling it loads the data (``DatasetSpec.load``; nothing is downloaded)."""

    background: bool = False            # the BACKGROUND_Google folder as class 102 (TA-VAAL's 9,144 images)
    image_size: int = 224
    test_share: float = PAPER_TEST_SHARE
    split_seed: int = 0                 # the same split for every run and configuration
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    workers: int | None = None          # decoding threads (None: min(8, CPU count))

    def __call__(self, root: str, download: bool = True) -> RawData:
        base = image_folder_root(root)
        try:
            folder = _Classes(str(base), self.background)
        except (FileNotFoundError, OSError) as e:
            raise UserError(f"cannot read Caltech-101 in {base}: {e}") from None
        samples = sorted((os.path.relpath(p, base), c) for p, c in folder.samples)     # [(relative path, class)]
        train, test = fixed_split(len(samples), self.test_share, self.split_seed)
        labels = np.array([c for _, c in samples], dtype=np.int64)
        try:
            images = decode([str(base / p) for p, _ in samples], self.image_size, self.workers)
        except OSError as e:
            raise UserError(f"cannot decode a Caltech-101 image in {base}: {e}") from None
        flip = RandomCropFlip(0, flip=True, mean=self.mean, std=self.std)
        manifest = {"dataset": "Caltech-101", "folder": str(base), "classes": list(folder.classes),
                    "background": self.background, "split_seed": self.split_seed, "test_share": self.test_share,
                    "train": [samples[i][0] for i in train], "test": [samples[i][0] for i in test]}
        return RawData(train=TensorSource(images[train], labels[train], self.mean, self.std, flip),
                       test=TensorSource(images[test], labels[test], self.mean, self.std), manifest=manifest)
