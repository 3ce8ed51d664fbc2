"""Image sources read from files: an ImageFolder tree (ImageNet), decoded by a torchvision DataLoader or, on a
CUDA run with ``nvidia-dali`` installed, by a DALI pipeline on the run's GPU.

Both sources have the interface of ``fkal.data.sources.TensorSource`` (``__len__``, ``labels``, ``get(idx)``,
``batches(idx, batch_size, shuffle, generator, augment)`` yielding ``(positions, images)``, ``mean``, ``std``,
``image_shape``), so the loop, training and descriptors do not know where the pixels come from.

One set of numbers from either loader. Evaluation is torchvision's ``Resize(resize_size)`` then
``CenterCrop(image_size)``; training is ``RandomResizedCrop(image_size)`` then ``RandomHorizontalFlip()``. The
sizes and positions are computed by the pure functions below, which restate torchvision's formulas
(``resize_shorter``, ``center_crop_anchor``, ``crop_windows``; the tests compare them with torchvision's own code),
and the DALI pipeline is handed the results in pixels, so the two loaders differ only by what their JPEG decoders
and resamplers do. The random numbers of a training pass (the crop windows' draws and the flips) are drawn on the
host from the generator the caller passes, once per pass, in the order of the pass (``draw_crops``); neither the
DataLoader's worker processes nor DALI draw anything, and a pass without augmentation draws nothing. So a seed
gives the same batches whatever ran before in the process, however many workers decode, and whether DALI or
torchvision decodes (up to the decoders).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import UserError
from .files import _check_root
from .sources import RawData

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)            # RandomResizedCrop's defaults: area fraction and aspect-ratio range
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10                  # RandomResizedCrop.get_params tries 10 windows before its central fallback


@dataclass(frozen=True)
class ImageFolderLoader:
    """How an ImageFolder dataset (ImageNet) is read; calling it loads the data (``DatasetSpec.load``).

    ``{root}/{folder}/train/<class>/*.JPEG`` is the source of the pool, ``{root}/{folder}/val/<class>/*.JPEG`` the
    validation set and the test set (the same images, as in the paper). Training: ``RandomResizedCrop(image_size)``
    and a horizontal flip; evaluation: ``Resize(resize_size)`` and ``CenterCrop(image_size)``. On a CUDA run with
    ``nvidia-dali`` installed the images are decoded by DALI on the run's GPU (``backend="auto"``), else by a
    torchvision DataLoader with ``num_workers`` processes (None: min(8, CPU count)). See ``load_image_folder``.
    """

    folder: str = "ImageNet"
    num_classes: int = 1000              # the most classes the tree may have (the model's outputs)
    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_workers: Optional[int] = None
    backend: str = "auto"                # "auto", "torchvision" or "dali"

    def __post_init__(self):
        if self.resize_size < self.image_size:
            raise ValueError(f"resize_size {self.resize_size} is below image_size {self.image_size}: the center crop "
                             "would need padding")

    def __call__(self, root: str, download: bool = True, device: Optional[torch.device] = None) -> RawData:
        return load_image_folder(root, self, device)   # (no download: ImageNet is fetched and laid out by hand)


_announced: set[str] = set()


def announce(message: str) -> None:
    """Print a message once per process (the loader choice)."""
    if message not in _announced:
        _announced.add(message)
        print(message, flush=True)


def choose_backend(requested: str = "auto", device: Optional[torch.device] = None) -> tuple[str, str]:
    """``("dali" | "torchvision", why)``: DALI on a CUDA run (``device``) where it is installed, unless told
    otherwise. A CPU run (``device`` None or the CPU) never imports DALI and never touches CUDA."""
    if requested not in ("auto", "torchvision", "dali"):
        raise ValueError(f"unknown image loader backend {requested!r}")
    if requested == "torchvision":
        return "torchvision", "torchvision (as configured)"
    if device is None or torch.device(device).type != "cuda":
        if requested == "dali":
            raise UserError("the DALI loader decodes on a GPU: run with --gpu N")
        return "torchvision", "torchvision (a CPU run)"
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        if requested == "dali":
            raise UserError("DALI is not installed: pip install -r requirements-dali.txt") from None
        return "torchvision", "torchvision (DALI not installed)"
    except Exception as e:          # e.g. a DALI build that does not match the CUDA driver
        if requested == "dali":
            raise UserError(f"DALI is installed but does not import: {e}") from None
        return "torchvision", f"torchvision (DALI does not import: {e})"
    return "dali", f"DALI (GPU decode on {torch.device(device)})"


def load_image_folder(root: str, cfg: ImageFolderLoader, device: Optional[torch.device] = None) -> RawData:
    """``{root}/{cfg.folder}/train`` (the pool's source) and ``.../val`` (validation and test) as sources that
    decode for a run on ``device`` (None: the CPU).

    Class indices are the sorted class folder names of ``train``; ``val`` uses the same mapping (a class may be
    absent from ``val``, a class unknown to ``train`` is an error).
    """
    _check_root(root, f"{cfg.folder}/train and {cfg.folder}/val")
    base = Path(root) / cfg.folder
    layout = (f"put the images in {base}/train/<class>/*.JPEG and {base}/val/<class>/*.JPEG (the val images sorted "
              "into class folders), or pass --data-root with the folder that holds " + cfg.folder)
    for part in ("train", "val"):
        if not (base / part).is_dir():
            raise UserError(f"{cfg.folder} not found: {base / part} is not a folder; {layout}")
    try:
        train = ImageFolder(str(base / "train"))
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"cannot read {base / 'train'}: {e}; {layout}") from None
    if len(train.classes) > cfg.num_classes:
        raise UserError(f"{base / 'train'} has {len(train.classes)} class folders, more than the model's "
                        f"{cfg.num_classes} classes")
    entries = list(os.scandir(base / "val"))
    val_classes = sorted(e.name for e in entries if e.is_dir())
    if not val_classes:                     # the validation archive unpacks flat: its images are not sorted
        files = sum(1 for e in entries if e.is_file())
        raise UserError(f"{base / 'val'} has no class folder ({files} files directly in it, as the validation "
                        f"archive unpacks); {layout}")
    unknown = sorted(set(val_classes) - set(train.class_to_idx))
    if unknown:
        raise UserError(f"{base / 'val'} has class folders that train lacks: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''}")
    mapping = {c: train.class_to_idx[c] for c in val_classes}
    try:
        val = _FolderWithClasses(str(base / "val"), mapping)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"cannot read {base / 'val'}: {e}; {layout}") from None
    backend, why = choose_backend(cfg.backend, device)
    announce(f"{cfg.folder} loader: {why}")
    kind = DaliFolderSource if backend == "dali" else FolderSource
    val_source = kind(str(base / "val"), val.samples, cfg, device)
    return RawData(train=kind(str(base / "train"), train.samples, cfg, device), test=val_source, val=val_source)


class _FolderWithClasses(ImageFolder):
    """An ImageFolder whose class indices are given (those of the train folder) instead of found."""

    def __init__(self, root: str, class_to_idx: dict[str, int]):
        self.given = dict(class_to_idx)
        super().__init__(root)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return sorted(self.given, key=self.given.get), dict(self.given)


# ----------------------------------------------------------------------------------------------------------------
# torchvision's formulas, restated on arrays (one entry per image)
# ----------------------------------------------------------------------------------------------------------------
def resize_shorter(height, width, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(new_height, new_width)`` of torchvision's ``Resize(size)`` with an int ``size`` (shorter side to
    ``size``, longer side ``int(size * long / short)``: truncated, ``functional._compute_resized_output_size``)."""
    h, w = np.asarray(height, dtype=np.int64), np.asarray(width, dtype=np.int64)
    short, long = np.minimum(h, w), np.maximum(h, w)
    new_long = np.floor(size * long / short).astype(np.int64)      # float64 division, as Python's int / int
    portrait = w <= h
    return np.where(portrait, new_long, size), np.where(portrait, size, new_long)


def center_crop_anchor(height, width, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """``(top, left)`` of torchvision's ``CenterCrop(crop)`` on images at least ``crop`` on each side:
    ``int(round((side - crop) / 2.0))``, Python's round (halves to even, as ``np.rint``)."""
    h, w = np.asarray(height, dtype=np.int64), np.asarray(width, dtype=np.int64)
    if (h < crop).any() or (w < crop).any():
        raise ValueError(f"center crop of {crop} from an image smaller than that")
    return np.rint((h - crop) / 2.0).astype(np.int64), np.rint((w - crop) / 2.0).astype(np.int64)


@dataclass(frozen=True)
class CropDraws:
    """The random numbers of ``RandomResizedCrop`` and ``RandomHorizontalFlip`` for n images, drawn on the host.

    ``area`` [n, A] float32: target area fractions, uniform in ``scale``; ``log_ratio`` [n, A] float32: log aspect
    ratios, uniform in ``log(ratio)`` (A attempts each, as ``get_params``); ``top``, ``left`` [n] float64 in [0, 1):
    where the window sits among its possible rows and columns; ``flip`` [n] bool.
    """

    area: np.ndarray
    log_ratio: np.ndarray
    top: np.ndarray
    left: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.flip)

    def rows(self, sl) -> "CropDraws":
        return CropDraws(self.area[sl], self.log_ratio[sl], self.top[sl], self.left[sl], self.flip[sl])


def draw_crops(n: int, generator: Optional[torch.Generator], scale: Sequence[float] = CROP_SCALE,
               ratio: Sequence[float] = CROP_RATIO, attempts: int = CROP_ATTEMPTS) -> CropDraws:
    """The draws of n training crops and flips from ``generator``: always the same amount of numbers for n images
    (four tensors in a fixed order), so what follows in the generator does not depend on the image sizes."""
    u = torch.rand((n, attempts, 2), generator=generator)                          # float32, as get_params
    pos = torch.rand((n, 2), generator=generator, dtype=torch.float64)
    flip = torch.rand(n, generator=generator) < 0.5                                 # RandomHorizontalFlip(p=0.5)
    log_ratio = torch.log(torch.tensor(ratio))                                      # float32, as get_params
    area = scale[0] + (scale[1] - scale[0]) * u[..., 0]
    log_r = log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[..., 1]
    return CropDraws(area.numpy(), log_r.numpy(), pos[:, 0].numpy(), pos[:, 1].numpy(), flip.numpy())


def crop_windows(height, width, draws: CropDraws, ratio: Sequence[float] = CROP_RATIO) -> np.ndarray:
    """``[n, 4]`` windows ``(top, left, h, w)`` of ``RandomResizedCrop.get_params`` for images of the given sizes
    and the given draws: per attempt ``w = round(sqrt(area * a * r))``, ``h = round(sqrt(area * a / r))`` with
    ``r = exp(log_ratio)``; the first attempt that fits is placed at ``floor(u * (side - crop + 1))``; when none
    fits, the central fallback (the whole image, its aspect ratio clamped into ``ratio``). Arithmetic as
    torchvision's: float64 products of the float32 draws, round halves to even."""
    H = np.asarray(height, dtype=np.float64)[:, None]                              # [n, 1]
    W = np.asarray(width, dtype=np.float64)[:, None]
    target = (H * W) * draws.area.astype(np.float64)                               # [n, A]
    aspect = np.exp(draws.log_ratio.astype(np.float64)).astype(np.float32).astype(np.float64)
    w = np.rint(np.sqrt(target * aspect))
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)                                  # [n, A]
    first = fits.argmax(1)
    rows = np.arange(len(first))
    found = fits[rows, first]
    H, W = H[:, 0], W[:, 0]
    w, h = w[rows, first], h[rows, first]
    top = np.minimum(np.floor(draws.top * (H - h + 1)), H - h)
    left = np.minimum(np.floor(draws.left * (W - w + 1)), W - w)
    # central fallback (no draw): the whole image, narrowed to the nearest allowed aspect ratio
    lo, hi = min(ratio), max(ratio)
    in_ratio = W / H
    fw = np.where(in_ratio < lo, W, np.where(in_ratio > hi, np.rint(H * hi), W))
    fh = np.where(in_ratio < lo, np.rint(W / lo), H)
    out = np.stack([np.where(found, top, (H - fh) // 2), np.where(found, left, (W - fw) // 2),
                    np.where(found, h, fh), np.where(found, w, fw)], 1)
    return out.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# torchvision loader
# ----------------------------------------------------------------------------------------------------------------
class _Files(Dataset):
    """Images by position in the source's file list. An item's key is ``(i, None)``: the evaluation transform, or
    ``(i, draws)``: the training crop and flip of ``draws`` (one image's ``CropDraws``, drawn by the host; the
    window follows from them and the decoded size, ``crop_windows``)."""

    def __init__(self, root: str, paths: np.ndarray, eval_transform, normalize, size: int, ratio: Sequence[float]):
        self.root, self.paths = root, paths
        self.eval_transform, self.normalize, self.size, self.ratio = eval_transform, normalize, size, tuple(ratio)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> torch.Tensor:
        i, draws = key
        path = os.path.join(self.root, self.paths[i].decode())
        try:
            image = default_loader(path)
        except Exception as e:              # PIL: truncated, not an image, unreadable
            raise UserError(f"cannot decode {path}: {' '.join(str(e).split()) or type(e).__name__}; replace the "
                            "file with a whole image, or move it out of the class folder") from None
        if draws is None:
            return self.eval_transform(image)
        (top, left, h, w), = crop_windows([image.height], [image.width], draws, self.ratio).tolist()
        # RandomResizedCrop.forward with these parameters, then RandomHorizontalFlip
        image = TF.resized_crop(image, top, left, h, w, [self.size, self.size], InterpolationMode.BILINEAR,
                                antialias=True)
        return self.normalize(TF.hflip(image) if draws.flip[0] else image)


class _PassPlan(Sampler):
    """The batch sampler of a kept DataLoader: the item keys of each batch of the pass set last (``set``). The
    DataLoader asks it for a new iterator at the start of every pass, in the main process, and sends the keys to
    its workers, so one loader (and its worker processes) serves passes over any images."""

    def __init__(self):
        self.set(np.empty(0, dtype=np.int64), 1, None)

    def set(self, files: np.ndarray, batch_size: int, draws: Optional[CropDraws],
            sizes: Optional[Sequence[int]] = None) -> None:
        """The pass: ``files`` in order, cut into batches of ``batch_size`` or, where given, of ``sizes``."""
        self.files, self.batch_size, self.draws = files, batch_size, draws
        self.bounds = (np.cumsum([0, *sizes]) if sizes is not None else
                       np.append(np.arange(0, len(files), batch_size), len(files)))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __iter__(self):
        files, draws, bounds = self.files, self.draws, self.bounds

        def keys():
            for start, stop in zip(bounds[:-1], bounds[1:]):
                part = files[start:stop].tolist()
                if draws is None:
                    yield [(i, None) for i in part]
                else:
                    yield [(i, draws.rows(slice(k, k + 1))) for k, i in enumerate(part, start)]
        return keys()


def _worker_error(e: UserError) -> UserError:
    """A ``UserError`` raised in a DataLoader worker arrives with the worker's traceback in its message; keep its
    own line."""
    lines = str(e).strip().splitlines()
    own = [line.split("UserError: ", 1)[1] for line in lines if "UserError: " in line]
    return UserError(own[-1] if own else lines[-1] if lines else str(e))


class FolderSource:
    """Images in files, decoded per batch by a ``torch.utils.data.DataLoader`` with ``num_workers`` processes.

    The DataLoader is made on the first pass and kept, with ``persistent_workers`` (the documented way to keep the
    worker processes between passes); every pass hands it a new batch plan. A pass started while another one of
    the same source is still under way gets a DataLoader of its own for that pass. Batches are pinned
    (``pin_memory``) only on a CUDA run, so a CPU run never touches CUDA. The DataLoader draws its workers' base seed
    from a private generator, not from the global one (nothing random happens in the workers).

    Paths are kept as one numpy bytes array relative to ``root`` (1.28M ImageNet paths take ~40 MB, and worker
    processes share it without touching per-item reference counts).
    """

    def __init__(self, root: str, samples: list[tuple[str, int]], cfg: ImageFolderLoader,
                 device: Optional[torch.device] = None):
        self.root = root
        prefix = os.path.join(root, "")
        self.paths = np.array([(p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)).encode()
                               for p, _ in samples])
        self.labels = np.array([c for _, c in samples], dtype=np.int64)
        self.image_size, self.resize_size = cfg.image_size, cfg.resize_size
        self.num_workers = min(8, os.cpu_count() or 1) if cfg.num_workers is None else cfg.num_workers
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.normalize = T.Compose([T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
        self.eval_transform = T.Compose([T.Resize(cfg.resize_size), T.CenterCrop(cfg.image_size), self.normalize])
        self.crop_scale, self.crop_ratio = CROP_SCALE, CROP_RATIO
        self._kept: Optional[tuple[DataLoader, _PassPlan]] = None
        self._busy = False

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A short digest of the file list and labels (not the pixels: reading 1.28M files takes too long)."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(b"\0".join(self.paths.tolist()))
            h.update(self.labels.tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def get(self, idx: np.ndarray) -> torch.Tensor:
        """Normalized (evaluation-transformed) images ``[len(idx), 3, S, S]`` on the CPU, decoded by the
        torchvision loader (also in ``DaliFolderSource``: small random reads such as VAAL's steps)."""
        parts = [x.cpu() for _, x in FolderSource.batches(self, idx, 256)]
        return torch.cat(parts) if parts else torch.empty((0, *self.image_shape))

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)`` as ``TensorSource.batches``; ``augment`` uses the training transform, its
        random numbers drawn from ``generator`` after the shuffle (``draw_crops``)."""
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        draws = draw_crops(len(idx), generator, self.crop_scale, self.crop_ratio) if augment else None
        files = idx[order]
        with self._pass_loader() as (loader, plan):
            plan.set(files, batch_size, draws)
            start = 0
            for x in loader:
                yield order[start:start + len(x)], x
                start += len(x)

    def batches_of(self, idx: np.ndarray, groups: list[np.ndarray], augment: bool = False,
                   generator: Optional[torch.Generator] = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(positions, images)`` for explicit batches of positions into ``idx`` (a rank's shares of the global
        training batches, ``fkal.training.epoch_batches``). The crops and flips are drawn from ``generator`` for
        all of ``idx`` (the same draws on every rank) and each image takes its own, so an image is cut the same
        way whichever rank reads it. Decoded by the torchvision loader, also in ``DaliFolderSource``."""
        idx = np.asarray(idx)
        flat = np.concatenate([np.asarray(g) for g in groups]) if groups else np.zeros(0, dtype=np.int64)
        draws = draw_crops(len(idx), generator, self.crop_scale, self.crop_ratio) if augment else None
        with self._pass_loader() as (loader, plan):
            plan.set(idx[flat], 1, None if draws is None else draws.rows(flat), [len(g) for g in groups])
            for pos, x in zip(groups, loader):
                yield np.asarray(pos), x

    @contextmanager
    def _pass_loader(self) -> Iterator[tuple[DataLoader, _PassPlan]]:
        """The loader of one pass: the kept one (its workers persist between passes), or a loader of its own for a
        pass inside another pass of this source. A worker's ``UserError`` comes out as one error line."""
        nested = self._busy
        if nested:
            pair = self._new_loader(persistent=False)
        else:
            if self._kept is None:
                self._kept = self._new_loader(persistent=True)
            pair, self._busy = self._kept, True
        try:
            yield pair
        except UserError as e:
            raise _worker_error(e) from None
        finally:
            if not nested:
                self._busy = False

    def _new_loader(self, persistent: bool) -> tuple[DataLoader, _PassPlan]:
        plan = _PassPlan()
        files = _Files(self.root, self.paths, self.eval_transform, self.normalize, self.image_size, self.crop_ratio)
        loader = DataLoader(files, batch_sampler=plan, num_workers=self.num_workers,
                            persistent_workers=persistent and self.num_workers > 0,
                            pin_memory=self.device.type == "cuda", generator=torch.Generator())
        return loader, plan


# ----------------------------------------------------------------------------------------------------------------
# DALI loader
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DaliPass:
    """One pass of the DALI loader, planned on the host.

    ``files`` [n]: positions into the source, in the order of the pass; ``order`` [n]: the positions into the
    caller's ``idx`` they come from. Per image: ``resize`` [n, 2] (height, width) to resize to, ``anchor`` [n, 2]
    (top, left) and ``shape`` [n, 2] (height, width) of the window cut out (after the resize in evaluation: the
    center crop; before it in training: the random crop), ``flip`` [n] (0 or 1). All in pixels.
    """

    files: np.ndarray
    order: np.ndarray
    batch_size: int
    augment: bool
    resize: np.ndarray
    anchor: np.ndarray
    shape: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_batches(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def batch(self, k: int) -> dict[str, np.ndarray]:
        """The per-image arguments of batch k, ``batch_size`` rows: a short last batch is padded by repeating its
        last image, as the reader pads it (``pad_last_batch=True``)."""
        rows = np.minimum(np.arange(k * self.batch_size, (k + 1) * self.batch_size), len(self.files) - 1)
        return {"resize_y": self.resize[rows, 0].astype(np.float32),           # [B] (one scalar per image)
                "resize_x": self.resize[rows, 1].astype(np.float32),
                "anchor": self.anchor[rows].astype(np.float32),                # [B, 2] (exact: integers < 2^24)
                "shape": self.shape[rows].astype(np.float32),
                "flip": self.flip[rows].astype(np.int32)}


class DaliFolderSource(FolderSource):
    """A ``FolderSource`` whose passes are decoded, resized and normalized by NVIDIA DALI on the run's GPU.

    Each ``batches()`` pass builds one pipeline and frees it at the end of the pass:

    - ``fn.readers.file`` over the pass's files in the pass's order (``random_shuffle=False``, one shard: under
      torchrun each rank's pass is already its own share of the pool, whole batches dealt out round-robin by
      ``fkal.distributed.sharded``, so each rank's pipeline reads only its own files), ``pad_last_batch=True``, with
      each file's position in the pass as its label; ``DALIGenericIterator`` with ``reader_name`` and
      ``LastBatchPolicy.PARTIAL`` returns every image once, the last batch short (the padding dropped). The labels
      come back with the images and are checked against the expected positions.
    - ``fn.decoders.image(device="mixed")`` on ``device_id`` = the run's GPU, with ``adjust_orientation=False``
      (PIL's ``default_loader`` ignores EXIF orientation too, and the header sizes below are the stored ones) and
      ``jpeg_fancy_upsampling=True`` (libjpeg-turbo's chroma upsampling, which PIL uses).
    - evaluation: ``fn.resize`` to the size torchvision's ``Resize`` gives, then ``fn.slice`` of the center crop at
      torchvision's anchor; training: ``fn.slice`` of the crop window, then ``fn.resize`` to ``image_size``
      (bilinear with antialiasing when shrinking, as PIL's); the sizes, anchors and windows come in through
      ``fn.external_source`` in pixels (``normalized_anchor=False``, ``normalized_shape=False``,
      ``axis_names="HW"``). A callback source with one argument receives the iteration index; indices past the
      end (DALI prefetches ahead) get the same batches again, which the iterator drops.
    - ``fn.crop_mirror_normalize`` with the host's flips (``mirror``) and the mean and std, as float32 CHW.

    The pipeline runs pipelined and asynchronously (``exec_pipelined=True``, ``exec_async=True``,
    ``prefetch_queue_depth=2``), so reading and decoding overlap the model's work; nothing in it draws random
    numbers (its seed is fixed to 0 only to say so). The plan needs every image's size before decoding: read from
    the file headers (``PIL.Image.open(...).size``, no decoding) the first time an image is asked for, in
    ``num_workers`` threads, and kept. ``get(idx)`` (small random reads, VAAL's steps) decodes with the torchvision
    loader, where a pipeline per call would cost more than it saves.
    """

    def __init__(self, root: str, samples: list[tuple[str, int]], cfg: ImageFolderLoader,
                 device: Optional[torch.device] = None):
        super().__init__(root, samples, cfg, device)
        if self.device.type != "cuda":
            raise ValueError(f"the DALI loader decodes on a CUDA device, not on {self.device}")
        # the run's GPU; torch.device("cuda") without an index means the current device (torch.cuda.set_device)
        self.device_id = torch.cuda.current_device() if self.device.index is None else self.device.index
        self.mean_255 = [255.0 * m for m in cfg.mean]
        self.std_255 = [255.0 * s for s in cfg.std]
        self._sizes = np.full((len(self.labels), 2), -1, dtype=np.int64)       # (height, width), -1: not read yet

    def image_sizes(self, files: np.ndarray) -> np.ndarray:
        """``[len(files), 2]`` (height, width) of the source's images ``files``, from the file headers."""
        files = np.asarray(files, dtype=np.int64)
        missing = np.unique(files[self._sizes[files, 0] < 0])
        if len(missing):
            from PIL import Image

            def size(i: int) -> tuple[int, int]:
                with Image.open(os.path.join(self.root, self.paths[i].decode())) as image:
                    return image.height, image.width
            with ThreadPoolExecutor(max(1, self.num_workers)) as pool:
                self._sizes[missing] = np.array(list(pool.map(size, missing.tolist())), dtype=np.int64).reshape(-1, 2)
        return self._sizes[files]

    def plan(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
             generator: Optional[torch.Generator] = None, augment: bool = False) -> DaliPass:
        """The host's part of a pass: the same generator draws, in the same order, as ``FolderSource.batches``
        (the shuffle, then ``draw_crops`` when augmenting), and the pixel arguments from torchvision's formulas."""
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        draws = draw_crops(len(idx), generator, self.crop_scale, self.crop_ratio) if augment else None
        files = idx[order]
        sizes = self.image_sizes(files)                                          # [n, 2]
        S = self.image_size
        full = np.full((len(files), 2), S, dtype=np.int64)
        if augment:
            windows = crop_windows(sizes[:, 0], sizes[:, 1], draws, self.crop_ratio)   # [n, 4]
            return DaliPass(files, order, batch_size, True, resize=full, anchor=windows[:, :2], shape=windows[:, 2:],
                            flip=draws.flip.astype(np.int64))
        rh, rw = resize_shorter(sizes[:, 0], sizes[:, 1], self.resize_size)
        top, left = center_crop_anchor(rh, rw, S)
        return DaliPass(files, order, batch_size, False, resize=np.stack([rh, rw], 1), anchor=np.stack([top, left], 1),
                        shape=full, flip=np.zeros(len(files), dtype=np.int64))

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)`` as ``TensorSource.batches``; images are float32 on the run's GPU."""
        plan = self.plan(idx, batch_size, shuffle, generator, augment)
        if len(plan):
            yield from self._run(plan)

    def _run(self, plan: DaliPass) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        n, nb = len(plan), plan.num_batches
        files = [p.decode() for p in self.paths[plan.files].tolist()]
        mean, std = self.mean_255, self.std_255

        def column(name: str):
            return lambda iteration: plan.batch(iteration % nb)[name]

        def pixels(name: str, ndim: int):
            return fn.external_source(source=column(name), batch=True, dtype=types.FLOAT, ndim=ndim)

        @pipeline_def(batch_size=plan.batch_size, num_threads=max(1, self.num_workers), device_id=self.device_id,
                      seed=0, exec_pipelined=True, exec_async=True, prefetch_queue_depth=2)
        def pipe():
            jpegs, positions = fn.readers.file(file_root=self.root, files=files, labels=list(range(n)),
                                               random_shuffle=False, pad_last_batch=True, name="Reader")
            images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB, adjust_orientation=False,
                                       jpeg_fancy_upsampling=True)
            resize = dict(resize_y=pixels("resize_y", 0), resize_x=pixels("resize_x", 0),
                          interp_type=types.INTERP_LINEAR, antialias=True)
            window = dict(axis_names="HW", normalized_anchor=False, normalized_shape=False)
            if plan.augment:
                images = fn.slice(images, pixels("anchor", 1), pixels("shape", 1), **window)
                images = fn.resize(images, **resize)
                flip = fn.external_source(source=column("flip"), batch=True, dtype=types.INT32, ndim=0)
                images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std,
                                                  mirror=flip)
            else:
                images = fn.resize(images, **resize)
                images = fn.slice(images, pixels("anchor", 1), pixels("shape", 1), **window)
                images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std)
            return images, positions

        pipeline = pipe()
        batches = DALIGenericIterator([pipeline], ["images", "positions"], reader_name="Reader",
                                      last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
        try:
            start = 0
            for (out,) in batches:
                x, got = out["images"], out["positions"].reshape(-1).cpu().numpy()
                if not np.array_equal(got, np.arange(start, start + len(x))):
                    raise RuntimeError(f"DALI returned the pass's images {got[:8].tolist()}... where "
                                       f"{start}..{start + len(x) - 1} were expected")
                yield plan.order[start:start + len(x)], x
                start += len(x)
            if start != n:
                raise RuntimeError(f"DALI returned {start} of the pass's {n} images")
        finally:
            del batches, pipeline           # the pass's GPU buffers and threads go with them
