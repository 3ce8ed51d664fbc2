"""Image sources held in memory and what a dataset is as stored.

A source gives normalized float batches of uint8 images by index (``batches(idx, batch_size, ...)`` yields
``(positions, images)``); the file-backed sources of ``fkal.data.folder`` have the same interface, so the
loop, training and descriptors do not know where the pixels come from.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch


class TensorSource:
    """Images held in memory as uint8 ``[N, C, H, W]``; batches come out normalized as float32."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.augment = augment          # batch-wise training augmentation, [B, C, H, W] -> [B, C, H, W]
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.images = images.contiguous()
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def fingerprint(self) -> str:
        """A short digest of what this source holds: its shape, every label and every (N // 1000)-th image. Equal
        for the same files; a different or damaged copy of a dataset gives another one. Computed once."""
        if getattr(self, "_fingerprint", None) is None:
            step = max(1, len(self.images) // 1000)
            h = hashlib.sha256(repr(tuple(self.images.shape)).encode())
            h.update(self.labels.tobytes())
            h.update(self.images[::step].contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def get(self, idx: np.ndarray) -> torch.Tensor:
        """Normalized images ``[len(idx), C, H, W]``."""
        x = self.images[torch.as_tensor(np.asarray(idx), dtype=torch.long)].float().div_(255.0)
        return (x - self.mean) / self.std

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None,
                augment: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)``: positions index into ``idx`` so callers can pick labels alongside.

        ``augment`` applies the source's training augmentation (``self.augment``, batch-wise), if it has one.
        """
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        yield from self.batches_of(idx, [order[s:s + batch_size] for s in range(0, len(idx), batch_size)], augment)

    def batches_of(self, idx: np.ndarray, groups: list[np.ndarray], augment: bool = False,
                   generator: Optional[torch.Generator] = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(positions, images)`` for explicit batches: ``groups`` are arrays of positions into ``idx``
        (a rank's shares of global training batches, ``fkal.training.epoch_batches``). The augmentation draws from
        the global torch generator, which the loop seeds; ``generator`` is for sources that draw from it."""
        idx = np.asarray(idx)
        for pos in groups:
            x = self.get(idx[pos])
            yield pos, (self.augment(x) if augment and self.augment is not None else x)


@dataclass
class RawData:
    """A dataset as stored: the source the pool and validation set are drawn from, and the test source.

    ``val`` is None where the validation set is drawn from ``train`` (MNIST, SVHN); ImageNet's val folder is
    both validation and test set. ``manifest`` describes a split the loader made itself (Caltech-101's fixed
    train / test split: its files), written beside the runs (``fkal.protocols.prepare_data``).
    """

    train: TensorSource
    test: TensorSource
    val: Optional[TensorSource] = None
    manifest: Optional[dict] = None

    def fingerprint(self) -> dict[str, str]:
        """The sources' digests (``TensorSource.fingerprint``): part of the settings every record carries."""
        parts = {"train": self.train, "test": self.test, **({} if self.val is None else {"val": self.val})}
        return {name: source.fingerprint() for name, source in parts.items()}


class RandomCropFlip:
    """torchvision's ``RandomCrop(size, padding)`` (and ``RandomHorizontalFlip``) on a normalized batch.

    The ``augment`` of a ``TensorSource``: ``[B, C, H, W]`` float (as ``TensorSource.get`` returns it) to the same
    shape, one random offset (and flip) per image from the global torch generator, which the loop seeds. The
    padding is black like torchvision's zero padding of the raw image, i.e. ``-mean / std`` per channel.
    """

    def __init__(self, padding: int, flip: bool, mean: tuple[float, ...], std: tuple[float, ...]):
        self.padding, self.flip = padding, flip
        self.fill = (-torch.tensor(mean) / torch.tensor(std)).float().view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        if p > 0:
            padded = self.fill.to(x).expand(b, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = x
            dy, dx = (torch.randint(0, 2 * p + 1, (b, 1)).to(x.device) for _ in range(2))
            rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
            cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
            x = padded.gather(2, rows).gather(3, cols)
        if self.flip:
            flip = (torch.rand(b) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        return x
