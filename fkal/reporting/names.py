"""Configuration names and the paper's notation, for tables and legends.

Names follow ``{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}]``, e.g. ``pfk-phat-L80``, ``pfk-sum-yhat-L20``,
``varR-E4-K32``; ``parse_config`` reads them with the grammar of ``fkal.config`` and ``legend_name`` adds the
paper's notation. The acquisitions, their display order and titles come from the registry's specs
(``fkal.acquisitions.registry``); a name of an acquisition this process has not registered is shown as it is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import config
from ..acquisitions import registry
from ..errors import UserError

FULL_TRAIN = "full-train"


class _Names(Sequence):
    """The registered acquisition names that ``keep`` accepts, in display order (a live, read-only tuple)."""

    def __init__(self, keep):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(s.name for s in registry.specs() if self._keep(s))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


# Display order (tables and legends list acquisitions in this order): the registry's.
ACQUISITIONS: Sequence[str] = _Names(lambda s: True)
OURS: Sequence[str] = _Names(lambda s: s.ours)   # the paper's method; everything else is a baseline for label saving

_PSEUDO_LABEL_NOTATION = {
    "y": "S=y", "yhat": "S=y^", "phat": "S=p^(y,z)", "phat-g": "S=p^(y,z,g)", "trC": "S=tr(C_zg)",
    "mi": "S=I(z;g)", "mi-diag": "S=I(z;g) diag", "phat-em": "S=p^(y,z) EM priors",
    "phat-agree": "S=p^(y,z) if y^ agrees", "efs": "S=E_q[g]", "efs-em": "S=E_q[g] EM priors",
}
RANDOM_INIT_MARK = "θ_rnd"  # the paper's mark for the random-weights initial model (unsupervised=0)


@dataclass(frozen=True)
class ConfigName:
    """A parsed configuration name; fields a name does not give are None."""

    acquisition: str
    pseudo_label: str | None = None
    L: int | None = None  # descriptor length (taps)
    E: int | None = None  # ensemble members
    K: int | None = None  # stochastic passes (MC dropout)


def parse_config(name: str) -> ConfigName:
    """Read ``{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}]`` with the grammar of
    ``fkal.config.parse_config``; raise ValueError for anything else."""
    try:
        cfg = config.parse_config(name, ACQUISITIONS)
    except UserError as e:
        raise ValueError(str(e)) from None
    return ConfigName(cfg.acquisition, cfg.pseudo_label, cfg.L, cfg.E if cfg.E > 1 else None, cfg.K)


def acquisition_of(config: str) -> str | None:
    try:
        return parse_config(config).acquisition
    except ValueError:
        return None


def paper_notation(config: str) -> str:
    """The paper's notation, e.g. ``R_zg, S=p^(y,z), L=80`` for ``pfk-phat-L80``; the name itself if unknown."""
    if config == FULL_TRAIN:
        return "all train"
    try:
        name = parse_config(config)
    except ValueError:
        return config
    parts = [registry.spec_of(name.acquisition).title]
    if name.pseudo_label:
        parts.append(_PSEUDO_LABEL_NOTATION[name.pseudo_label])
    parts += [f"{letter}={value}" for letter, value in (("L", name.L), ("E", name.E), ("K", name.K)) if value]
    return ", ".join(parts)


def legend_name(config: str, unsupervised: int, variant: str = "") -> str:
    """``pfk-phat-L80  (R_zg, S=p^(y,z), L=80)``; ``random``; ``random  (θ_rnd)`` for random-init models;
    ``random [--epochs 10]`` for one of several settings of a configuration."""
    notation = paper_notation(config)
    parts = [notation] if notation != config else []
    if not unsupervised:
        parts.append(RANDOM_INIT_MARK)
    name = f"{config} [{variant}]" if variant else config
    return f"{name}  ({', '.join(parts)})" if parts else name


def format_ratio(ratio: float) -> str:
    """100.0 -> '100', 0.5 -> '0.5'."""
    return f"{ratio:g}"
