"""The one contract every acquisition keeps: ``query(ctx: QueryContext) -> QueryResult``, and the one place an
acquisition is declared: its ``AcquisitionSpec``.

Every acquisition receives the same context (models, data, labeled and unlabeled positions, budget, generator)
and returns exactly ``budget`` distinct unlabeled pool positions, plus its scores where it has any. Positions
index ``ctx.data.split.pool``.

An acquisition module exports ``SPECS``, one ``AcquisitionSpec`` per configuration prefix it serves (``pfk``,
``pcc`` and ``pfk-sum`` share one module and one query). Everything else is built from the specs
(``registry.py``): the configuration grammar, the command line's options, what a record's settings hold and a
resumed run compares, the names in tables and legends, which acquisitions a labeling round refuses, what
``fkal.select`` asks its caller for, and the example the contract tests run. This module imports no acquisition.
"""
from __future__ import annotations

import argparse
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


@dataclass(frozen=True)
class TaskHooks:
    """How an acquisition changes the task model and its training (learning loss, TA-VAAL).

    wrap(model, spec) -> model: adds an auxiliary head; the wrapped forward still returns ``(logits, taps)``.
    extra_loss(options, spec) -> ExtraLoss: the term added to the cross-entropy of every training batch (see
    ``fkal.training.ExtraLoss``), built from the command line's options (the same dict as ``ctx.options``).
    """

    wrap: Callable[[nn.Module, object], nn.Module]
    extra_loss: Callable[[dict, object], ExtraLoss]


def never(cfg: Config) -> bool:
    """A ``Config -> bool`` that is always False (the default of the spec's predicates)."""
    return False


def always(cfg: Config) -> bool:
    """A ``Config -> bool`` that is always True."""
    return True


# What an acquisition needs besides a model and a pool (``AcquisitionSpec.needs``); ``fkal.select`` refuses a call
# that lacks one, with the argument to pass.
NEEDS = {
    "val": "a labeled validation set D_v (val=...): it matches the pool to the validation images the model gets "
           "wrong",
    "labeled": "the labeled images with their labels (labeled=...)",
    "dropout": "MC-dropout passes: the model needs nn.Dropout layers (or is one of fkal.models)",
    "pool_labels": "the pool's labels as its oracle (pool=(images, labels)): it reveals each pick's label while it "
                   "chooses the rest of the batch",
}


@dataclass(frozen=True)
class Example:
    """The example configuration the contract tests run an acquisition with (``tests/test_acquisitions.py``)."""

    config: str                                  # an example configuration name (``fkal.config``)
    options: dict = field(default_factory=dict)  # ``ctx.options`` (argparse dests)
    subset_option: Optional[str] = None          # the option that sizes the random subset it selects within, if any
    bars: tuple[str, ...] = ()                   # its progress bars in order, each "{config} b={iteration}: {what}"


@dataclass(frozen=True)
class AcquisitionSpec:
    """Everything the toolkit knows of one acquisition, declared once, in the acquisition's own module.

    name:           the configuration prefix (``{name}[-{S}][-L{L}][-E{E}][-K{K}]``, ``fkal.config``)
    query:          ``query(ctx) -> QueryResult``
    title:          its name in tables and legends (the paper's notation for the paper's method: ``R_zg``)
    options:        the argparse dests that shape its picks: recorded in every record's settings, compared when a
                    run is resumed
    add_arguments:  adds its options (with their defaults and checks) to a parser; a family that shares options
                    shares the function, and the parser gets it once
    hooks:          how it changes the task model and its training (learning loss, TA-VAAL), else None
    reveals_labels: it asks for each pick's label while it chooses the rest of the batch (an oracle inside the
                    batch, fine in a benchmark): a labeling round on unlabeled images refuses it
    ours:           the paper's method (the label-saving tables hold the others as baselines)
    needs:          what it needs besides a model and a pool, keys of ``NEEDS``
    default_L:      whether a configuration of it without ``-L`` takes the model's default descriptor length
                    (``label_next.py``, ``fkal.select``)
    batch_seeded:   whether a configuration's picks depend on ``--eval-batch`` (random draws seeded per batch)
    example:        the contract tests' example (default: the plain name, no options)
    """

    name: str
    query: Acquisition
    title: str
    options: tuple[str, ...] = ()
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    hooks: Optional[TaskHooks] = None
    reveals_labels: bool = False
    ours: bool = False
    needs: frozenset[str] = frozenset()
    default_L: Callable[[Config], bool] = never
    batch_seeded: Callable[[Config], bool] = never
    example: Optional[Example] = None

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"acquisition {self.name!r}: unknown needs {sorted(unknown)}; choose from {sorted(NEEDS)}")

    @property
    def example_case(self) -> Example:
        return self.example or Example(self.name)
