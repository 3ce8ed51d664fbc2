"""Layers shared by the task models."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MCDropout(nn.Dropout):
    """Dropout that stays on at inference: the stochastic passes of MC-dropout uncertainty."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)
