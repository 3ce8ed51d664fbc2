"""SVHN from its ``.mat`` files through ``torchvision.datasets.SVHN``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .files import _check_root, _missing, _official_or_warn, _undo_new_folders
from .sources import RandomCropFlip, RawData, TensorSource

SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def _svhn_without_md5():
    """torchvision's SVHN with the md5 sums removed: it then checks that the file exists and reads it as usual
    (``_official_or_warn`` checks the sums apart)."""
    from torchvision.datasets import SVHN

    class SVHNFiles(SVHN):
        split_list = {k: [url, filename, None] for k, (url, filename, _) in SVHN.split_list.items()}

    return SVHNFiles


def load_svhn(root: str, download: bool = True) -> RawData:
    """SVHN through ``torchvision.datasets.SVHN`` from ``{root}/SVHN/{train,extra,test}_32x32.mat``.

    train + extra (73,257 + 531,131 = 604,388 images) are the source of the pool and the validation set, test
    (26,032) the test set; labels 0..9 (the files' label 10 is digit 0). Training augmentation: random crop 32
    after zero padding 4, no flip (digits are not mirror-symmetric).
    """
    from torchvision.datasets import SVHN

    _check_root(root, "SVHN/*.mat")
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
            path = folder / SVHN.split_list[split][1]
            raise UserError(f"cannot read {path}: the file is damaged or not SVHN's ({' '.join(str(e).split())}); "
                            f"replace it with the original file (or delete it to download it again)") from None
        images[split], labels[split] = ds.data, ds.labels                     # [N, 3, 32, 32] uint8, [N] 0..9
    augment = RandomCropFlip(4, flip=False, mean=SVHN_MEAN, std=SVHN_STD)
    train = TensorSource(torch.from_numpy(np.concatenate([images.pop("train"), images.pop("extra")])),
                         np.concatenate([labels["train"], labels["extra"]]), SVHN_MEAN, SVHN_STD, augment)
    test = TensorSource(torch.from_numpy(np.ascontiguousarray(images.pop("test"))), labels["test"],
                        SVHN_MEAN, SVHN_STD)
    return RawData(train=train, test=test)
