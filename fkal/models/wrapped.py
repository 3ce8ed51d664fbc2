"""Any classifier ``nn.Module`` instance as a task model: ``fkal.select`` on a researcher's own trained network.

The toolkit's models return ``(logits, taps)`` and their class names the taps of each descriptor length L
(``TAPS``), the classifier layer and the penultimate features (``fkal.models``). ``tapped`` gives a user's model
the same face without copying it: forward hooks on the modules named in ``layers`` record their outputs (the
taps), a forward pre-hook on the classifier records its input (the penultimate features), and the logits are what
the model returns. The weights are the user's, shared, not copied.

* ``layers``: module names as ``model.named_modules()`` lists them (``layer3``, ``features.12``); default: ``layer3``
  and ``layer4`` where the model has them (the ResNet family, the paper's L = 768), else the classifier's input.
  L is the summed channel width of the taps (dimension 1 of each output, ``[B, C, H, W]`` or ``[B, C]``).
* the classifier: the last ``nn.Linear`` whose ``out_features`` is the number of classes (a ``Conv2d`` with as many
  output channels where there is no such Linear).
* ``inplace`` flags of the model's activations are switched off (the same outputs), so that no tap is overwritten
  by a later in-place operation before its Fisher score is taken.
* MC dropout (``mc_dropout_copy``): a copy whose ``nn.Dropout`` layers stay on at inference; a model without a
  dropout layer of positive rate is refused, since its passes would all be equal.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .layers import swap_dropout

DEFAULT_LAYERS = ("layer3", "layer4")


class Tapped(nn.Module):
    """A classifier module whose forward returns ``(logits, taps)``; made by ``tapped``, which gives each wrapped
    model its own subclass carrying ``TAPS``, ``classifier`` and ``penultimate`` as the toolkit's models do."""

    TAPS: dict[int, tuple[str, ...]] = {0: ()}
    classifier = "net"
    penultimate = "penultimate"
    LOSS_TAPS: tuple[str, ...] = ()
    LOSS_TAP_WIDTHS: dict[str, int] = {}

    def __init__(self, net: nn.Module, layers: Sequence[str], classifier: str):
        super().__init__()
        self.net = net
        self._layers, self._classifier = tuple(layers), classifier
        self._seen: dict[str, torch.Tensor] = {}
        self._handles = []
        self._hook()

    def _hook(self) -> None:
        modules = dict(self.net.named_modules())
        for name in self._layers:
            self._handles.append(modules[name].register_forward_hook(self._keeper(name)))
        self._handles.append(modules[self._classifier].register_forward_pre_hook(self._penultimate))

    def release(self) -> None:
        """Remove the hooks from the wrapped model (it is the caller's; ``fkal.select`` releases it when done)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _keeper(self, name: str):
        def keep(module, args, output):
            self._seen[name] = output
        return keep

    def _penultimate(self, module, args):
        self._seen["penultimate"] = args[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._seen = {}
        logits = logits_of(self.net(x))
        taps, self._seen = self._seen, {}
        return logits, taps

    def mc_dropout_copy(self) -> "Tapped":
        """A copy (the same weights, copied) whose dropout layers stay on at inference: MC-dropout passes."""
        hooked = bool(self._handles)
        self.release()                      # the copy must not carry this wrapper's hooks
        try:
            net = copy.deepcopy(self.net)
        finally:
            if hooked:
                self._hook()
        if not swap_dropout(net):
            raise ValueError(f"{type(self.net).__name__} has no nn.Dropout layer of positive rate: MC-dropout "
                             "passes would all be equal; add one (e.g. before the classifier) or choose another "
                             "acquisition")
        return type(self)(net, self._layers, self._classifier).to(next(self.parameters()).device).eval()


def logits_of(output) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, the first item of a tuple or list (e.g. the toolkit's
    ``(logits, taps)``), or ``output.logits`` / ``output["logits"]``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise ValueError(f"the model returned a {type(output).__name__}; a classifier returns its logits [B, C] (a "
                     "tensor, or a tuple whose first item is the logits)")


def is_task_model(model: nn.Module) -> bool:
    """Whether ``model`` already has the toolkit's face (``forward -> (logits, taps)`` and ``TAPS``)."""
    return isinstance(getattr(type(model), "TAPS", None), dict) and hasattr(type(model), "classifier")


def has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` holds a dropout layer of positive rate (``nn.Dropout`` and its subclasses)."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def _classifier_name(net: nn.Module, num_classes: int) -> str:
    linear = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    conv = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes]
    if linear or conv:
        return (linear or conv)[-1]
    raise ValueError(f"model: {type(net).__name__} has no nn.Linear layer with {num_classes} outputs (its logits "
                     "have that many): pass a classifier whose last layer makes the logits")


def tapped(model: nn.Module, example: torch.Tensor, layers: Optional[Sequence[str]] = None) -> nn.Module:
    """``model`` as a task model (see the module docstring), probed once on ``example`` (``[1, C, H, W]``, on the
    model's device; the RNG state is left as it was). A model that already returns ``(logits, taps)`` with
    ``TAPS`` (the toolkit's own) is returned as it is, and ``layers`` must then be None.

    Raises ValueError naming the problem: a layer the model does not have (its module names listed), a tap whose
    output is not ``[B, C, H, W]`` or ``[B, C]``, a model whose output holds no logits.
    """
    if is_task_model(model):
        if layers:
            raise ValueError(f"layers: {type(model).__name__} is one of fkal.models; its taps are chosen by the "
                             "descriptor length L in the configuration's name (e.g. pfk-phat-L80), not by layers")
        return model
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    names = [n for n, _ in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[example.device.index or 0]
                                                    if example.device.type == "cuda" else []):
            num_classes = logits_of(model(example)).shape[-1]
        classifier = _classifier_name(model, num_classes)
        if layers is None:
            layers = DEFAULT_LAYERS if all(n in names for n in DEFAULT_LAYERS) else ()
        layers = tuple(layers)
        unknown = [t for t in layers if t not in names]
        if unknown:
            shown = ", ".join(n for n in names if "." not in n) or ", ".join(names[-12:])
            raise ValueError(f"layers: {type(model).__name__} has no module named {', '.join(unknown)}; its "
                             f"top-level modules are {shown} (model.named_modules() lists them all)")
        probe = Tapped(model, layers, classifier)
        with torch.no_grad():
            _, taps = probe(example)
        for t in layers:
            if taps[t].dim() not in (2, 4):
                raise ValueError(f"layers: the output of {t!r} is {tuple(taps[t].shape)}; choose modules whose "
                                 "output is [B, C, H, W] or [B, C]")
        widths = {t: int(taps[t].shape[1]) for t in layers}
        penultimate_width = int(taps["penultimate"].shape[1])
    finally:
        if "probe" in locals():
            probe.release()
        model.train(was_training)
    L = sum(widths.values())
    cls = type(f"Tapped_{type(model).__name__}", (Tapped,), {
        "TAPS": {0: (), L: layers} if layers else {0: (), penultimate_width: ("penultimate",)},
        "classifier": f"net.{classifier}",
        "LOSS_TAPS": layers,
        "LOSS_TAP_WIDTHS": widths,
        "default_L": L if layers else penultimate_width,
    })
    return cls(model, layers, classifier)
