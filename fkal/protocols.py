"""Protocols by name: the Fisher-kernel paper's (``fk``, the default) and TA-VAAL's benchmark (Kim et al., CVPR 2021,
section 4 and its supplement; the authors' code cubeyoung/TA-VAAL), selected with ``--protocol``.

A protocol is a set of command-line defaults per dataset (``PROTOCOLS``): it fills in what the command line leaves
unset, so every number stays overridable (``--protocol tavaal --epochs 50``). Where the TA-VAAL paper and its code
disagree both are offered, each by name:

  ``tavaal``        the authors' code: CIFAR-100 starts from 2,000 labels and adds 2,000 per cycle; every
                    method selects from a random subset of 10,000 unlabeled images; SGD weight decay 5e-4;
                    random crop of the 4-pixel zero-padded image; the VAE's z = 32; the discriminator sees the
                    ranker's raw score; imbalanced CIFAR-10 keeps the first 50 images of each even class (x100).
  ``tavaal-paper``  the paper's text and supplement table: CIFAR-100 1,000 / 1,000; the subset is 10x the budget;
                    weight decay 0.005; random crop of the 36x36 (2-pixel) zero-padded image; z = 64 (its table);
                    the discriminator sees sigmoid(r); imbalanced CIFAR-10 reduces the first five classes to
                    5,000 / IR images each, drawn at random (IR 10 and 100).

Both: the 50,000 CIFAR train images are the pool (no validation set: the Fisher-kernel method needs ``--val-size``,
which takes D_v out of the pool for every configuration), 1,000 random labels to start and 1,000 per cycle, 10
cycles, the CIFAR ResNet-18 from random weights (``--unsupervised 0``), SGD lr 0.1, momentum 0.9, batch 128, 200
epochs, lr x0.1 at 160, a fresh model every cycle (both the code and, silently, the paper; ``--model-per-cycle
warm`` is the Fisher-kernel protocol's warm start), the loss-prediction module's gradient cut after epoch 120,
TA-VAAL with eta 1, Adam 5e-4, 100 VAE epochs over labeled + subset at batch 128, r uniform in its first
iteration, five trials. Caltech-101 (the code has none): 1,000 / 500, SGD lr 0.01, batch 16, TA-VAAL with eta
0.2, z 128, lambda 15, Adam 1e-4 (the supplement's table). Not reproduced from the code: its random sampling draws
with replacement (a labeled image can be drawn again) and its loss module rides on every method by an
always-true test; ``--loss-module-all 1`` offers the latter.

The functions below are pure (the subset and the initial draw) or apply the parsed options to the spec, the run
settings and the loaded data; ``fkal.cli`` and ``fkal.loop`` call them.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .arguments import integer, number
from .errors import UserError

SubsetSize = Optional[Union[int, str]]      # None (no subset), an image count, or "{k}x" (k times the budget)


# ----------------------------------------------------------------------------------------------------------------
# The presets
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """Command-line defaults (argparse dests -> values) for every dataset, and per dataset on top."""

    name: str
    description: str
    common: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)      # dataset name -> dict of dests
    configs: dict = field(default_factory=dict)       # dataset name -> default cfg list

    def defaults(self, dataset: Optional[str]) -> dict[str, Any]:
        return {**self.common, **self.datasets.get(dataset or "", {})}


TAVAAL_CONFIGS = ("random", "varR-K64", "coreset", "lloss", "lloss-v2", "vaal", "tavaal")

_TAVAAL_COMMON = {
    "unsupervised": 0, "initial_labels": 1_000, "pool_size": 1_000, "iterations": 10,
    "epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "model_per_cycle": "fresh",
    "loss_module_all": 0, "imbalance_ratios": [1.0],
    # vaal/: the TA-VAAL code's VAE (widths 128-1024) and 2 x 512 discriminator, Adam 5e-4, beta 1, lambda 1,
    # 100 epochs over labeled + subset at batch 128; the loop's subset serves VAAL, TA-VAAL and learning loss
    "vaal_batch": 128, "vaal_width": 128, "vaal_disc_hidden": 512, "vaal_disc_layers": 2, "vaal_lr": 5e-4,
    "vaal_beta": 1.0, "vaal_lambda": 1.0, "tavaal_eta": 1.0, "vaal_epochs": 100.0, "tavaal_epochs": 100.0,
    "tavaal_subset_factor": 0, "lloss_subset": 0, "lloss_weight": 1.0, "lloss_margin": 1.0, "lloss_cutoff": 0.6,
    "tavaal_first_uniform": 1, "vaal_image_size": 32,
}
_CIFAR = {"train_size": 0, "val_size": 0}         # the pool: every train image (less D_v, if --val-size)
_CALTECH = {
    "train_size": 0, "val_size": 0, "pool_size": 500, "batch_size": 16, "lr": 0.01, "weight_decay": 5e-4,
    "vaal_batch": 16, "vaal_latent": 128, "vaal_lambda": 15.0, "vaal_lr": 1e-4, "tavaal_eta": 0.2,
    "vaal_image_size": 224,
}

PROTOCOLS: dict[str, Protocol] = {
    "fk": Protocol(
        "fk", "the Fisher-kernel paper's protocol (docs/protocol.md): the dataset's own numbers",
        datasets={"caltech101": {"imbalance_ratios": [1.0]}, "caltech101-bg": {"imbalance_ratios": [1.0]}}),
    "tavaal": Protocol(
        "tavaal", "TA-VAAL's benchmark as the authors' code runs it",
        common={**_TAVAAL_COMMON, "subset_size": 10_000, "crop_padding": 4, "vaal_latent": 32,
                "tavaal_disc_rank": "raw"},
        datasets={"cifar10": {**_CIFAR, "imbalance_rule": "tavaal-code", "imbalance_ratios": [1.0, 100.0]},
                  "cifar100": {**_CIFAR, "initial_labels": 2_000, "pool_size": 2_000},
                  "caltech101": {**_CALTECH, "crop_padding": None},
                  "caltech101-bg": {**_CALTECH, "crop_padding": None}},
        configs={d: TAVAAL_CONFIGS for d in ("cifar10", "cifar100", "caltech101", "caltech101-bg")}),
    "tavaal-paper": Protocol(
        "tavaal-paper", "TA-VAAL's benchmark as its text and supplement table give it",
        common={**_TAVAAL_COMMON, "subset_size": "10x", "crop_padding": 2, "weight_decay": 5e-3, "vaal_latent": 64,
                "tavaal_disc_rank": "sigmoid"},
        datasets={"cifar10": {**_CIFAR, "imbalance_rule": "tavaal-paper", "imbalance_ratios": [1.0, 10.0, 100.0]},
                  "cifar100": _CIFAR,
                  "caltech101": {**_CALTECH, "crop_padding": None},
                  "caltech101-bg": {**_CALTECH, "crop_padding": None}},
        configs={d: TAVAAL_CONFIGS for d in ("cifar10", "cifar100", "caltech101", "caltech101-bg")}),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UserError(f"unknown protocol '{name}': choose one of {', '.join(PROTOCOLS)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def subset_size(text: str) -> SubsetSize:
    """``--subset-size``: ``none``, an image count (``10000``), ``{k}x`` (k times the budget), or the names
    ``code`` (10,000, the TA-VAAL code) and ``paper`` (10x, the TA-VAAL text)."""
    text = text.strip().lower()
    named = {"none": None, "code": 10_000, "paper": "10x"}
    if text in named:
        return named[text]
    if re.fullmatch(r"[1-9]\d*x", text):
        return text
    if re.fullmatch(r"[1-9]\d*", text):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected none, code, paper, an image count or a multiple of the budget such "
                                     f"as 10x (got {text!r})")


def milestones(text: str) -> tuple[int, ...]:
    """``--lr-milestones 160`` or ``80,120``: epochs at which the learning rate is multiplied by 0.1."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs separated by commas, e.g. 80,120 (got {text!r})") from None
    if any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing epochs of at least 1 (got {text!r})")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .data.split import IMBALANCE_RULES

    g = parser.add_argument_group(
        "protocol",
        "--protocol fills in the defaults of a benchmark; every other option below and above overrides them. "
        + " ".join(f"{p.name}: {p.description}." for p in PROTOCOLS.values()))
    g.add_argument("--protocol", choices=tuple(PROTOCOLS), default="fk",
                   help="the benchmark whose numbers are the defaults (fkal/protocols.py lists them)")
    g.add_argument("--initial-labels", type=integer(0), default=0,
                   help="iteration 1 labels this many pool images drawn at random, the same for every configuration "
                        "of a run; later iterations add --pool-size each (0: iteration 1 is the acquisition's own "
                        "query of --pool-size images)")
    g.add_argument("--subset-size", type=subset_size, default=None,
                   help="every acquisition selects from a random subset of the unlabeled pool, drawn anew each "
                        "iteration: an image count (10000, or 'code': the TA-VAAL code), a multiple of --pool-size "
                        "(10x, or 'paper': the TA-VAAL text), or none (the whole pool)")
    g.add_argument("--model-per-cycle", choices=("warm", "fresh"), default="warm",
                   help="warm: each iteration trains on from the previous iteration's model (the Fisher-kernel "
                        "protocol); fresh: from the run's initial model every iteration (the TA-VAAL code)")
    g.add_argument("--loss-module-all", type=int, choices=(0, 1), default=0,
                   help="1 attaches the loss-prediction module (trained with the RankNet loss, --lloss-weight) to "
                        "the task model of every acquisition, as the TA-VAAL code does; 0 only to lloss, lloss-v2 and "
                        "tavaal")
    g.add_argument("--imbalance-rule", choices=tuple(IMBALANCE_RULES), default=None,
                   help="how the imbalance ratio reduces the pool: " + "; ".join(
                       f"{k}: {v}" for k, v in IMBALANCE_RULES.items()) + " (default: the dataset's)")
    g.add_argument("--lr", type=number(0, above=True), default=None, help="SGD learning rate (default: protocol)")
    g.add_argument("--momentum", type=number(0, 1, below=True), default=None, help="SGD momentum (default: protocol)")
    g.add_argument("--weight-decay", type=number(0), default=None,
                   help="SGD weight decay (default: protocol; TA-VAAL: 5e-4 in its code, 0.005 in its text)")
    g.add_argument("--lr-milestones", type=milestones, default=None,
                   help="epochs at which the learning rate is multiplied by 0.1, e.g. 160 (default: protocol, "
                        "scaled with --epochs)")
    g.add_argument("--crop-padding", type=integer(0), default=None,
                   help="training augmentation of in-memory 32x32 sources: random crop of the image zero-padded by "
                        "this many pixels, and a horizontal flip (TA-VAAL: 4 in its code, 2 in its text; default: "
                        "the loader's own)")


def parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], dataset: Optional[str]) -> argparse.Namespace:
    """Parse ``argv`` with the protocol's defaults: a first pass reads ``--protocol`` (and ``--dataset``), the
    protocol's values become the parser's defaults, a second pass reads the rest over them."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    name = getattr(known, "protocol", "fk")
    ds = (dataset or getattr(known, "dataset", "") or "").lower()
    present = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in get_protocol(name).defaults(ds).items() if k in present})
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# Applying the parsed options
# ----------------------------------------------------------------------------------------------------------------
def apply_to_spec(spec, args: argparse.Namespace):
    """The dataset spec under the chosen imbalance rule (its rare classes where the rule fixes them) and the
    protocol's default cfg list."""
    from .data.split import rule_rare_classes

    rule = getattr(args, "imbalance_rule", None)
    if rule:
        rare = rule_rare_classes(rule, spec.num_classes)
        spec = replace(spec, imbalance=rule, rare_classes=spec.rare_classes if rare is None else rare)
    configs = get_protocol(getattr(args, "protocol", "fk")).configs.get(spec.name)
    return replace(spec, configs=configs) if configs else spec


def apply_to_settings(s, args: argparse.Namespace):
    """The run settings (``fkal.run_state.Settings``) with the protocol's fields and the SGD overrides."""
    train = s.train
    for name in ("lr", "momentum", "weight_decay"):
        if getattr(args, name, None) is not None:
            train = replace(train, **{name: getattr(args, name)})
    if getattr(args, "lr_milestones", None) is not None:
        train = replace(train, milestones=tuple(args.lr_milestones))
    return replace(s, train=train, protocol=getattr(args, "protocol", "fk"),
                   initial_labels=getattr(args, "initial_labels", 0), subset_size=getattr(args, "subset_size", None),
                   model_per_cycle=getattr(args, "model_per_cycle", "warm"),
                   loss_module_all=getattr(args, "loss_module_all", 0), crop_padding=getattr(args, "crop_padding", None))


def check(s, spec, configs: Sequence, val_size: int) -> None:
    """Requests the protocol cannot serve, as one ``UserError``: the Fisher-kernel method, SIMILAR (its query set
    is the misclassified validation images) or ``--epoch-selection val`` without a validation set; a subset
    smaller than the budget."""
    from .acquisitions.registry import spec_of

    if val_size == 0:
        needs = [c.name for c in configs if "val" in spec_of(c.acquisition).needs]
        if needs or s.epoch_selection == "val":
            what = f"{', '.join(needs)} match{'es' if len(needs) == 1 else ''} the misclassified validation images" \
                if needs else "--epoch-selection val chooses the epoch on it"
            raise UserError(f"{what}, and this protocol has no validation set D_v: add --val-size N (e.g. 5000; the "
                            f"images are taken out of the pool for every configuration of the run, so compare only "
                            f"with configurations run with the same --val-size)")
    if s.subset_size is not None:
        size = subset_count(s.subset_size, s.query_size)
        if size < s.query_size:
            raise UserError(f"--subset-size {s.subset_size} gives {size} images, fewer than the {s.query_size} each "
                            "iteration adds (--pool-size)")


def prepare_data(raw, spec, args: argparse.Namespace, out: Path, write: bool = True):
    """The loaded data with ``--crop-padding`` applied to the training augmentation; a loader's own split
    (``RawData.manifest``, Caltech-101) is written to ``{out}/{DATASET}/dataset_split.json`` where ``write``
    (under torchrun: rank 0 only)."""
    from .data.sources import RandomCropFlip, TensorSource
    from .io import save_json

    padding = getattr(args, "crop_padding", None)
    if padding is not None:
        old = getattr(raw.train, "augment", None)
        if not isinstance(raw.train, TensorSource) or not isinstance(old, RandomCropFlip) or old.padding == 0:
            raise UserError(f"--crop-padding: {spec.name}'s training images are not randomly cropped (it applies to "
                            "the 32x32 datasets: CIFAR-10, CIFAR-100, SVHN)")
        raw.train.augment = RandomCropFlip(padding, old.flip, tuple(raw.train.mean.flatten().tolist()),
                                           tuple(raw.train.std.flatten().tolist()))
    if raw.manifest is not None and write:
        path = Path(out) / spec.folder / "dataset_split.json"
        if not path.exists() or _read(path) != raw.manifest:
            save_json(raw.manifest, path)
    return raw


def _read(path: Path) -> Any:
    import json
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# The initial labeled set and the per-cycle subset (pure)
# ----------------------------------------------------------------------------------------------------------------
def subset_count(size: SubsetSize, budget: int) -> Optional[int]:
    """Images in the subset: None (no subset), the count, or k x ``budget`` for ``"{k}x"``."""
    if size is None:
        return None
    if isinstance(size, str):
        return int(size[:-1]) * budget
    return int(size)


def candidate_subset(unlabeled: np.ndarray, size: Optional[int], generator: torch.Generator) -> np.ndarray:
    """``size`` positions of ``unlabeled`` [N_u] drawn uniformly without replacement with ``generator``, sorted
    (all of ``unlabeled`` when ``size`` is None or at least N_u): what every acquisition selects from."""
    unlabeled = np.asarray(unlabeled)
    if size is None or size >= len(unlabeled):
        return unlabeled
    return np.sort(unlabeled[torch.randperm(len(unlabeled), generator=generator)[:size].numpy()])


def initial_draw(unlabeled: np.ndarray, size: int, generator: torch.Generator) -> np.ndarray:
    """The initial random labeled set: ``size`` distinct positions of ``unlabeled`` drawn uniformly."""
    unlabeled = np.asarray(unlabeled)
    if size > len(unlabeled):
        raise UserError(f"--initial-labels {size} exceeds the pool of {len(unlabeled)} images")
    return unlabeled[torch.randperm(len(unlabeled), generator=generator)[:size].numpy()]


def labels_needed(initial_labels: int, query_size: int, iterations: int) -> int:
    """Pool images that B iterations label: the initial set and P per later iteration, or P per iteration."""
    if initial_labels:
        return initial_labels + query_size * (iterations - 1)
    return query_size * iterations


def iteration_budget(initial_labels: int, query_size: int, iteration: int) -> int:
    """Images iteration b (1-based) labels."""
    return initial_labels if (iteration == 1 and initial_labels) else query_size
