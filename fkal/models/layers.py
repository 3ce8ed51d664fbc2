"""Layers shared by the task models."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Where a model takes its taps (its ``tap_point``, the command line's ``--taps``): before or after the ReLU of
# each tapped layer. The models' docstrings say what each means for them.
TAP_POINTS = ("pre", "post")


def swap_dropout(module: nn.Module) -> int:
    """Replace every ``nn.Dropout`` below ``module`` by ``MCDropout`` of the same rate; returns how many of them
    drop anything (p > 0)."""
    n = 0
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, MCDropout(child.p))
            n += child.p > 0
        else:
            n += swap_dropout(child)
    return n


class MCDropout(nn.Dropout):
    """Dropout that stays on at inference: the stochastic passes of MC-dropout uncertainty."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)
