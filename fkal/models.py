"""Task models. Every model returns ``(logits, taps)``: ``taps`` maps a tap name to the activation tensor
that the descriptors of length L are pooled from (paper Figure 3).

Taps are pre-activation outputs of a layer (``z~`` of paper section 4.2: the Fisher score is taken before the
non-linearity). Which taps make a descriptor of length L is the model's ``TAPS`` table.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class MCDropout(nn.Dropout):
    """Dropout that stays on at inference: the stochastic passes of MC-dropout uncertainty."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


class LeNet(nn.Module):
    """LeNet of DESIGN section 3.

    conv1 1->10 k5, max-pool 2, relu; conv2 10->20 k5, max-pool 2, relu; fc1 320->50, relu; fc2 50->classes.
    With ``mc_dropout=True`` (the MC-dropout variant) dropout 0.25 follows each conv block and 0.5 follows fc1,
    active at inference; the weights are the same, so a trained classifier's state dict loads into it.
    """

    # descriptor length L -> taps (channels: conv1 10, conv2 20, fc1 50, fc2 10), as in the paper's code
    TAPS = {0: (), 10: ("conv1",), 20: ("conv2",), 30: ("conv1", "conv2"),
            80: ("conv1", "conv2", "fc1"), 90: ("conv1", "conv2", "fc1", "fc2")}
    classifier = "fc2"   # the layer not copied from the rotation-pretrained model
    penultimate = "fc1"  # features for core-set

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mc_dropout: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.drop_conv = MCDropout(0.25) if mc_dropout else nn.Identity()
        self.drop_fc = MCDropout(0.5) if mc_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        conv1 = F.max_pool2d(self.conv1(x), 2)                     # [B, 10, 12, 12]
        h = self.drop_conv(F.relu(conv1))
        conv2 = F.max_pool2d(self.conv2(h), 2)                     # [B, 20, 4, 4]
        h = self.drop_conv(F.relu(conv2))
        fc1 = self.fc1(h.flatten(1))                               # [B, 50]
        logits = self.fc2(self.drop_fc(F.relu(fc1)))               # [B, classes]
        return logits, {"conv1": conv1, "conv2": conv2, "fc1": fc1, "fc2": logits}


def lenet(num_classes: int = 10, in_channels: int = 1, mc_dropout: bool = False) -> LeNet:
    return LeNet(num_classes=num_classes, in_channels=in_channels, mc_dropout=mc_dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": lenet}


def build_model(name: str, num_classes: int, mc_dropout: bool = False, **kwargs) -> nn.Module:
    return MODELS[name](num_classes=num_classes, mc_dropout=mc_dropout, **kwargs)


def taps_for(model: nn.Module, L: int) -> tuple[str, ...]:
    """Tap names that make a descriptor of length L for this model."""
    try:
        return type(model).TAPS[L]
    except KeyError:
        raise ValueError(f"{type(model).__name__} has no descriptor of length L={L}; "
                         f"choose one of {sorted(type(model).TAPS)}") from None


def copy_all_but_classifier(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst`` except the last (classifier) layer."""
    skip = type(dst).classifier + "."
    state = {k: v for k, v in src.state_dict().items() if not k.startswith(skip)}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(skip) for k in missing), (missing, unexpected)


def mc_dropout_copy(model: nn.Module, spec_model: str, num_classes: int) -> nn.Module:
    """The MC-dropout variant of ``model`` carrying its weights (DESIGN section 3)."""
    mc = build_model(spec_model, num_classes, mc_dropout=True)
    mc.load_state_dict(model.state_dict())
    return mc.to(next(model.parameters()).device).eval()


from . import resnet  # noqa: E402,F401  (registers ResNet-10/18 into MODELS; see fkal/resnet.py)
