#!/usr/bin/env python
"""Write a synthetic CIFAR-10 in the real on-disk format (``{root}/cifar-10-batches-py/``: five train batches, a
test batch and ``batches.meta``, python pickles), by default of the real size: 50,000 train and 10,000 test images,
5,000 / 1,000 per class.

For timing TA-VAAL's benchmark where the real CIFAR-10 cannot be had: every number of the protocol (pool, subset,
model, epochs) is that of a real run, only the pixels are made up. Each class is a colour and an oriented stripe
pattern under noise, so that the task is learnable but not trivial; accuracies on it say nothing about CIFAR-10.

    python benchmarks/synthetic_cifar.py --root /tmp/synthetic
    python run.py --dataset cifar10 --protocol tavaal --data-root /tmp/synthetic ...
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_images(labels: np.ndarray, rng: np.random.Generator, noise: float = 60.0) -> np.ndarray:
    """``[N, 3, 32, 32]`` uint8 images: class c has its own colour and stripes at angle c * 18 degrees."""
    n = len(labels)
    colours = np.random.default_rng(0).uniform(40, 215, size=(10, 3))              # the same for every call
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    angle = np.deg2rad(labels * 18.0)[:, None, None]                                # [N, 1, 1]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.6 + phase)      # [N, 32, 32]
    images = colours[labels][:, :, None, None] + 45.0 * stripes[:, None] + rng.normal(0, noise, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8)


def write(root: Path, per_batch: int = 10_000, n_test: int = 10_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(name: str, n: int) -> None:
        labels = rng.permutation(np.arange(n) % 10)                                 # n / 10 per class
        data = class_images(labels, rng).reshape(n, 3072)                           # rows: R plane, G, B
        entry = {"batch_label": name, "labels": labels.tolist(), "data": data,
                 "filenames": [f"synthetic_{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))

    for b in range(1, 6):
        batch(f"data_batch_{b}", per_batch)
    batch("test_batch", n_test)
    meta = {"num_cases_per_batch": per_batch, "num_vis": 3072, "label_names": NAMES}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="folder to write cifar-10-batches-py/ into")
    p.add_argument("--per-batch", type=int, default=10_000, help="images per train batch (five batches)")
    p.add_argument("--test", type=int, default=10_000, help="test images")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"wrote {write(Path(a.root), a.per_batch, a.test, a.seed) / 'cifar-10-batches-py'}")


if __name__ == "__main__":
    main()
