"""CIFAR-10 and CIFAR-100 from their python pickle batches through ``torchvision.datasets.CIFAR10`` /
``CIFAR100``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .files import _check_root, _missing, _official_or_warn, _undo_new_folders
from .sources import RandomCropFlip, RawData, TensorSource

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DEFAULT_CROP_PADDING = 2    # TA-VAAL's text: a 32x32 random crop of the 36x36 zero-padded image


def _without_md5(reader):
    """torchvision's CIFAR10 or CIFAR100 with the md5 sums removed (as ``_svhn_without_md5``): the files are
    read as they are, ``_official_or_warn`` checks the sums apart."""

    class Files(reader):
        train_list = [[filename, None] for filename, _ in reader.train_list]
        test_list = [[filename, None] for filename, _ in reader.test_list]
        meta = {**reader.meta, "md5": None}

    return Files


def _cifar10_without_md5():
    from torchvision.datasets import CIFAR10
    return _without_md5(CIFAR10)


def _load(reader, name: str, root: str, download: bool, mean, std, what: str) -> RawData:
    """The train and test sources of a torchvision CIFAR ``reader`` under ``{root}/{reader.base_folder}``."""
    _check_root(root, f"{reader.base_folder}/")
    folder = Path(root) / reader.base_folder
    files = [(folder / f, md5) for f, md5 in reader.train_list + reader.test_list]
    files.append((folder / reader.meta["filename"], reader.meta["md5"]))
    if not all(p.exists() for p, _ in files):
        if not download:
            raise _missing(name, root, what)
        with _undo_new_folders(folder):
            try:
                reader(root, train=True, download=True)
            except Exception:
                raise _missing(name, root, what) from None
    _official_or_warn(name, files)
    augment = RandomCropFlip(DEFAULT_CROP_PADDING, flip=True, mean=mean, std=std)
    sets = []
    for train in (True, False):
        try:
            ds = _without_md5(reader)(root, train=train)
        except Exception as e:      # unpickling errors for a damaged or foreign file
            raise UserError(f"cannot read {_damaged_batch(files) or f'the {name} batches in {folder}'}: the file "
                            f"is damaged or not {name}'s ({' '.join(str(e).split())}); replace it with the original "
                            "file (or delete it to download it again)") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()     # [N, 32, 32, 3] -> [N, 3, 32, 32]
        sets.append(TensorSource(images, np.asarray(ds.targets), mean, std, augment if train else None))
    return RawData(train=sets[0], test=sets[1])


def _damaged_batch(files: list[tuple[Path, str]]) -> Optional[Path]:
    """The first batch file that does not unpickle (to name it), or None."""
    import pickle

    for path, _ in files:
        try:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        except Exception:
            return path
    return None


def load_cifar10(root: str, download: bool = True) -> RawData:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` from ``{root}/cifar-10-batches-py`` (the python pickle
    batches ``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    The 50,000 train images are the source of the pool and the validation set, the 10,000 test images the test
    set. Training augmentation as TA-VAAL's text (its section 4.2): a 32x32 random crop of the 36x36 zero-padded
    image and a horizontal flip (``--crop-padding 4``: the TA-VAAL code's 40x40).
    """
    from torchvision.datasets import CIFAR10

    return _load(CIFAR10, "CIFAR-10", root, download, CIFAR10_MEAN, CIFAR10_STD,
                 "cifar-10-batches-py/ (data_batch_1..5, test_batch and batches.meta)")


def load_cifar100(root: str, download: bool = True) -> RawData:
    """CIFAR-100 through ``torchvision.datasets.CIFAR100`` from ``{root}/cifar-100-python`` (the python pickles
    ``train``, ``test`` and ``meta``); the labels are the 100 fine classes (``fine_labels``; the 20 coarse
    superclasses are not used). 50,000 train images (500 per class) are the source of the pool, the 10,000 test
    images (100 per class) the test set; augmentation as CIFAR-10."""
    from torchvision.datasets import CIFAR100

    return _load(CIFAR100, "CIFAR-100", root, download, CIFAR100_MEAN, CIFAR100_STD,
                 "cifar-100-python/ (train, test and meta)")
