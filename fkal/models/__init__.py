"""Task models and what the loop needs to know of them.

Every model returns ``(logits, taps)``: ``taps`` maps a tap name to the activation tensor that the descriptors of
length L are pooled from (paper Figure 3). A model class carries ``TAPS`` (L -> tap names), ``classifier`` (the
layer not copied from the rotation-pretrained model) and ``penultimate`` (the features of core-set). A model's
``tap_point`` ("pre" or "post", ``TAP_POINTS``) says whether the taps are taken before or after the ReLU of each
tapped layer (the default "pre"; ``taps_at`` sets it for a block of code); each model's docstring says exactly
where z and g are taken and how that differs from the paper and the authors' release.

  lenet.py    LeNet (MNIST)
  resnet.py   ResNet-10/18 with taps, built from torchvision's classes (SVHN, CIFAR, ImageNet)
  layers.py   MCDropout
  torchvision_taps.py  any torchvision classification architecture, taps by graph-node name
                       (model names ``torchvision:{arch}:{tap}+{tap}:{image size}``)
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Callable, Iterator

import torch.nn as nn

from .lenet import LeNet, lenet
from .layers import TAP_POINTS, MCDropout
from .resnet import TapResNet, resnet10, resnet18

TORCHVISION_PREFIX = "torchvision:"   # fkal.models.torchvision_taps.PREFIX (that module imports torchvision lazily)

# Builder names: the stem is part of the name, because a model is rebuilt from its name alone (the MC-dropout
# copy, the rotation model, resume).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "resnet10": partial(resnet10, small_input=False),
    "resnet10-small": partial(resnet10, small_input=True),
    "resnet18": partial(resnet18, small_input=False),
    "resnet18-small": partial(resnet18, small_input=True),
}

__all__ = ["MODELS", "LeNet", "MCDropout", "TAP_POINTS", "TapResNet", "build_model", "copy_all_but_classifier",
           "lenet", "mc_dropout_copy", "model_name_of", "resnet10", "resnet18", "taps_at", "taps_for"]


def build_model(name: str, num_classes: int, mc_dropout: bool = False, **kwargs) -> nn.Module:
    """The model named ``name``: a key of ``MODELS`` or a ``torchvision:{arch}:{taps}:{size}`` name."""
    if name.startswith(TORCHVISION_PREFIX):
        from .torchvision_taps import build_torchvision
        return build_torchvision(name, num_classes=num_classes, mc_dropout=mc_dropout, **kwargs)
    return MODELS[name](num_classes=num_classes, mc_dropout=mc_dropout, **kwargs)


def model_name_of(model: nn.Module) -> str | None:
    """The builder name a model can be rebuilt from (a key of ``MODELS`` or a ``torchvision:`` name), or None for
    a model the toolkit did not build."""
    if isinstance(model, LeNet):
        return "lenet"
    if isinstance(model, TapResNet):
        depth = {1: 10, 2: 18}.get(len(model.layer1))
        small = isinstance(model.maxpool, nn.Identity)
        return None if depth is None else f"resnet{depth}{'-small' if small else ''}"
    return getattr(type(model), "model_name", None)


def taps_for(model: nn.Module, L: int) -> tuple[str, ...]:
    """Tap names that make a descriptor of length L for this model."""
    try:
        return type(model).TAPS[L]
    except KeyError:
        raise ValueError(f"{type(model).__name__} has no descriptor of length L={L}; "
                         f"choose one of {sorted(type(model).TAPS)}") from None


@contextmanager
def taps_at(model: nn.Module, point: str) -> Iterator[nn.Module]:
    """Within the block, ``model`` returns its taps at ``point`` ("pre" or "post" its ReLUs); the model's own
    ``tap_point`` is restored after it. A model without ``tap_point`` has pre-activation taps only."""
    if point not in TAP_POINTS:
        raise ValueError(f"taps are taken at one of {TAP_POINTS}, not {point!r}")
    if not hasattr(model, "tap_point"):
        if point != "pre":
            raise ValueError(f"{type(model).__name__} has no tap_point: its taps cannot be taken {point} the ReLU")
        yield model
        return
    before = model.tap_point
    model.tap_point = point
    try:
        yield model
    finally:
        model.tap_point = before


def copy_all_but_classifier(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst`` except the last (classifier) layer."""
    skip = type(dst).classifier + "."
    state = {k: v for k, v in src.state_dict().items() if not k.startswith(skip)}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(skip) for k in missing), (missing, unexpected)


def mc_dropout_copy(model: nn.Module, spec_model: str, num_classes: int) -> nn.Module:
    """The MC-dropout variant of ``model`` carrying its weights (docs/protocol.md): rebuilt from its builder name
    ``spec_model``, or the model's own ``mc_dropout_copy()`` where it has one (a wrapped user model)."""
    if hasattr(model, "mc_dropout_copy"):
        return model.mc_dropout_copy()
    mc = build_model(spec_model, num_classes, mc_dropout=True)
    mc.load_state_dict(model.state_dict())
    return mc.to(next(model.parameters()).device).eval()
