"""LeNet, the MNIST task model of the paper (docs/protocol.md), returning ``(logits, taps)``.

Where the descriptors z and the Fisher scores g are taken (``tap_point``, the command line's ``--taps``):

* ``"pre"`` (the default): the output of each layer *before* its ReLU, ``pool(conv1)``, ``pool(conv2)``, ``fc1``.
  Both z = phi(tap) and g = phi(dL/d tap) come from it, so g is the paper's dL/dz~ (section 4.2: z~ is "a vector
  before applying nonlinearity"), and z is the same pre-activation vector.
* ``"post"``: the same layers *after* their ReLU, ``relu(pool(conv1))``, ``relu(pool(conv2))``, ``relu(fc1)``, for
  both z and g: what the authors' release takes (``mnist/custom_models/model.py``, class ``NetMSA``: the list
  ``f = [x1, x2, x4]`` it returns for L=80, from which ``gen_descr`` pools z and takes ``autograd.grad``).
  Post taps are exactly ``relu`` of the pre taps; their gradients differ where the pre-activation is negative
  (there dL/d pre = 0 while dL/d post is the gradient flowing back from the next layer).

Neither is the paper's derivation to the letter: its Fisher score of layer j's weights, g z^T (appendix), pairs
the layer's *input* z^j (after the previous nonlinearity) with g^j = dL/dz~^j at the layer's *output* before its
nonlinearity. Here and in the release z and g are taken at one and the same tap.

``fc2`` (the logits, no ReLU after it) is the same under both settings. Which taps make a descriptor of length L
is the class's ``TAPS`` table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import TAP_POINTS, MCDropout


class LeNet(nn.Module):
    """LeNet of the paper's MNIST protocol (docs/protocol.md).

    conv1 1->10 k5, max-pool 2, relu; conv2 10->20 k5, max-pool 2, relu; fc1 320->50, relu; fc2 50->classes.
    With ``mc_dropout=True`` (the MC-dropout variant) dropout 0.25 follows each conv block and 0.5 follows fc1,
    active at inference; the weights are the same, so a trained classifier's state dict loads into it.
    ``tap_point`` ("pre" or "post", see the module docstring) chooses whether the taps are taken before or after
    each ReLU; it changes what ``forward`` returns as taps, never the logits.
    """

    # descriptor length L -> taps (channels: conv1 10, conv2 20, fc1 50, fc2 10), as in the paper's code
    TAPS = {0: (), 10: ("conv1",), 20: ("conv2",), 30: ("conv1", "conv2"),
            80: ("conv1", "conv2", "fc1"), 90: ("conv1", "conv2", "fc1", "fc2")}
    classifier = "fc2"   # the layer not copied from the rotation-pretrained model
    penultimate = "fc1"  # features for core-set

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mc_dropout: bool = False,
                 tap_point: str = "pre"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.drop_conv = MCDropout(0.25) if mc_dropout else nn.Identity()
        self.drop_fc = MCDropout(0.5) if mc_dropout else nn.Identity()
        self.tap_point = tap_point

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        conv1 = F.max_pool2d(self.conv1(x), 2)                     # [B, 10, 12, 12] before the ReLU
        relu1 = F.relu(conv1)
        conv2 = F.max_pool2d(self.conv2(self.drop_conv(relu1)), 2)  # [B, 20, 4, 4]
        relu2 = F.relu(conv2)
        fc1 = self.fc1(self.drop_conv(relu2).flatten(1))           # [B, 50]
        relu3 = F.relu(fc1)
        logits = self.fc2(self.drop_fc(relu3))                     # [B, classes]
        if self.tap_point == "post":                               # the release's taps (on the autograd path)
            return logits, {"conv1": relu1, "conv2": relu2, "fc1": relu3, "fc2": logits}
        if self.tap_point != "pre":
            raise ValueError(f"tap_point must be one of {TAP_POINTS}, not {self.tap_point!r}")
        return logits, {"conv1": conv1, "conv2": conv2, "fc1": fc1, "fc2": logits}


def lenet(num_classes: int = 10, in_channels: int = 1, mc_dropout: bool = False, tap_point: str = "pre") -> LeNet:
    return LeNet(num_classes=num_classes, in_channels=in_channels, mc_dropout=mc_dropout, tap_point=tap_point)
