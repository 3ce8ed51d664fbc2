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
    """MNIST through ``torchvision.datasets.MNIST``; ``root`` holds ``MNIST/raw``. When one of the four files is
    missing, they are looked for in other layouts (``_misplaced``: an error naming them) and else downloaded when
    allowed (torchvision downloads only the missing ones). The files are checked (``check_mnist_files``) before
    torchvision reads them."""
    from torchvision.datasets import MNIST

    _check_root(root, "MNIST/raw")
    raw = Path(root) / "MNIST" / "raw"
    what = "MNIST/raw/train-images-idx3-ubyte (and the other three idx files)"
    names = FILES[True] + FILES[False]             # torchvision reads either set only when all four are there
    if not all((raw / name).is_file() for name in names):
        misplaced = _misplaced(Path(root), names)
        if misplaced:
            raise UserError(f"MNIST's files are not where they are read from: found {', '.join(misplaced)}, read "
                            f"as {raw}/{{{','.join(names)}}}; move (and rename) them there, or pass --data-root "
                            "with the folder that holds MNIST/raw")
        if not download:
            raise _missing("MNIST", root, what)
        with _undo_new_folders(Path(root) / "MNIST"):
            try:
                MNIST(root, train=True, download=True)
            except Exception:
                raise _missing("MNIST", root, what) from None
    sets = []
    for train in (True, False):
        check_mnist_files(raw / FILES[train][0], raw / FILES[train][1])
        try:
            ds = MNIST(root, train=train, download=False)
        except Exception as e:              # checked above; anything left is a file torchvision cannot parse
            raise UserError(f"cannot read {raw / FILES[train][0]}: {type(e).__name__} {e}; "
                            f"{_REPLACE.format(raw=raw)}") from None
        if int(ds.targets.max()) > 9 or int(ds.targets.min()) < 0:
            raise UserError(f"{raw / FILES[train][1]} holds labels outside 0-9: {_REPLACE.format(raw=raw)}")
        sets.append(TensorSource(ds.data, ds.targets.numpy(), MNIST_MEAN, MNIST_STD))
    return RawData(train=sets[0], test=sets[1])


# Where MNIST's IDX files are put by hand in layouts other than torchvision's, and the names other copies use
# (Kaggle's "train-images.idx3-ubyte"); looked at only when a file is missing from MNIST/raw, never walked.
_ELSEWHERE = (".", "MNIST", "mnist", "raw", "mnist/raw", "MNIST/MNIST/raw")


def _other_names(name: str) -> tuple[str, ...]:
    return (name, name.replace("-idx", ".idx"))


def _misplaced(root: Path, names: tuple[str, ...]) -> list[str]:
    """Files of ``names`` (or their other common names) found in another layout under ``root``, or under
    another name in ``MNIST/raw``; [] when none."""
    found = []
    for folder in ("MNIST/raw", *_ELSEWHERE):
        for name in names:
            found += [str(root / folder / other) for other in _other_names(name)
                      if (root / folder / other).is_file() and not (folder == "MNIST/raw" and other == name)]
    return [str(Path(f)) for f in found]


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
