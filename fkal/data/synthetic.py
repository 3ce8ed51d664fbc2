"""Generated data in the real on-disk formats, for tests, smoke runs and benchmarks where the real dataset is not at
hand: MNIST's IDX files of learnable digit-like images (class c is a bright bar at a class-specific height)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 (the MNIST file format): magic 0x00000803, counts, rows, cols, then uint8 pixels ``[N, H, W]``."""
    n, h, w = images.shape
    Path(path).write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1: magic 0x00000801, count, then uint8 labels ``[N]``."""
    Path(path).write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def make_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable 28x28 uint8 images and their labels ``[n]`` (the ten classes in turn, shuffled): class c is a
    bright bar at rows 3 + 2c .. 5 + 2c, on noise."""
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, c in enumerate(labels):
        r = 3 + 2 * c
        images[i, r:r + 3, 4:24] = 255
    return images.astype(np.uint8), labels


def write_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """A data root holding ``MNIST/raw`` with ``n_train`` / ``n_test`` generated images in the real format;
    returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make_digits(n, rng)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)
