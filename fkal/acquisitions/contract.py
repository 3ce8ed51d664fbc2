"""The one contract every acquisition function keeps: ``query(ctx: QueryContext) -> QueryResult``.

Every acquisition receives the same context (models, data, labeled and unlabeled positions, budget, generator)
and returns exactly ``budget`` distinct unlabeled pool positions, plus its scores where it has any. Positions
index ``ctx.data.split.pool``. This module imports no acquisition; ``registry.py`` names them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from ..config import Config
from ..data import ALData
from ..training import ExtraLoss


@dataclass
class QueryContext:
    models: list[nn.Module]     # the E trained members (eval mode); single-model acquisitions use models[0]
    data: ALData
    labeled: np.ndarray         # [N_l] positions into data.split.pool
    unlabeled: np.ndarray       # [N_u] positions into data.split.pool
    budget: int                 # P
    generator: torch.Generator  # the iteration's seeded generator
    device: torch.device
    config: Config
    iteration: int              # b, 1-based
    batch_size: int = 1000      # inference batch
    progress: bool = True
    options: dict = field(default_factory=dict)  # the command line's options (e.g. uncertainty_first_random)
    # the run's rotation-pretrained initial model (self-supervised, its classifier layer untrained), loaded on
    # demand: features for acquisitions that want a self-supervised embedding (TypiClust); None outside the loop
    pretrained: Optional[Callable[[], nn.Module]] = None

    def describe(self, what: str) -> Optional[str]:
        """A progress-bar label ``"{config} b={iteration}: {what}"``, or None when progress bars are off."""
        return f"{self.config.name} b={self.iteration}: {what}" if self.progress else None


@dataclass
class QueryResult:
    indices: np.ndarray                        # [budget] distinct positions, all in ctx.unlabeled
    scores: Optional[np.ndarray] = None        # [budget] the acquisition's score of each, if any
    pseudo_label_accuracy: Optional[float] = None  # percent, where pseudo-labels were used
    pseudo_labels: Optional[np.ndarray] = None     # [N_u] the pseudo-label of every ctx.unlabeled image, if any
    extras: dict = field(default_factory=dict)     # more fields for the iteration's record (JSON values)


Acquisition = Callable[[QueryContext], QueryResult]

# Acquisitions that reveal each pick's label and use it for the later picks of the same batch (an oracle inside
# the batch, DESIGN section 10): fine in a benchmark, where every label is known, impossible in a one-shot
# annotation round on unlabeled images, so label_next.py refuses them (by configuration name: ``galaxy``,
# ``direct-...``), whether or not they are registered.
REVEALS_LABELS: frozenset[str] = frozenset({"galaxy", "direct"})


@dataclass(frozen=True)
class TaskHooks:
    """How an acquisition changes the task model and its training (learning loss, TA-VAAL).

    wrap(model, spec) -> model: adds an auxiliary head; the wrapped forward still returns ``(logits, taps)``.
    extra_loss(options, spec) -> ExtraLoss: the term added to the cross-entropy of every training batch (see
    ``fkal.training.ExtraLoss``), built from the command line's options (the same dict as ``ctx.options``).
    """

    wrap: Callable[[nn.Module, object], nn.Module]
    extra_loss: Callable[[dict, object], ExtraLoss]
