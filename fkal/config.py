"""Configurations are data: a frozen dataclass per entry of the cfg list, named
``{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}]`` (e.g. ``random``, ``pcc-L20``, ``pfk-phat-L80``,
``varR-E4-K32``). The name is what ``run.py --list`` prints, ``--only`` takes and results records carry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .errors import UserError
from .pseudo_labels import PSEUDO_LABELS


@dataclass(frozen=True)
class Config:
    acquisition: str                    # key of fkal.acquisitions.registry.ACQUISITIONS
    pseudo_label: Optional[str] = None  # estimator S (Fisher-kernel acquisitions)
    L: Optional[int] = None             # descriptor length (selects the taps)
    E: int = 1                          # ensemble members
    K: Optional[int] = None             # stochastic passes / Monte Carlo copies

    @property
    def name(self) -> str:
        parts = [self.acquisition]
        if self.pseudo_label:
            parts.append(self.pseudo_label)
        if self.L is not None:
            parts.append(f"L{self.L}")
        if self.E > 1:
            parts.append(f"E{self.E}")
        if self.K is not None:
            parts.append(f"K{self.K}")
        return "-".join(parts)

    def __str__(self) -> str:
        return self.name


def parse_config(name: str, acquisitions) -> Config:
    """The Config a name stands for; ``acquisitions`` are the known acquisition names."""
    acq = max((a for a in acquisitions if name == a or name.startswith(a + "-")), key=len, default=None)
    if acq is None:
        raise UserError(f"unknown configuration '{name}': it must start with one of {', '.join(sorted(acquisitions))}"
                        " (see python run.py --list)")
    rest = name[len(acq) + 1:]
    pseudo = None
    for p in sorted(PSEUDO_LABELS, key=len, reverse=True):
        if rest == p or rest.startswith(p + "-"):
            pseudo, rest = p, rest[len(p) + 1:]
            break
    m = re.fullmatch(r"(?:L(\d+))?-?(?:E(\d+))?-?(?:K(\d+))?", rest)
    if m is None:
        raise UserError(f"cannot read configuration '{name}': expected "
                        "{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}], e.g. pfk-phat-L80 or varR-E4-K32")
    L, E, K = (int(v) if v else None for v in m.groups())
    cfg = Config(acq, pseudo, L, E or 1, K)
    if cfg.name != name:
        raise UserError(f"configuration '{name}' is not in canonical form; did you mean '{cfg.name}'?")
    return cfg
