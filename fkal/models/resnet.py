"""ResNet-10 and ResNet-18 task models (SVHN, CIFAR-10, ImageNet) on top of torchvision's ``ResNet``.

The classes subclass ``torchvision.models.resnet.ResNet`` and ``BasicBlock`` rather than copying them: the
parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``), so torchvision
checkpoints load, and the forward only adds what the toolkit needs:

* ``(logits, taps)``: ``layer1`` .. ``layer4`` are the outputs of the four stages (block outputs, on the autograd
  path, so the Fisher scores dL/dZ^j of ``fkal.descriptors`` are taken from them) and ``pool`` is the pooled
  ``[B, 512]`` feature that feeds ``fc`` (the penultimate features of core-set).

Where z and g are taken: a stage's output is its last basic block's ``relu(bn2(conv2(.)) + identity)``, so every
tap already follows a ReLU. ``tap_point`` ("pre" or "post", the command line's ``--taps``) is accepted for the
interface LeNet shares, and both values give the same taps: relu of a block output is the block output. Unlike
LeNet's "pre", the ResNet taps are therefore never pre-activations (the paper's z~ of section 4.2, the input of
that closing ReLU, is not tapped). The authors' release takes the same points (``svhn/custom_models/resnet.py``:
``x3`` = layer3 for L=256, ``[x3, x5]`` for L=768 with ``x5`` = avgpool(layer4)); its Fisher score at ``x5`` is
H*W times the pooled Fisher score at ``layer4`` here (the gradient of a mean), a factor per image and scale that
the standardization removes.
* the MC-dropout variant: dropout 0.25 inside every basic block after its first conv + bn + relu, active at
  inference (``fkal.models.MCDropout``); dropout has no parameters, so the plain model's state dict loads into it.
* the small stem for 32x32 inputs (SVHN, CIFAR-10): a 3x3 stride-1 first convolution and no max-pool; ImageNet
  keeps torchvision's 7x7 stride-2 convolution and max-pool.

BatchNorm mixes the samples of a batch only in training mode; descriptors and Fisher scores are extracted in
eval mode, where the per-sample gradients of a summed loss are exact.
"""
from __future__ import annotations


import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet

from .layers import TAP_POINTS, MCDropout

MC_DROPOUT_P = 0.25


class DropoutBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` with a dropout slot after the first conv + bn + relu (identity by default)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.drop(self.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TapResNet(ResNet):
    """A torchvision ResNet of basic blocks whose forward returns ``(logits, taps)``.

    Taps (after the blocks' closing ReLU, whatever ``tap_point`` says): ``layer1`` [B, 64, H/4, W/4] ..
    ``layer4`` [B, 512, H/32, W/32] for the standard stem (H/1 .. H/8 for the small stem), ``pool`` [B, 512].
    Descriptor lengths L are sums of the stage widths (64, 128, 256, 512).
    """

    TAPS = {0: (), 64: ("layer1",), 128: ("layer2",), 256: ("layer3",), 512: ("layer4",),
            768: ("layer3", "layer4"), 896: ("layer2", "layer3", "layer4"),
            960: ("layer1", "layer2", "layer3", "layer4")}
    classifier = "fc"     # the layer not copied from the rotation-pretrained model
    penultimate = "pool"  # features for core-set
    LOSS_TAPS = ("layer1", "layer2", "layer3", "layer4")       # learning loss / TA-VAAL ranker (vaal/models.py)
    LOSS_TAP_WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}

    def __init__(self, layers: list[int], num_classes: int = 10, mc_dropout: bool = False,
                 small_input: bool = False, in_channels: int = 3, tap_point: str = "pre"):
        super().__init__(DropoutBasicBlock, layers, num_classes=num_classes)
        self.tap_point = tap_point   # "pre" or "post": the same taps here (see the module docstring)
        if small_input:   # 32x32 inputs: 3x3 stride-1 stem, no max-pool (the CIFAR ResNets of He et al. / kuangliu)
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if mc_dropout:
            for m in self.modules():
                if isinstance(m, DropoutBasicBlock):
                    m.drop = MCDropout(MC_DROPOUT_P)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.tap_point not in TAP_POINTS:
            raise ValueError(f"tap_point must be one of {TAP_POINTS}, not {self.tap_point!r}")
        h = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        taps = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(self, name)(h)
            taps[name] = h
        taps["pool"] = torch.flatten(self.avgpool(h), 1)
        return self.fc(taps["pool"]), taps


def resnet10(num_classes: int = 10, mc_dropout: bool = False, small_input: bool = True,
             in_channels: int = 3) -> TapResNet:
    """ResNet-10: one basic block per stage (1, 1, 1, 1); the SVHN model of the paper."""
    return TapResNet([1, 1, 1, 1], num_classes, mc_dropout, small_input, in_channels)


def resnet18(num_classes: int = 1000, mc_dropout: bool = False, small_input: bool = False,
             in_channels: int = 3) -> TapResNet:
    """ResNet-18: two basic blocks per stage (2, 2, 2, 2); ImageNet (standard stem) and CIFAR-10 (small stem)."""
    return TapResNet([2, 2, 2, 2], num_classes, mc_dropout, small_input, in_channels)
