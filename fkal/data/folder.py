"""Image sources read from files: an ImageFolder tree (ImageNet) decoded by a torchvision DataLoader or, when
``nvidia-dali`` is installed and a GPU is present, by a DALI pipeline on the GPU.

Both sources have the interface of ``fkal.data.sources.TensorSource`` (``__len__``, ``labels``, ``get(idx)``,
``batches(idx, batch_size, shuffle, generator, augment)`` yielding ``(positions, images)``, ``mean``, ``std``,
``image_shape``), so the loop, training and descriptors do not know where the pixels come from.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from ..errors import UserError
from .files import _check_root
from .sources import RawData

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageFolderLoader:
    """How an ImageFolder dataset (ImageNet) is read; calling it loads the data (``DatasetSpec.load``).

    ``{root}/{folder}/train/<class>/*.JPEG`` is the source of the pool, ``{root}/{folder}/val/<class>/*.JPEG`` the
    validation set and the test set (the same images, as in the paper). Training: ``RandomResizedCrop(image_size)``
    and a horizontal flip; evaluation: ``Resize(resize_size)`` and ``CenterCrop(image_size)``. The images are
    decoded by DALI on the GPU when ``nvidia-dali`` is installed and a GPU is present (``backend="auto"``), else by
    a torchvision DataLoader with ``num_workers`` processes (None: min(8, CPU count)). See ``load_image_folder``.
    """

    folder: str = "ImageNet"
    num_classes: int = 1000              # the most classes the tree may have (the model's outputs)
    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_workers: Optional[int] = None
    backend: str = "auto"                # "auto", "torchvision" or "dali"

    def __call__(self, root: str, download: bool = True) -> RawData:
        return load_image_folder(root, self)    # (no download: ImageNet is fetched and laid out by hand)


_announced: set[str] = set()


def announce(message: str) -> None:
    """Print a message once per process (the loader choice)."""
    if message not in _announced:
        _announced.add(message)
        print(message, flush=True)


def choose_backend(requested: str = "auto") -> tuple[str, str]:
    """``("dali" | "torchvision", why)``: DALI when it is installed and a GPU is present, unless told otherwise."""
    if requested not in ("auto", "torchvision", "dali"):
        raise ValueError(f"unknown image loader backend {requested!r}")
    if requested == "torchvision":
        return "torchvision", "torchvision (as configured)"
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
    if not torch.cuda.is_available():
        if requested == "dali":
            raise UserError("the DALI loader decodes on the GPU, and no CUDA GPU is visible")
        return "torchvision", "torchvision (no GPU for DALI)"
    return "dali", "DALI (GPU decode)"


def load_image_folder(root: str, cfg: ImageFolderLoader) -> RawData:
    """``{root}/{cfg.folder}/train`` (the pool's source) and ``.../val`` (validation and test) as sources.

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
    val_classes = sorted(e.name for e in os.scandir(base / "val") if e.is_dir())
    unknown = sorted(set(val_classes) - set(train.class_to_idx))
    if unknown:
        raise UserError(f"{base / 'val'} has class folders that train lacks: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''}")
    mapping = {c: train.class_to_idx[c] for c in val_classes}
    try:
        val = _FolderWithClasses(str(base / "val"), mapping)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"cannot read {base / 'val'}: {e}; {layout}") from None
    backend, why = choose_backend(cfg.backend)
    announce(f"{cfg.folder} loader: {why}")
    kind = DaliFolderSource if backend == "dali" else FolderSource
    val_source = kind(str(base / "val"), val.samples, cfg)
    return RawData(train=kind(str(base / "train"), train.samples, cfg), test=val_source, val=val_source)


class _FolderWithClasses(ImageFolder):
    """An ImageFolder whose class indices are given (those of the train folder) instead of found."""

    def __init__(self, root: str, class_to_idx: dict[str, int]):
        self.given = dict(class_to_idx)
        super().__init__(root)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return sorted(self.given, key=self.given.get), dict(self.given)


class _Files(Dataset):
    """Images by relative path under ``root``, each through ``transform``."""

    def __init__(self, root: str, paths: np.ndarray, transform):
        self.root, self.paths, self.transform = root, paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = os.path.join(self.root, self.paths[i].decode())
        try:
            image = default_loader(path)
        except Exception as e:              # PIL: truncated, not an image, unreadable
            raise UserError(f"cannot decode {path}: {' '.join(str(e).split()) or type(e).__name__}; replace the "
                            "file with a whole image, or move it out of the class folder") from None
        return self.transform(image)


def _worker_error(e: UserError) -> UserError:
    """A ``UserError`` raised in a DataLoader worker arrives with the worker's traceback in its message; keep its
    own line."""
    lines = str(e).strip().splitlines()
    own = [line.split("UserError: ", 1)[1] for line in lines if "UserError: " in line]
    return UserError(own[-1] if own else lines[-1] if lines else str(e))


class FolderSource:
    """Images in files, decoded per batch by a ``torch.utils.data.DataLoader`` (``num_workers`` processes).

    Paths are kept as one numpy bytes array relative to ``root`` (1.28M ImageNet paths take ~40 MB, and worker
    processes share it without touching per-item reference counts).
    """

    def __init__(self, root: str, samples: list[tuple[str, int]], cfg: ImageFolderLoader):
        self.root = root
        prefix = os.path.join(root, "")
        self.paths = np.array([(p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)).encode()
                               for p, _ in samples])
        self.labels = np.array([c for _, c in samples], dtype=np.int64)
        self.image_size, self.resize_size = cfg.image_size, cfg.resize_size
        self.num_workers = min(8, os.cpu_count() or 1) if cfg.num_workers is None else cfg.num_workers
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1)
        normalize = [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
        self.eval_transform = T.Compose([T.Resize(cfg.resize_size), T.CenterCrop(cfg.image_size), *normalize])
        self.train_transform = T.Compose([T.RandomResizedCrop(cfg.image_size), T.RandomHorizontalFlip(), *normalize])

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
        """Normalized (evaluation-transformed) images ``[len(idx), 3, S, S]``."""
        parts = [x.cpu() for _, x in self.batches(idx, 256)]
        return torch.cat(parts) if parts else torch.empty((0, *self.image_shape))

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)`` as ``TensorSource.batches``; ``augment`` uses the training transform."""
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        files = _Files(self.root, self.paths[idx[order]], self.train_transform if augment else self.eval_transform)
        loader = DataLoader(files, batch_size=batch_size, num_workers=self.num_workers, generator=generator,
                            pin_memory=torch.cuda.is_available())
        try:
            for start, x in zip(range(0, len(idx), batch_size), loader):
                yield order[start:start + batch_size], x
        except UserError as e:
            raise _worker_error(e) from None

    def batches_of(self, idx: np.ndarray, groups: list[np.ndarray],
                   augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(positions, images)`` for explicit batches of positions into ``idx`` (a ``batch_sampler``)."""
        idx = np.asarray(idx)
        files = _Files(self.root, self.paths[idx], self.train_transform if augment else self.eval_transform)
        loader = DataLoader(files, batch_sampler=[np.asarray(g).tolist() for g in groups],
                            num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        try:
            for pos, x in zip(groups, loader):
                yield np.asarray(pos), x
        except UserError as e:
            raise _worker_error(e) from None


class DaliFolderSource(FolderSource):
    """A ``FolderSource`` whose batches are decoded, resized and normalized on the GPU by NVIDIA DALI.

    The files of a batch are read on the CPU and fed to a pipeline (``external_source``): GPU JPEG decoding
    (``device="mixed"``), then ``random_resized_crop`` + random mirror (training) or a resize of the shorter side
    to ``resize_size`` + center crop (evaluation), normalized in ``crop_mirror_normalize``. Batches come out as
    float32 CUDA tensors ``[B, 3, S, S]``; one pipeline per (augment, batch size) is built and kept.
    """

    def __init__(self, root: str, samples: list[tuple[str, int]], cfg: ImageFolderLoader):
        super().__init__(root, samples, cfg)
        self.mean_255 = [255.0 * m for m in cfg.mean]
        self.std_255 = [255.0 * s for s in cfg.std]
        self.device_id = torch.cuda.current_device()
        self._pipes: dict = {}

    def _pipeline(self, augment: bool, batch_size: int, seed: int):
        from nvidia.dali import fn, pipeline_def, types

        size, resize, mean, std = self.image_size, self.resize_size, self.mean_255, self.std_255

        @pipeline_def
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8)
            images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
            if augment:
                images = fn.random_resized_crop(images, size=(size, size))
                return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std,
                                                mirror=fn.random.coin_flip(probability=0.5))
            images = fn.resize(images, resize_shorter=resize)
            return fn.crop_mirror_normalize(images, crop=(size, size), dtype=types.FLOAT, output_layout="CHW",
                                            mean=mean, std=std)

        p = pipe(batch_size=batch_size, num_threads=max(1, self.num_workers), device_id=self.device_id, seed=seed,
                 exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        p.build()
        return p

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        key = (augment, batch_size)
        if key not in self._pipes:
            seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
            self._pipes[key] = self._pipeline(augment, batch_size, seed)
        pipe = self._pipes[key]
        device = torch.device("cuda", self.device_id)
        for start in range(0, len(idx), batch_size):
            pos = order[start:start + batch_size]
            pipe.feed_input("jpegs", [np.fromfile(os.path.join(self.root, p.decode()), dtype=np.uint8)
                                      for p in self.paths[idx[pos]]])
            (out,) = pipe.run()
            x = torch.empty((len(pos), *self.image_shape), dtype=torch.float32, device=device)
            stream = torch.cuda.current_stream(device)
            feed_ndarray(out.as_tensor(), x, cuda_stream=stream)
            stream.synchronize()            # the copy is done before the next run() reuses DALI's output buffer
            yield pos, x
