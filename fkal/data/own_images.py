"""The user's own images as a data source: a folder or CSV of unlabeled images (the pool), labeled images as a
``path,label`` CSV or an ImageFolder tree, and the validation set D_v that stands for the target distribution.

Reading (``read_pool``, ``read_labeled``) gives absolute paths and class NAMES; ``ImageCache`` decodes every image
once into one uint8 array ``[N, C, S, S]`` (a memory-mapped ``.npy`` file) that later rounds map without decoding;
``build_aldata`` makes the ``fkal.data.ALData`` every acquisition reads, with label -1 where nobody has given one.

Paths: a relative path in a CSV is read relative to the folder of that CSV; every path is resolved (absolute,
symbolic links followed), so the same file always has the same name. Images: PNG or JPEG (``IMAGE_SUFFIXES``, any
letter case), converted to grey (1 channel) or RGB (3 channels) as the model needs, then scaled and center-cropped
to S x S (``PIL.ImageOps.fit``).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..io import atomic_path, save_json
from .protocol import DatasetSpec
from .sources import RawData, TensorSource
from .split import ALData, Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------------------------------
# Reading the user's files: paths and class names
# ----------------------------------------------------------------------------------------------------------------
def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: Path) -> list[Path]:
    """Every PNG / JPEG file below ``folder`` (any nesting; hidden files and folders skipped), resolved, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in filenames if not f.startswith(".") and is_image(Path(f)))
    return sorted(p.resolve() for p in found)


def resolve(path: str, base: Path) -> Path:
    """``path`` as written in a file in folder ``base``: absolute as it is, relative to ``base`` otherwise."""
    p = Path(path.strip()).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def csv_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of a CSV whose first row may be a header naming ``columns`` (in any order, other
    columns ignored); without a header the first ``len(columns)`` cells are taken in that order. Blank lines are
    skipped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not rows:
        raise UserError(f"{path} is empty: it should list {','.join(columns)} per line")
    head = [c.strip().lower() for c in rows[0][1]]
    if all(c in head for c in columns):
        order = [head.index(c) for c in columns]
        rows = rows[1:]
    elif set(head) & set(columns) or "label" in head:
        raise UserError(f"{path}: the header {','.join(rows[0][1])} must name the columns {','.join(columns)}")
    else:
        order = list(range(len(columns)))
    out = []
    for n, row in rows:
        if len(row) <= max(order):
            raise UserError(f"{path}:{n}: expected {len(columns)} columns ({','.join(columns)}), got "
                            f"{','.join(row)!r}")
        out.append((n, [row[i].strip() for i in order]))
    return out


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise UserError(f"{where}: {path} does not exist: fix the path (a relative path is read from the folder of "
                        "the file that names it)")
    if not is_image(path):
        raise UserError(f"{where}: {path} is not a PNG or JPEG file (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return path


def _no_duplicates(paths: Sequence[Path], lines: Sequence[int], source: Path) -> None:
    first: dict[Path, int] = {}
    for p, n in zip(paths, lines):
        if p in first:
            raise UserError(f"{source}:{n}: {p} is listed twice (also on line {first[p]}): list every image once")
        first[p] = n


def read_pool(source: str | Path) -> list[Path]:
    """The unlabeled pool: every image below a folder, or the paths of a CSV (a ``path`` column or one path per
    line)."""
    source = Path(source).expanduser()
    if source.is_dir():
        paths = find_images(source)
        if not paths:
            raise UserError(f"the pool folder {source} holds no PNG or JPEG file: point --pool at your images")
        return paths
    if source.is_file() and source.suffix.lower() == ".csv":
        rows = csv_rows(source, ("path",))
        paths = [_existing(resolve(cells[0], source.parent), f"{source}:{n}") for n, cells in rows]
        _no_duplicates(paths, [n for n, _ in rows], source)
        return paths
    raise UserError(f"--pool {source}: expected a folder of images or a .csv file of image paths")


def read_labeled(source: str | Path, what: str = "--labeled") -> list[tuple[Path, str]]:
    """Labeled images ``(path, class name)``: a CSV ``path,label`` or an ImageFolder tree ``{root}/{class}/...``
    (every image below a class folder, at any depth)."""
    source = Path(source).expanduser()
    if source.is_dir():
        out = []
        for p in find_images(source):
            rel = p.relative_to(source.resolve())
            if len(rel.parts) < 2:
                raise UserError(f"{what} {source}: {p.name} is not inside a class folder: an ImageFolder tree keeps "
                                "each image in {root}/{class name}/")
            out.append((p, rel.parts[0]))
        if not out:
            raise UserError(f"{what} {source} holds no PNG or JPEG file in a class folder ({source}/CLASS/IMAGE.png)")
        return out
    if source.is_file() and source.suffix.lower() == ".csv":
        out, lines = [], []
        for n, (path, label) in csv_rows(source, ("path", "label")):
            if not label:
                raise UserError(f"{source}:{n}: the label of {path} is empty: give every image its class name")
            out.append((_existing(resolve(path, source.parent), f"{source}:{n}"), label))
            lines.append(n)
        _no_duplicates([p for p, _ in out], lines, source)
        return out
    raise UserError(f"{what} {source}: expected an ImageFolder tree (a folder of class folders) or a .csv file "
                    "with the columns path,label")


def stratified_share(labels: Sequence[str], share: float, generator: torch.Generator) -> np.ndarray:
    """Positions of a seeded ``share`` of the items of every class (at least one of each class that has two or
    more, never all of a class): the validation set drawn from the labeled images. Sorted ``[M]``."""
    labels = np.asarray(labels)
    picked = []
    for c in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == c)
        k = int(round(share * len(members)))
        k = min(max(k, 1 if len(members) > 1 else 0), len(members) - 1)
        order = torch.randperm(len(members), generator=generator).numpy()
        picked.append(members[order[:k]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------------------------
def load_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 ``[channels, size, size]``: grey or RGB, scaled and center-cropped to a square."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (size, size):
                im = ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
            a = np.array(im, dtype=np.uint8)          # a writable copy
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the image {path}: {e}: remove it from the list or replace it") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


class _Decode(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], size: int, channels: int):
        self.paths, self.size, self.channels = list(paths), size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.paths[i], self.size, self.channels))


@dataclass(frozen=True)
class ImageCache:
    """All images of a project decoded once: ``{folder}/pixels_{C}x{S}.npy`` (uint8 ``[N, C, S, S]``, rows in
    the order of ``paths``) and ``pixels_{C}x{S}.json`` (a key of the paths, their sizes and modification times).
    A changed, added or removed file changes the key, and the array is decoded again."""

    folder: Path
    size: int
    channels: int

    @property
    def array_path(self) -> Path:
        return self.folder / f"pixels_{self.channels}x{self.size}.npy"

    @property
    def key_path(self) -> Path:
        return self.array_path.with_suffix(".json")

    @staticmethod
    def key(paths: Sequence[str]) -> str:
        h = hashlib.sha256()
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                raise UserError(f"{p} has gone: put it back, or start a new --state folder without it") from None
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def load(self, paths: Sequence[str], progress: bool = True, workers: Optional[int] = None) -> np.ndarray:
        """The pixels of ``paths`` (read-only memory map, copy-on-write), decoding them first unless the cache
        holds them. ``workers``: decoding processes (default: up to 8 for more than 2,000 images, else none)."""
        key = self.key(paths)
        shape = (len(paths), self.channels, self.size, self.size)
        if self.key_path.exists() and self.array_path.exists():
            meta = json.loads(self.key_path.read_text())
            if meta.get("key") == key and tuple(meta.get("shape", ())) == shape:
                return np.load(self.array_path, mmap_mode="c")
        if workers is None:
            workers = min(8, os.cpu_count() or 1) if len(paths) > 2000 else 0
        loader = torch.utils.data.DataLoader(_Decode(paths, self.size, self.channels), batch_size=256,
                                             num_workers=workers)
        with atomic_path(self.array_path) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            start = 0
            try:
                for batch in tqdm(loader, desc=f"decoding {len(paths)} images", leave=False, disable=not progress):
                    arr[start:start + len(batch)] = batch.numpy()
                    start += len(batch)
            except UserError as e:                   # raised again by a worker process: keep its last line only
                raise UserError(str(e).strip().splitlines()[-1].removeprefix("fkal.errors.UserError: ")) from None
            finally:
                arr.flush()
                del arr
        save_json({"key": key, "shape": list(shape)}, self.key_path)
        return np.load(self.array_path, mmap_mode="c")


def channel_stats(pixels: np.ndarray, rows: Optional[np.ndarray] = None,
                  chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``[N, C, S, S]`` (``rows`` of them), in [0, 1] units, in chunks."""
    rows = np.arange(len(pixels)) if rows is None else np.asarray(rows)
    c = pixels.shape[1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(rows), chunk):
        x = np.asarray(pixels[np.sort(rows[start:start + chunk])], dtype=np.float64) / 255.0   # [B, C, S, S]
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


# ----------------------------------------------------------------------------------------------------------------
# The ALData of a labeling round
# ----------------------------------------------------------------------------------------------------------------
def build_aldata(spec: DatasetSpec, source: TensorSource, candidates: np.ndarray, val: np.ndarray,
                 labels: np.ndarray) -> ALData:
    """``ALData`` over one source holding every image of the project.

    candidates: [N] rows of the images that can be labeled and trained on (the pool and the given labeled
        images); ``split.pool``. val: [M] rows of D_v. labels: [len(source)] class index per row, -1 where no label
        is known (the source's ``labels``; ``split.pool_labels`` are those of the candidates).
    The same source serves as validation and test source (``raw.val`` and ``raw.test``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    source.labels = labels
    if (labels[val] < 0).any():
        raise ValueError("every validation image needs a label")
    split = Split(pool=np.asarray(candidates, dtype=np.int64), pool_labels=labels[candidates].copy(),
                  val=np.asarray(val, dtype=np.int64), seed=0, imbalance_ratio=1.0)
    return ALData(spec, RawData(train=source, test=source, val=source), split)
