"""Any torchvision classification architecture as a task model returning ``(logits, taps)``.

The taps are graph nodes named as ``torchvision.models.feature_extraction.get_graph_node_names`` lists them
(``layer4.1.relu_1``, ``features.12``, ...) or a module whose last node is meant (``layer3``), taken out by
``create_feature_extractor``; the model is rebuilt from its name
alone (the MC-dropout copy, resume), which is ``torchvision:{arch}:{tap}+{tap}:{image size}``, e.g.
``torchvision:resnet50:layer3+layer4:224``. The wrapped network is ``self.net``, a graph module whose parameter
names are torchvision's, so a torchvision checkpoint loads into ``model.net``.

What the toolkit reads from a model class is derived from the architecture once per name:

* ``TAPS`` ``{L: taps}``: L is the summed channel width of the taps (dimension 1 of each tap's output);
* ``classifier``: the last ``Linear`` (or ``Conv2d``) layer, the one not copied from the rotation-pretrained model;
* ``penultimate``: the input of that layer (a tap of its own, ``"penultimate"``), the features of core-set;
* ``LOSS_TAPS`` / ``LOSS_TAP_WIDTHS``: the chosen taps, for the loss-prediction module of lloss and TA-VAAL.

Every ``inplace`` flag is switched off, so a tap is never overwritten by a later in-place operation, and a tap must
lie on the path to the logits (its Fisher score is a gradient); token taps ``[B, T, C]`` (vision transformers) are
refused, except the class token the classifier reads, which is ``[B, C]``.

The MC-dropout variant turns every ``Dropout`` into ``MCDropout`` (on at inference); an architecture with no
dropout of a positive rate gets dropout ``MC_DROPOUT_P`` on the classifier's input, through a forward pre-hook, so
the state dict is the plain model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import MCDropout, swap_dropout

PREFIX = "torchvision:"
MC_DROPOUT_P = 0.5


def architectures() -> list[str]:
    """torchvision's image classification architectures (``resnet18``, ``vit_b_16``, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_name(arch: str, taps: tuple[str, ...], image_size: int) -> str:
    return f"{PREFIX}{arch}:{'+'.join(taps)}:{image_size}"


def parse_name(name: str) -> tuple[str, tuple[str, ...], int]:
    """``torchvision:{arch}:{taps}:{size}`` -> (arch, taps, size)."""
    parts = name[len(PREFIX):].split(":")
    if not name.startswith(PREFIX) or len(parts) != 3:
        raise ValueError(f"not a torchvision model name: {name!r} (expected torchvision:ARCH:TAP+TAP:SIZE)")
    arch, taps, size = parts
    return arch, tuple(t for t in taps.split("+") if t), int(size)


@dataclass(frozen=True)
class Anatomy:
    """What the toolkit needs to know of an architecture with given taps (see the module docstring)."""

    classifier: str                     # module name of the last Linear / Conv2d layer
    penultimate_node: str               # graph node that feeds it
    output_node: str                    # the graph's last node (the logits)
    widths: tuple[int, ...]             # channels of each tap


def _plain_net(arch: str, num_classes: int) -> nn.Module:
    import torchvision

    if arch not in architectures():
        raise ValueError(f"unknown torchvision architecture {arch!r}")
    net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    for m in net.modules():                                   # taps are never overwritten in place
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return net


def _classifier_name(net: nn.Module, num_classes: int) -> str:
    last = [n for n, m in net.named_modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    if not last:
        raise ValueError(f"{type(net).__name__} has no Linear or Conv2d layer with {num_classes} outputs")
    return last[-1]


@lru_cache(maxsize=None)
def anatomy(arch: str, taps: tuple[str, ...], image_size: int) -> Anatomy:
    """Classifier, its input node, the output node and the tap widths, from one forward and backward pass of a
    fresh network on a zero image (the RNG state is left as it was). Raises ValueError naming what is wrong."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    probe_classes = 11                                        # any count; 11 is unlikely to equal a hidden width
    with torch.random.fork_rng(devices=[]):
        net = _plain_net(arch, probe_classes).eval()
    nodes = get_graph_node_names(net)[1]
    classifier = _classifier_name(net, probe_classes)
    if classifier not in nodes:
        raise ValueError(f"{arch}: its classifier {classifier!r} is not a node of the traced graph")
    unknown = [t for t in taps if t not in nodes and not any(n.startswith(t + ".") for n in nodes)]
    if unknown:
        shown = ", ".join(nodes[-12:])
        raise ValueError(f"{arch} has no layer named {', '.join(unknown)}; its last layers are {shown} "
                         "(torchvision.models.feature_extraction.get_graph_node_names lists them all)")
    penultimate, output = nodes[nodes.index(classifier) - 1], nodes[-1]
    wanted = dict.fromkeys([*taps, penultimate, output])
    extractor = create_feature_extractor(net, {n: n for n in wanted})
    x = torch.zeros(2, 3, image_size, image_size)
    try:
        out = extractor(x)
    except Exception as e:                                    # e.g. a ViT fed images of the wrong size
        raise ValueError(f"{arch} does not run on {image_size}x{image_size} images: {e}") from None
    if out[output].shape[-1] != probe_classes or out[output].dim() != 2:
        raise ValueError(f"{arch}: its last node {output!r} gives {tuple(out[output].shape)}, not the logits")
    for t in taps:
        if out[t].dim() not in (2, 4):
            raise ValueError(f"{arch}: tap {t!r} has shape {tuple(out[t].shape)}; choose layers whose output is "
                             "[B, C, H, W] or [B, C]")
    if taps:
        grads = torch.autograd.grad(out[output].sum(), [out[t] for t in taps], allow_unused=True)
        dead = [t for t, gr in zip(taps, grads) if gr is None]
        if dead:
            raise ValueError(f"{arch}: tap {', '.join(dead)} does not lead to the logits (a Fisher score is a "
                             "gradient of the loss): choose layers on the main path")
    return Anatomy(classifier, penultimate, output, tuple(int(out[t].shape[1]) for t in taps))


class TorchvisionTaps(nn.Module):
    """A torchvision classification network whose forward returns ``(logits, taps)``; built by
    ``build_torchvision`` (which gives each name its own subclass carrying ``TAPS``, ``classifier`` and the rest)."""

    TAPS: dict[int, tuple[str, ...]] = {}
    classifier = "net"
    penultimate = "penultimate"
    LOSS_TAPS: tuple[str, ...] = ()
    LOSS_TAP_WIDTHS: dict[str, int] = {}
    arch = ""
    anatomy: Anatomy = None

    def __init__(self, num_classes: int, mc_dropout: bool = False):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        net = _plain_net(self.arch, num_classes)
        a = self.anatomy
        if mc_dropout:
            swapped = swap_dropout(net)
            if not swapped:
                net.get_submodule(a.classifier).register_forward_pre_hook(_dropout_input)
        taps = self.TAPS[max(self.TAPS)] if self.TAPS else ()
        names = {t: t for t in taps}
        names.setdefault(a.penultimate_node, "penultimate")
        names.setdefault(a.output_node, "logits")
        self._keys = names
        # MCDropout is kept a leaf of the trace, so the graph's node names are those of the plain model
        self.net = create_feature_extractor(net, names, tracer_kwargs={"leaf_modules": [MCDropout]})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.net(x)
        logits = out[self._keys[self.anatomy.output_node]]
        taps = dict(out)
        taps.setdefault("penultimate", out[self._keys[self.anatomy.penultimate_node]])
        return logits, taps


def _dropout_input(module: nn.Module, args: tuple) -> tuple:
    return (F.dropout(args[0], MC_DROPOUT_P, training=True), *args[1:])


@lru_cache(maxsize=None)
def _model_class(name: str) -> type:
    arch, taps, size = parse_name(name)
    a = anatomy(arch, taps, size)
    L = sum(a.widths)
    penultimate = "penultimate"
    for t in taps:                       # a tap that is the classifier's input serves as the penultimate features
        if t == a.penultimate_node:
            penultimate = t
    return type(f"TorchvisionTaps_{arch}", (TorchvisionTaps,), {
        "TAPS": {0: (), L: taps} if taps else {0: ()},
        "classifier": f"net.{a.classifier}",
        "penultimate": penultimate,
        "LOSS_TAPS": taps,
        "LOSS_TAP_WIDTHS": dict(zip(taps, a.widths)),
        "arch": arch,
        "anatomy": a,
        "model_name": name,
    })


def build_torchvision(name: str, num_classes: int = 10, mc_dropout: bool = False, **kwargs) -> TorchvisionTaps:
    """The model a ``torchvision:{arch}:{taps}:{size}`` name stands for, with fresh (random) weights."""
    if kwargs:
        raise TypeError(f"unexpected arguments for a torchvision model: {', '.join(kwargs)}")
    return _model_class(name)(num_classes, mc_dropout)


def default_taps(arch: str) -> tuple[str, ...]:
    """Taps when none are named: ``layer3`` and ``layer4`` where the architecture has them (the ResNet family,
    as the paper's L = 768), else the classifier's input."""
    from torchvision.models.feature_extraction import get_graph_node_names

    with torch.random.fork_rng(devices=[]):
        net = _plain_net(arch, 11)
    nodes = get_graph_node_names(net)[1]
    if all(any(n.startswith(m + ".") for n in nodes) for m in ("layer3", "layer4")):
        return ("layer3", "layer4")
    classifier = _classifier_name(net, 11)
    return (nodes[nodes.index(classifier) - 1],)
