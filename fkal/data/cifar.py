"""CIFAR-10 from its python pickle batches through ``torchvision.datasets.CIFAR10``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .files import _check_root, _missing, _official_or_warn, _undo_new_folders
from .sources import RandomCropFlip, RawData, TensorSource

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _cifar10_without_md5():
    """torchvision's CIFAR10 with the md5 sums removed (as ``_svhn_without_md5``)."""
    from torchvision.datasets import CIFAR10

    class CIFAR10Files(CIFAR10):
        train_list = [[filename, None] for filename, _ in CIFAR10.train_list]
        test_list = [[filename, None] for filename, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10Files


def load_cifar10(root: str, download: bool = True) -> RawData:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` from ``{root}/cifar-10-batches-py`` (the python pickle
    batches ``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    The 50,000 train images are the source of the pool and the validation set, the 10,000 test images the test
    set. Training augmentation as TA-VAAL (its section 4.2): a 32x32 random crop of the 36x36 zero-padded image
    and a horizontal flip.
    """
    from torchvision.datasets import CIFAR10

    _check_root(root, "cifar-10-batches-py/")
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
            raise UserError(f"cannot read {_damaged_batch(folder, files) or f'the CIFAR-10 batches in {folder}'}: "
                            f"the file is damaged or not CIFAR-10's ({' '.join(str(e).split())}); replace it with "
                            "the original file (or delete it to download it again)") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()     # [N, 32, 32, 3] -> [N, 3, 32, 32]
        sets.append(TensorSource(images, np.asarray(ds.targets), CIFAR10_MEAN, CIFAR10_STD,
                                 augment if train else None))
    return RawData(train=sets[0], test=sets[1])


def _damaged_batch(folder: Path, files: list[tuple[Path, str]]) -> Optional[Path]:
    """The first batch file that does not unpickle (to name it), or None."""
    import pickle

    for path, _ in files:
        try:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        except Exception:
            return path
    return None
