"""MNIST from its IDX files (``{root}/MNIST/raw``) through ``torchvision.datasets.MNIST``."""
from __future__ import annotations

from pathlib import Path

from .files import _missing, _undo_new_folders
from .sources import RawData, TensorSource

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
