"""Layers shared by the task models."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Where a model takes its taps (its ``tap_point``, the command line's ``--taps``): before or after the ReLU of
# each tapped layer. The models' docstrings say what each means for them.
TAP_POINTS = ("pre", "post")


class MCDropout(nn.Dropout):
    """Dropout that stays on at inference: the stochastic passes of MC-dropout uncertainty."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)
