"""The run-wide settings from the command line (``Settings``: the protocol's numbers after overrides) and the seeds
drawn from them."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import protocols
from ..data import DatasetSpec, Schedule


@dataclass(frozen=True)
class Settings:
    """Run-wide settings from the command line (protocol numbers after overrides)."""

    out: Path
    spec: DatasetSpec
    train: Schedule
    unsup: Schedule
    query_size: int
    iterations: int
    device: torch.device
    seed: Optional[int] = None       # None: seed = run index
    noise_ratio: float = 0.0
    train_size: Optional[int] = None  # --train-size: |D| before the imbalance (None: the protocol's)
    val_size: Optional[int] = None
    eval_batch: int = 1000
    progress: bool = True
    options: tuple = ()              # (key, value) pairs of the command line, passed to acquisitions
    epoch_selection: str = "final"   # "final": the last epoch's model; "val": the epoch best on D_v
    fresh: tuple[str, ...] = ()      # configurations to start afresh when their folder holds other settings
    # fkal.protocols (TA-VAAL's benchmark); the defaults are the Fisher-kernel protocol's
    protocol: str = "fk"             # the protocol whose defaults the command line filled in
    initial_labels: int = 0          # >0: iteration 1 labels this many random pool images (same for every config)
    subset_size: protocols.SubsetSize = None   # acquisitions select from a random unlabeled subset of this size
    model_per_cycle: str = "warm"    # "fresh": every iteration trains from the run's initial model
    loss_module_all: int = 0         # 1: every acquisition's task model carries the loss-prediction module
    crop_padding: Optional[int] = None  # recorded override of the loader's crop augmentation
    # whether ``unsup`` was asked for (--unsup-epochs); when not, a run whose initial models exist takes the
    # pretraining schedule they were made with (``adopt_pretraining``)
    unsup_given: bool = True
    config_file: Optional[dict] = None   # the experiment file a run came from (run.py --config): recorded only

    def seed_of(self, run: int) -> int:
        return run if self.seed is None else self.seed

    def train_size_or_default(self) -> int:
        return self.spec.train_size if self.train_size is None else self.train_size

    def val_size_or_default(self) -> int:
        return self.spec.val_size if self.val_size is None else self.val_size


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from a base seed and keys (strings or ints), stable across processes."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence([seed, *ints]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(seed: int, *keys) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
