"""``fkal.select``: which images of a pool to label next, for any classifier and any data.

The same code path as ``run.py``'s loop and ``label_next.py``'s rounds (``fkal.acquisitions.registry.query``):
``select`` only turns the caller's model and data into the context every acquisition takes.

    import fkal
    picks = fkal.select("pfk-phat", model, pool_images, 125, labeled=(x_l, y_l), val=(x_v, y_v))
    picks.indices        # [125] int64 positions into the pool

Images are what the model takes (normalized float ``[N, C, H, W]``). Every data argument is a
``torch.utils.data.Dataset`` yielding ``(image, label)``, a pair ``(images, labels)`` of tensors, or (the pool only)
a tensor of images. The pool's labels are never read, except by the two acquisitions that reveal each pick's label
while they choose the rest of the batch (``galaxy``, ``direct``: a benchmark's oracle).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from .acquisitions import registry
from .acquisitions.contract import NEEDS, QueryContext
from .config import Config
from .data import ALData, DatasetSpec, RawData, Schedule, Split
from .errors import UserError
from .models.wrapped import has_dropout, is_task_model, tapped

Data = Union[torch.utils.data.Dataset, torch.Tensor, tuple, list]


@dataclass
class Selection:
    """What ``select`` returns.

    indices: ``[budget]`` int64, distinct positions into the pool, in the acquisition's order (best first where
             it ranks)
    scores:  ``[budget]`` float64, the acquisition's score of each pick (its meaning is the acquisition's: a
             similarity, an uncertainty, a distance), or None for acquisitions without scores (``random``)
    extras:  what else the acquisition reports: ``pseudo_labels`` (``[N_pool]`` int64, for acquisitions that
             estimate them), ``config`` (the configuration name resolved, e.g. ``pfk-phat-L768``), and the
             acquisition's own fields (e.g. ``pool_features``)
    """

    indices: torch.Tensor
    scores: Optional[torch.Tensor] = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def available() -> list[str]:
    """The acquisition names ``select`` takes: configuration prefixes of the grammar
    ``{acquisition}[-{S}][-L{L}][-E{E}][-K{K}]``. Some need more than the prefix: the Fisher kernel ``pfk`` its
    pseudo-label estimator S (``pfk-phat``; L defaults to the model's), the ensembles their ``-E``."""
    return registry.names()


# ----------------------------------------------------------------------------------------------------------------
# Data as sources
# ----------------------------------------------------------------------------------------------------------------
class _ImageSource:
    """The interface of ``fkal.data.TensorSource`` over images that are already what the model takes: a float
    tensor ``[N, C, H, W]`` or a ``Dataset`` of ``(image, label)``. ``mean``/``std`` are 0 and 1 (the images
    are taken as given)."""

    augment = None

    def __init__(self, images: Optional[torch.Tensor] = None, dataset: Optional[torch.utils.data.Dataset] = None):
        self.images, self.dataset = images, dataset
        n = len(images) if images is not None else len(dataset)
        self.labels = np.full(n, -1, dtype=np.int64)
        first = self.get(np.zeros(1, dtype=np.int64)) if n else None
        self.image_shape = tuple(first.shape[1:]) if first is not None else ()
        channels = self.image_shape[0] if self.image_shape else 1
        self.mean = torch.zeros(1, channels, 1, 1)
        self.std = torch.ones(1, channels, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        if self.images is not None:
            return self.images[torch.as_tensor(idx)].float()
        items = [self.dataset[int(i)] for i in idx]
        return torch.stack([torch.as_tensor(it[0] if isinstance(it, (tuple, list)) else it) for it in items]).float()

    def batches(self, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None, augment: bool = False) -> Iterator:
        idx = np.asarray(idx)
        order = torch.randperm(len(idx), generator=generator).numpy() if shuffle else np.arange(len(idx))
        yield from self.batches_of(idx, [order[s:s + batch_size] for s in range(0, len(idx), batch_size)])

    def batches_of(self, idx: np.ndarray, groups: list, augment: bool = False,
                   generator: Optional[torch.Generator] = None) -> Iterator:
        idx = np.asarray(idx)
        for pos in groups:
            yield pos, self.get(idx[pos])


class _Concat(_ImageSource):
    """Sources one after another, as one source: rows ``[offsets[k], offsets[k + 1])`` are part k's."""

    def __init__(self, parts: Sequence[_ImageSource]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.labels = np.concatenate([p.labels for p in self.parts])
        self.image_shape, self.mean, self.std = self.parts[0].image_shape, self.parts[0].mean, self.parts[0].std

    def get(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        out = None
        for k in np.unique(part):
            rows = np.flatnonzero(part == k)
            x = self.parts[k].get(idx[rows] - self.offsets[k])
            if out is None:
                out = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype)
            out[torch.as_tensor(rows)] = x
        return out if out is not None else torch.empty((0, *self.image_shape))


def _dataset_labels(dataset: torch.utils.data.Dataset, what: str) -> np.ndarray:
    """The labels of a Dataset: its ``targets`` where it has them, else its items' second elements."""
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return np.asarray(targets, dtype=np.int64)
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"{what}: its items must be (image, label) pairs to give labels")
        labels.append(int(item[1]))
    return np.asarray(labels, dtype=np.int64)


def _source(data: Data, what: str, labels_needed: bool) -> tuple[_ImageSource, Optional[np.ndarray]]:
    """``(source, labels or None)`` of one data argument; labels are read only where ``labels_needed``."""
    if isinstance(data, torch.Tensor):
        if labels_needed:
            raise ValueError(f"{what}: give its labels too, as a pair (images, labels)")
        images, labels = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data[0], np.asarray(torch.as_tensor(data[1]).cpu(), dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{what}: {len(images)} images but labels of shape {tuple(labels.shape)}; give one "
                             "label per image, shape [N]")
    elif isinstance(data, torch.utils.data.Dataset):
        source = _ImageSource(dataset=data) if len(data) else None
        if source is None:
            raise ValueError(f"{what} is empty: give at least one image")
        return source, (_dataset_labels(data, what) if labels_needed else None)
    else:
        raise TypeError(f"{what}: expected a torch Dataset of (image, label), a pair (images, labels) of tensors"
                        f"{' or a tensor of images' if what == 'pool' else ''}, not {type(data).__name__}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{what}: images must be a float tensor [N, C, H, W] (normalized as the model takes "
                         f"them), got {images.dtype} of shape {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{what} is empty: give at least one image")
    return _ImageSource(images=images.detach().cpu()), labels


# ----------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    for add in registry.argument_groups():
        add(parser)
    return parser


def acquisition_options(name: str = "", given: Optional[dict] = None) -> dict:
    """Every acquisition option (argparse dest -> value) with the command line's defaults, ``given`` over them,
    each checked as the command line checks it. An unknown name is a ValueError listing those of ``name``'s
    acquisition (all of them without ``name``)."""
    parser = _parser()
    options = vars(parser.parse_args([]))
    actions = {a.dest: a for a in parser._actions}
    for key, value in (given or {}).items():
        if key not in actions:
            own = registry.spec_of(name).options if name else ()
            raise ValueError(f"unknown option {key!r}{f' for {name}' if name else ''}: "
                             + (f"its options are {', '.join(own)}" if own else
                                f"{name or 'it'} has no options of its own")
                             + f" (every acquisition's: {', '.join(sorted(actions))})")
        action = actions[key]
        if value is not None and action.type is not None:
            try:
                value = action.type(str(value)) if not isinstance(value, bool) else value
            except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
                raise ValueError(f"option {key}={value!r}: {e}") from None
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"option {key}={value!r}: choose one of {', '.join(map(str, action.choices))}")
        options[key] = value
    return options


# ----------------------------------------------------------------------------------------------------------------
# select
# ----------------------------------------------------------------------------------------------------------------
def resolve(name: str, model: nn.Module) -> Config:
    """The configuration a name stands for on ``model`` (a task model): a name without ``-L`` takes the model's
    default descriptor length where the acquisition wants one (``AcquisitionSpec.default_L``)."""
    from .labeling.project import DEFAULT_L
    from .models import model_name_of

    try:
        cfg = registry.config(name)
    except UserError as e:
        raise ValueError(f"name: {e}") from None
    spec = registry.spec_of(cfg.acquisition)
    if cfg.L is None and spec.default_L(cfg):
        L = getattr(type(model), "default_L", None) or DEFAULT_L.get(model_name_of(model) or "")
        cfg = Config(cfg.acquisition, cfg.pseudo_label, L if L is not None else max(type(model).TAPS), cfg.E, cfg.K)
    if cfg.L is not None and cfg.L not in type(model).TAPS:
        raise ValueError(f"name: {cfg.name} asks for descriptors of length L={cfg.L}, and this model's taps make "
                         f"L = {', '.join(str(k) for k in sorted(type(model).TAPS) if k)}; name another L, or choose "
                         "the layers (layers=[...]) whose channels add up to it")
    return cfg


def select(name: str, model: Union[nn.Module, Sequence[nn.Module]], pool: Data, budget: int, *,
           labeled: Optional[Data] = None,
           val: Optional[Data] = None, generator: Optional[torch.Generator] = None,
           device: Optional[Union[str, torch.device]] = None, batch_size: int = 1000,
           layers: Optional[Sequence[str]] = None, pretrained: Optional[nn.Module] = None,
           iteration: Optional[int] = None, progress: bool = False, **options: Any) -> Selection:
    """The ``budget`` pool images that the acquisition ``name`` would have labeled next.

    Args:
        name: a configuration name (``fkal.available()`` lists the acquisitions): ``"pfk-phat-L80"``, ``"badge"``,
            ``"coreset"``, ``"varR-K32"``, ``"typiclust"``, ``"random"``, ...; without ``-L`` the model's default
            descriptor length (``"pfk-phat"``: L = 768 for ResNets with ``layer3`` and ``layer4``).
        model: a classifier ``nn.Module`` whose output is the logits ``[B, C]`` (any torchvision classifier, or one
            of ``fkal.models``); its weights are used as they are (eval mode; nothing is trained). A list of E
            classifiers is an ensemble, for the configurations with ``-E{E}`` (``varR-E4-K32``).
        pool: the unlabeled images, ``[N, C, H, W]`` float as the model takes them, a pair ``(images, labels)``
            or a Dataset of ``(image, label)``; labels are read only by ``galaxy`` and ``direct``.
        budget: how many to pick, ``1 <= budget <= N``.
        labeled: the images labeled so far with their labels (a pair or a Dataset), or None.
        val: the labeled validation set D_v that stands for the data the model will meet (a pair or a Dataset):
            the Fisher-kernel method (``pcc``, ``pfk``, ``pfk-sum``) and SIMILAR match the pool to the validation
            images the model gets wrong (paper, Algorithm 1).
        generator: the seeded ``torch.Generator`` of every random draw (default: one seeded with 0).
        device: where the passes run (default: the model's device).
        batch_size: images per inference batch.
        layers: module names of ``model`` whose outputs are the taps of the descriptors and Fisher scores
            (``model.named_modules()``; default ``layer3`` and ``layer4`` where the model has them, else the
            classifier's input). Ignored by acquisitions that need no taps; not for ``fkal.models``' own models,
            whose taps are chosen by L.
        pretrained: a self-supervised model whose penultimate features TypiClust clusters (its default
            ``typiclust_features="pretrained"``).
        iteration: the active-learning iteration this query stands for (default 1 without ``labeled``, else 2): the
            MC-dropout acquisitions pick at random at iteration 1 unless ``uncertainty_first_random=0``.
        progress: show progress bars.
        **options: the acquisitions' own options by their command-line dest names (``run.py --help``), e.g.
            ``galaxy_class_order="random"``, ``similar_eta=1.0``, with the command line's defaults and checks.

    Returns:
        A ``Selection``: ``indices`` ``[budget]`` int64 positions into ``pool``, ``scores`` or None, ``extras``.

    Raises:
        ValueError: naming the argument and the fix: an unknown name or option, a budget outside 1..N, a pool,
            labeled or validation set that is empty or of another image shape than the pool's, labels outside the
            model's classes, layers the model does not have, or a name that needs what was not given (D_v for
            ``pfk``, the pool's labels for ``galaxy``, dropout layers for MC dropout, a training hook for
            ``lloss`` and ``tavaal``).
        TypeError: a data argument of another type.
    """
    try:
        acquisition = registry.config(name).acquisition
    except UserError as e:
        raise ValueError(f"name: {e} (fkal.available() lists the acquisitions)") from None
    spec = registry.spec_of(acquisition)
    if spec.hooks is not None:
        raise ValueError(f"name: {acquisition} trains its loss-prediction module with the task model (a training "
                         "hook), which a model trained elsewhere lacks; run it through run.py or label_next.py, or "
                         "choose another acquisition")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget: a whole number of images, not {budget!r}")
    if "pool_labels" in spec.needs and isinstance(pool, torch.Tensor):
        raise ValueError(f"pool: {acquisition} needs {NEEDS['pool_labels']}")
    pool_source, pool_labels = _source(pool, "pool", "pool_labels" in spec.needs)
    n_pool = len(pool_source)
    if not 1 <= budget <= n_pool:
        raise ValueError(f"budget {budget}: pick between 1 and the pool's {n_pool} images")
    for need in sorted(spec.needs):
        given = {"val": val, "labeled": labeled, "pool_labels": pool_labels, "dropout": True}[need]
        if given is None:
            raise ValueError(f"{need if need != 'pool_labels' else 'pool'}: {acquisition} needs {NEEDS[need]}")

    members = list(model) if isinstance(model, (list, tuple)) else [model]
    if not members or not all(isinstance(m, nn.Module) for m in members):
        raise TypeError("model: a torch.nn.Module classifier, or a list of them (an ensemble)")
    device = torch.device(device) if device is not None else _device_of(members[0])
    example = pool_source.get(np.zeros(1, dtype=np.int64)).to(device)
    modes = [m.training for m in members]
    wrappers: list = []
    try:
        for m in members:
            wrappers.append(tapped(m, example, layers).to(device).eval())
        task_pretrained = tapped(pretrained, example).to(device).eval() if pretrained is not None else None
        wrappers.append(task_pretrained)
        result, cfg = _query(name, acquisition, spec, members, wrappers[:-1], task_pretrained, pool_source,
                             pool_labels, labeled, val, budget, generator, device, batch_size, iteration, progress,
                             options)
    except UserError as e:
        raise ValueError(str(e)) from None
    finally:
        for m, mode in zip(members, modes):
            m.train(mode)
        for wrapper in wrappers:
            if hasattr(wrapper, "release"):
                wrapper.release()
    extras = {"config": cfg.name, **result.extras}
    if result.pseudo_labels is not None:
        extras["pseudo_labels"] = torch.as_tensor(np.asarray(result.pseudo_labels), dtype=torch.int64)
    scores = None if result.scores is None else torch.as_tensor(np.asarray(result.scores, dtype=np.float64))
    return Selection(torch.as_tensor(np.asarray(result.indices), dtype=torch.int64), scores, extras)


def _query(name, acquisition, spec, members, tasks, task_pretrained, pool_source, pool_labels, labeled, val, budget,
           generator, device, batch_size, iteration, progress, options):
    """``select``'s context made and queried: ``(QueryResult, Config)``."""
    task = tasks[0]
    cfg = resolve(name, task)
    if len(tasks) != cfg.E:
        raise ValueError(f"model: {cfg.name} pools {cfg.E} ensemble member{'s' if cfg.E > 1 else ''}, and "
                         f"{len(tasks)} {'were' if len(tasks) > 1 else 'was'} given; pass model=[...] with one "
                         f"classifier per member (or name a configuration with -E{len(tasks)})")
    for m in members:
        if "dropout" in spec.needs and not is_task_model(m) and not has_dropout(m):
            raise ValueError(f"model: {acquisition} draws MC-dropout masks, and {type(m).__name__} has no "
                             "nn.Dropout layer of positive rate; add one (e.g. before the classifier), or choose "
                             "another acquisition")
    n_pool = len(pool_source)
    example = pool_source.get(np.zeros(1, dtype=np.int64)).to(device)
    with torch.no_grad():
        num_classes = int(task(example)[0].shape[-1])
    parts = [pool_source]
    lab_labels = val_labels = np.zeros(0, dtype=np.int64)
    for what, data in (("labeled", labeled), ("val", val)):
        if data is None:
            continue
        source, labels = _source(data, what, True)
        if source.image_shape != pool_source.image_shape:
            raise ValueError(f"{what}: images of shape {source.image_shape} where the pool's are "
                             f"{pool_source.image_shape}; give them the pool's shape (as the model takes them)")
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{what}: label {int(labels[bad][0])} is outside the model's {num_classes} classes "
                             f"(0..{num_classes - 1}); give class indices in that range")
        source.labels = labels
        parts.append(source)
        if what == "labeled":
            lab_labels = labels
        else:
            val_labels = labels
    if pool_labels is not None:
        if len(pool_labels) != n_pool:
            raise ValueError(f"pool: {n_pool} images but {len(pool_labels)} labels")
        pool_source.labels = pool_labels
    combined = _Concat(parts) if len(parts) > 1 else pool_source
    n_lab, n_val = len(lab_labels), len(val_labels)
    candidates = np.arange(n_pool + n_lab, dtype=np.int64)          # the pool, then the labeled images
    val_rows = np.arange(n_pool + n_lab, n_pool + n_lab + n_val, dtype=np.int64)
    data_spec = DatasetSpec(name="own", folder="own", num_classes=num_classes, train_size=len(candidates),
                            val_size=n_val, rare_classes=(), model=_model_name(task),
                            train=_NO_TRAINING, unsup=_NO_TRAINING, query_size=budget, iterations=1, runs=1,
                            default_L=cfg.L or 0)
    split = Split(pool=candidates, pool_labels=combined.labels[candidates].copy(), val=val_rows, seed=0,
                  imbalance_ratio=1.0)
    data = ALData(data_spec, RawData(train=combined, test=combined, val=combined), split)
    ctx = QueryContext(
        models=list(tasks), data=data, labeled=np.arange(n_pool, n_pool + n_lab, dtype=np.int64),
        unlabeled=np.arange(n_pool, dtype=np.int64), budget=int(budget),
        generator=generator if generator is not None else torch.Generator().manual_seed(0), device=device,
        config=cfg, iteration=iteration if iteration is not None else (2 if n_lab else 1), batch_size=batch_size,
        progress=progress, options=acquisition_options(acquisition, options),
        pretrained=(lambda: task_pretrained) if task_pretrained is not None else None)
    if acquisition == "typiclust" and ctx.options.get("typiclust_features") == "pretrained" and \
            task_pretrained is None:
        raise ValueError("pretrained: typiclust clusters the features of a self-supervised model: pass "
                         "pretrained=MODEL, or typiclust_features='current' for the model's own features")
    return registry.query(ctx), cfg


_NO_TRAINING = Schedule(epochs=0, lr=0.0, batch_size=1, milestones=())


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _model_name(model: nn.Module) -> str:
    from .models import model_name_of
    return model_name_of(model) or "own"
