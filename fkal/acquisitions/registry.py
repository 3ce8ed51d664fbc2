"""Every acquisition by the name its configurations use, built from the specs its module declares.

To add an acquisition: write ``fkal/acquisitions/<name>.py`` with a ``query(ctx) -> QueryResult`` (``contract.py``)
and ``SPECS = (AcquisitionSpec(...),)``, then add the module to ``MODULES`` below: one line. The command line
(``--only``, its options), the settings records carry and resume compares, the names in tables, the labeling
rounds, ``fkal.select`` and the contract tests all read the specs. ``register`` adds one at run time (a plugin,
a test's toy acquisition).

The mappings below (``ACQUISITIONS``, ``TASK_HOOKS``, ``ACQUISITION_OPTIONS``, ``REVEALS_LABELS``) are live views
of the registered specs, kept for the code that reads one field of every acquisition.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping, Set
from typing import Callable, Iterator, Optional

import numpy as np

from vaal import acquisitions as vaal

from ..config import Config, parse_config
from . import (badge, base, coreset, direct, fisher_kernel, galaxy, handover, random_sampling, similar, typiclust,
               uncertainty)
from .contract import Acquisition, AcquisitionSpec, QueryResult, TaskHooks

# The acquisition modules, in the order tables and legends list their acquisitions.
MODULES = (
    random_sampling,    # random
    fisher_kernel,      # the paper's method (Algorithm 1): pcc (R_z, eq. 6), pfk (R_zg, eq. 12), pfk-sum (release)
    uncertainty,        # MC-dropout varR, entropy, bald, std, alone or over an ensemble
    coreset,            # core-set
    similar,            # SIMILAR: FLQMI with the misclassified validation images as the query set
    typiclust,          # TypiClust
    vaal,               # vaal/: VAAL, TA-VAAL, learning loss (lloss, lloss-v2)
    badge,              # BADGE
    galaxy,             # GALAXY
    direct,             # DIRECT
    base,               # BASE
    handover,           # pfk-base: the matching for lagging classes, BASE's boundary picks for the rest
)

_SPECS: dict[str, AcquisitionSpec] = {}


def register(spec: AcquisitionSpec, *, replace: bool = False) -> AcquisitionSpec:
    """Add ``spec`` to the registry (after the built-in ones); a second spec of the same name is a ValueError
    unless ``replace``. Returns the spec."""
    if not isinstance(spec, AcquisitionSpec):
        raise TypeError(f"register takes an AcquisitionSpec, not {type(spec).__name__}")
    if spec.name in _SPECS and not replace and _SPECS[spec.name] is not spec:
        raise ValueError(f"an acquisition named {spec.name!r} is registered already (replace=True replaces it)")
    if not spec.name or any(c.isspace() for c in spec.name):
        raise ValueError(f"acquisition name {spec.name!r}: a non-empty name without spaces")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove the acquisition ``name`` (a KeyError if it is not registered)."""
    del _SPECS[name]


for _module in MODULES:
    for _spec in _module.SPECS:
        register(_spec)


def specs() -> list[AcquisitionSpec]:
    """The registered specs, in display order."""
    return list(_SPECS.values())


def names() -> list[str]:
    """The registered acquisition names (configuration prefixes), in display order."""
    return list(_SPECS)


def spec_of(acquisition: str) -> AcquisitionSpec:
    """The spec of an acquisition name (``cfg.acquisition``); a ValueError naming the known ones."""
    try:
        return _SPECS[acquisition]
    except KeyError:
        raise ValueError(f"unknown acquisition {acquisition!r}: choose one of {', '.join(_SPECS)}") from None


def find(acquisition: str) -> Optional[AcquisitionSpec]:
    """The spec of an acquisition name, or None where none is registered (``full-train``, another process's)."""
    return _SPECS.get(acquisition)


def config(name: str) -> Config:
    """The ``Config`` of a configuration name, read with the registered acquisitions (``fkal.config``)."""
    return parse_config(name, _SPECS)


def argument_groups() -> tuple[Callable, ...]:
    """Each registered acquisition's ``add_arguments``, once each, in display order."""
    return tuple(dict.fromkeys(s.add_arguments for s in _SPECS.values() if s.add_arguments is not None))


class _View(Mapping):
    """A read-only ``{name: field}`` view of the registered specs (those ``keep`` accepts)."""

    def __init__(self, field: Callable[[AcquisitionSpec], object],
                 keep: Callable[[AcquisitionSpec], bool] = lambda s: True):
        self._field, self._keep = field, keep

    def __getitem__(self, name: str):
        spec = _SPECS[name]
        if not self._keep(spec):
            raise KeyError(name)
        return self._field(spec)

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in _SPECS.items() if self._keep(s))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Queries(_View, MutableMapping):
    """``{name: query}`` of the registered specs. Setting a name's query swaps it in that name's spec (or registers
    a plain spec for a new name); deleting a name unregisters it: a test's spy, or a quick experiment."""

    def __init__(self):
        super().__init__(lambda s: s.query)

    def __setitem__(self, name: str, query: Acquisition) -> None:
        if name in _SPECS:
            _SPECS[name] = dataclasses.replace(_SPECS[name], query=query)
        else:
            register(AcquisitionSpec(name, query, title=name))

    def __delitem__(self, name: str) -> None:
        unregister(name)


class _NameSet(Set):
    """A read-only set view of the registered names whose spec ``keep`` accepts."""

    def __init__(self, keep: Callable[[AcquisitionSpec], bool]):
        self._keep = keep

    def __contains__(self, name: object) -> bool:
        return name in _SPECS and self._keep(_SPECS[name])

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in _SPECS.items() if self._keep(s))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(set(self))

    @classmethod
    def _from_iterable(cls, it) -> frozenset:              # set operations give plain frozensets
        return frozenset(it)


ACQUISITIONS: _Queries = _Queries()
TASK_HOOKS: Mapping[str, TaskHooks] = _View(lambda s: s.hooks, keep=lambda s: s.hooks is not None)
ACQUISITION_OPTIONS: Mapping[str, tuple[str, ...]] = _View(lambda s: s.options, keep=lambda s: bool(s.options))
# Acquisitions that reveal each pick's label and use it for the later picks of the same batch (an oracle inside
# the batch, docs: successors): fine in a benchmark, impossible in a one-shot annotation round, which refuses them.
REVEALS_LABELS: Set[str] = _NameSet(lambda s: s.reveals_labels)

# ``--loss-module-all 1`` (the TA-VAAL code): the hooks every acquisition without its own gets, and the options
# that shape them (recorded for every acquisition run so).
ATTACHED_HOOKS: TaskHooks = vaal.ATTACHED_HOOKS
ATTACHED_OPTIONS: tuple[str, ...] = vaal.ATTACHED_OPTIONS


def query(ctx) -> QueryResult:
    """The one path from a model to picks: the query of ``ctx.config``'s acquisition, its result checked to be
    ``ctx.budget`` distinct positions of ``ctx.unlabeled`` (a RuntimeError naming the acquisition otherwise).
    ``run.py``'s loop, ``label_next.py``'s rounds and ``fkal.select`` all call it."""
    result = spec_of(ctx.config.acquisition).query(ctx)
    picked = np.asarray(result.indices)
    offered = np.isin(picked, ctx.unlabeled)
    if len(picked) != ctx.budget or len(np.unique(picked)) != len(picked) or not offered.all():
        raise RuntimeError(f"{ctx.config.name} returned {len(picked)} positions ({len(np.unique(picked))} distinct, "
                           f"{int((~offered).sum())} already labeled or not offered) for a budget of {ctx.budget}")
    if result.scores is not None and len(np.asarray(result.scores)) != len(picked):
        raise RuntimeError(f"{ctx.config.name} returned {len(np.asarray(result.scores))} scores for {len(picked)} "
                           "picks")
    return result
