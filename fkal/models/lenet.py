"""LeNet of DESIGN section 3, the MNIST task model, returning ``(logits, taps)``.

Taps are pre-activation outputs of a layer (``z~`` of paper section 4.2: the Fisher score is taken before the
non-linearity). Which taps make a descriptor of length L is the class's ``TAPS`` table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import MCDropout


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
