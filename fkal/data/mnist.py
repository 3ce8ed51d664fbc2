"""MNIST from its IDX files (``{root}/MNIST/raw``) through ``torchvision.datasets.MNIST``."""
from __future__ import annotations

import math
import struct
from pathlib import Path

from ..errors import UserError
from .files import _check_root, _missing, _undo_new_folders
from .sources import RawData, TensorSource

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_REPLACE = "replace it with the original file (or delete {raw} to download MNIST again)"


def load_mnist(root: str, download: bool = True) -> RawData:
    """MNIST through ``torchvision.datasets.MNIST``; ``root`` holds ``MNIST/raw``. Files that are present are
    checked first (``check_mnist_files``) and never downloaded over; missing ones are downloaded when allowed."""
    from torchvision.datasets import MNIST

    _check_root(root, "MNIST/raw")
    raw = Path(root) / "MNIST" / "raw"
    what = "MNIST/raw/train-images-idx3-ubyte (and the other three idx files)"
    sets = []
    for train in (True, False):
        if all((raw / name).exists() for name in FILES[train]):
            check_mnist_files(raw / FILES[train][0], raw / FILES[train][1])
            try:
                ds = MNIST(root, train=train, download=False)
            except Exception as e:          # checked above; anything left is a file torchvision cannot parse
                raise UserError(f"cannot read {raw / FILES[train][0]}: {type(e).__name__} {e}; "
                                f"{_REPLACE.format(raw=raw)}") from None
        else:
            if not download:
                raise _missing("MNIST", root, what)
            with _undo_new_folders(Path(root) / "MNIST"):
                try:
                    ds = MNIST(root, train=train, download=True)
                except Exception:
                    raise _missing("MNIST", root, what) from None
        if int(ds.targets.max()) > 9 or int(ds.targets.min()) < 0:
            raise UserError(f"{raw / FILES[train][1]} holds labels outside 0-9: {_REPLACE.format(raw=raw)}")
        sets.append(TensorSource(ds.data, ds.targets.numpy(), MNIST_MEAN, MNIST_STD))
    return RawData(train=sets[0], test=sets[1])


def idx_dimensions(path: Path, ndim: int, fix: str) -> tuple[int, ...]:
    """The sizes in the header of an IDX file of unsigned bytes with ``ndim`` dimensions (MNIST's format: the
    magic number 0x000008{ndim:02x}, ``ndim`` big-endian uint32 sizes, then the bytes), checked against the
    file's length. A file of another kind, cut short or too long is a ``UserError`` naming it and ``fix``."""
    kind = {3: "images", 1: "labels"}.get(ndim, f"{ndim}-dimensional")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; make it readable, or {fix}") from None
    if len(head) < 4:
        raise UserError(f"{path} is damaged: {size} bytes, too few for the header of an IDX file; {fix}")
    magic = struct.unpack(">I", head[:4])[0]
    if magic != 0x800 + ndim:
        raise UserError(f"{path} is not an MNIST {kind} file: its magic number is 0x{magic:08X}, an MNIST {kind} "
                        f"file starts with 0x{0x800 + ndim:08X}; {fix}")
    if len(head) < 4 + 4 * ndim:
        raise UserError(f"{path} is damaged: cut short inside its header ({size} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = 4 + 4 * ndim + math.prod(dims)
    if size < expected:
        raise UserError(f"{path} is damaged: cut short ({size} bytes, its header announces {expected}); {fix}")
    if size > expected:
        raise UserError(f"{path} is damaged: {size - expected} bytes more than its header announces ({expected}); "
                        f"{fix}")
    return dims


def check_mnist_files(images: Path, labels: Path) -> None:
    """One images file and its labels file: IDX files of the right kinds, whole, 28x28 images, one label per
    image (``idx_dimensions``; the labels' range is checked once they are read)."""
    fix = _REPLACE.format(raw=images.parent)
    n, h, w = idx_dimensions(images, 3, fix)
    (m,) = idx_dimensions(labels, 1, fix)
    if (h, w) != (28, 28):
        raise UserError(f"{images} holds images of {h}x{w} pixels, MNIST's are 28x28; {fix}")
    if n != m:
        raise UserError(f"{images} holds {n} images but {labels} holds {m} labels: the two files do not belong "
                        f"together; {fix}")
