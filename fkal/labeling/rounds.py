"""A labeling round on the user's images and the merge of the annotations that come back.

``create_project`` reads the user's files once and fixes the project's settings (``project.json``);
``select_round`` makes round n: the initial models (rotation pretraining on the pool, once, unless weights are
given), training on the labeled set (warm start from round n-1's models, a fresh schedule, as the loop of
``run.py``), the query with the configured acquisition, then the files for the annotators; ``merge`` adds an
annotations file to the labeled set. Each step's result is saved before the next starts and is reused when its
inputs are unchanged, so a killed round is resumed by running the command again.

Seeds: every random draw comes from a generator derived from the project's seed and the step
(``fkal.run_state.derive_seed``); the global RNG (training augmentation) is seeded per round inside ``fork_rng`` and
restored afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..acquisitions.contract import QueryContext
from ..acquisitions import registry
from ..acquisitions.registry import ACQUISITIONS, REVEALS_LABELS, TASK_HOOKS, spec_of
from ..config import Config, parse_config
from ..data import RandomCropFlip, TensorSource
from ..device import cuda_settings
from ..data.own_images import (ImageCache, build_aldata, channel_stats, read_labeled, read_pool,
                               stratified_share)
from ..errors import UserError
from ..io import atomic_path, save_json, save_npz, save_text, save_torch
from ..run_state import derive_seed, generator
from ..models import MODELS, TORCHVISION_PREFIX, build_model, taps_for
from ..state.checkpoints import models_from_states
from ..training import initial_model, predict, train
from . import outputs
from .annotations import check, read_annotations
from .project import (DEFAULT_L, ImageList, Label, Project, StatePaths, auto_model, defaults_of, load_labeled,
                      save_labeled)

DEFAULT_ACQUISITION = "pfk-phat"      # the paper's best: R_zg with S = p^(y, z), at the model's default L
DEFAULT_VAL_SHARE = 0.2
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------------------
# Settings: the model, the acquisition and the schedules a project is made with
# ----------------------------------------------------------------------------------------------------------------
def resolve_model(name: str, layers: Optional[str], image_size: Optional[int]) -> tuple[str, str, int]:
    """``(build name, defaults key, image size)`` of a ``--model`` value: a project model (``lenet``,
    ``resnet10``, ``resnet18``, their ``-small`` forms) or a torchvision architecture (``resnet50``,
    ``torchvision:resnet18``, ...) with ``--layers`` (comma-separated graph-node names) or its default taps."""
    if name in MODELS:
        if layers:
            raise UserError(f"--layers chooses the taps of a torchvision architecture; the project's {name} has its "
                            "taps by descriptor length L in the acquisition's name (e.g. pfk-phat-L20)")
        size = image_size or defaults_of(name).image_size
        if name == "lenet" and size != 28:
            raise UserError(f"LeNet takes 28x28 images (its fc1 expects 20x4x4 features); drop --image-size {size} "
                            "or choose another --model")
        return name, name, size
    from ..models import torchvision_taps as tv

    arch = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    if arch not in tv.architectures():
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)} or a torchvision classification "
                        "architecture (torchvision.models.list_models(module=torchvision.models), e.g. resnet50)")
    size = image_size or defaults_of("torchvision").image_size
    chosen = tuple(t.strip() for t in layers.split(",") if t.strip()) if layers else tv.default_taps(arch)
    full = tv.model_name(arch, chosen, size)
    try:
        tv.anatomy(arch, chosen, size)
    except ValueError as e:
        raise UserError(f"--model {name} --layers {','.join(chosen)}: {e}") from None
    return full, "torchvision", size


def model_default_L(model: str) -> int:
    if model in DEFAULT_L:
        return DEFAULT_L[model]
    taps = type(build_model(model, 2)).TAPS
    return max(taps)


def resolve_acquisition(name: str, model: str) -> Config:
    """The configuration of ``--acquisition``: any name ``run.py`` takes; a Fisher-kernel acquisition without L
    gets the model's default L. Refused: acquisitions that read labels nobody has given yet."""
    base = max((a for a in REVEALS_LABELS if name == a or name.startswith(a + "-")), key=len, default=None)
    if base is not None:
        raise UserError(f"--acquisition {name}: {base} reveals each pick's label to choose the next picks of the same "
                        "batch (an oracle inside the batch), which a one-shot annotation round cannot do; choose "
                        f"another acquisition, e.g. {DEFAULT_ACQUISITION}")
    cfg = parse_config(name, ACQUISITIONS)
    if cfg.pseudo_label == "y":
        raise UserError(f"--acquisition {name}: the pseudo-label y is the true label of every unlabeled image (the "
                        "paper's ablation ceiling), which nobody has given yet; use phat, phat-g, yhat, trC or mi")
    if spec_of(cfg.acquisition).default_L(cfg):           # a name without -L takes the model's default L
        if cfg.L is None:
            cfg = replace(cfg, L=model_default_L(model))
        try:
            taps_for(build_model(model, 2), cfg.L)
        except ValueError as e:
            raise UserError(f"--acquisition {name}: {e}") from None
    return cfg


def schedules(defaults, given: dict):
    train_s, unsup = defaults.train, defaults.unsup
    if given.get("epochs") is not None:
        train_s = train_s.with_epochs(given["epochs"])
    if given.get("batch_size") is not None:
        train_s = replace(train_s, batch_size=given["batch_size"])
        unsup = replace(unsup, batch_size=given["batch_size"])
    if given.get("lr") is not None:
        train_s = replace(train_s, lr=given["lr"])
    if given.get("unsup_epochs") is not None:
        unsup = unsup.with_epochs(given["unsup_epochs"])
    for flag, v, least in (("--epochs", train_s.epochs, 0), ("--unsup-epochs", unsup.epochs, 0),
                           ("--batch-size", train_s.batch_size, 1)):
        if v < least:
            raise UserError(f"{flag} {v}: must be at least {least}")
    return train_s, unsup


def _path_setting(v) -> Optional[str]:
    return None if v is None else str(Path(v).expanduser().resolve())


def normalized(key: str, value, project: Optional[Project] = None):
    """A fixed setting as ``project.json`` keeps it (paths resolved, lists split, names canonical)."""
    if value is None:
        return None
    if key in ("pool", "labeled", "val", "weights") and (key != "weights" or Path(value).expanduser().exists()):
        return _path_setting(value)
    if key == "classes":
        return [c.strip() for c in str(value).split(",") if c.strip()]
    if key == "acquisition" and project is not None:
        return resolve_acquisition(value, project.model).name
    return value


def check_same(project: Project, given: dict) -> None:
    """A later round takes the project's settings; one given again must be the same."""
    for key, value in given.items():
        if key not in project.settings:
            continue
        stored, now = project.settings[key], normalized(key, value, project)
        if now != stored:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} differs from this project's {stored} (fixed by its first round): leave "
                            f"{flag} out, or start a new --state folder")
    for key, value in given.items():
        if key in project.options and value != project.options[key]:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} differs from this project's {project.options[key]} (fixed by its first "
                            f"round): leave {flag} out, or start a new --state folder")


# ----------------------------------------------------------------------------------------------------------------
# A new project
# ----------------------------------------------------------------------------------------------------------------
def create_project(paths: StatePaths, given: dict, options: dict, progress: bool = True) -> Project:
    """Read the user's files, fix the settings and decode the images (``project.json`` is written last)."""
    if not given.get("pool"):
        raise UserError(f"{paths.root} holds no project yet: a new project needs --pool (a folder or CSV of the "
                        "unlabeled images) and --labeled and/or --val (labeled images)")
    seed = int(given.get("seed") or 0)
    pool = [str(p) for p in read_pool(given["pool"])]
    labeled = [(str(p), c) for p, c in read_labeled(given["labeled"])] if given.get("labeled") else []
    if given.get("val"):
        if given.get("val_share") is not None:
            raise UserError("--val names the validation set and --val-share draws it from --labeled: give one of them")
        val = [(str(p), c) for p, c in read_labeled(given["val"], "--val")]
    else:
        if not labeled:
            raise UserError("the validation set D_v (labeled images that stand for the data the model will meet) is "
                            "needed: pass --val FOLDER_OR_CSV, or --labeled with a share of it kept apart "
                            "(--val-share)")
        share = DEFAULT_VAL_SHARE if given.get("val_share") is None else float(given["val_share"])
        if not 0.0 < share < 1.0:
            raise UserError(f"--val-share {share}: the share of the labeled images kept for D_v must be in (0, 1)")
        picked = stratified_share([c for _, c in labeled], share,
                                  torch.Generator().manual_seed(derive_seed(seed, "val-share")))
        if len(picked) == 0:
            raise UserError(f"--val-share {share} of {len(labeled)} labeled images leaves no validation image: give "
                            "more labeled images or --val")
        keep = np.ones(len(labeled), bool)
        keep[picked] = False
        val = [labeled[i] for i in picked]
        labeled = [labeled[i] for i in np.flatnonzero(keep)]
    val_paths = {p for p, _ in val}
    both = [p for p, _ in labeled if p in val_paths]
    if both:
        raise UserError(f"{both[0]} is both a labeled image and a validation image ({len(both)} such): keep D_v apart")
    names = sorted({c for _, c in labeled} | {c for _, c in val})
    if given.get("classes"):
        classes = normalized("classes", given["classes"])
        extra = sorted(set(names) - set(classes))
        if extra:
            raise UserError(f"label {extra[0]!r} is not among --classes {','.join(classes)}: add it or fix the label")
        if len(set(classes)) != len(classes):
            raise UserError(f"--classes names a class twice: {','.join(classes)}")
    else:
        classes = names
    if len(classes) < 2:
        raise UserError(f"only one class ({', '.join(classes)}) among the labeled and validation images: a classifier "
                        "needs two or more (name the others with --classes)")
    taken = {p for p, _ in labeled} | val_paths
    pool_only = [p for p in pool if p not in taken]
    if not pool_only:
        raise UserError("every pool image is a labeled or validation image: nothing is left to pick")

    model, key, size = resolve_model(given.get("model") or auto_model(Path(pool_only[0])), given.get("layers"),
                                     given.get("image_size"))
    defaults = defaults_of(key)
    cfg = resolve_acquisition(given.get("acquisition") or DEFAULT_ACQUISITION, model)
    if cfg.acquisition == "similar" and options.get("similar_kernel", "pfk") == "pfk" and cfg.pseudo_label is None:
        raise UserError(f"--acquisition {cfg.name}: SIMILAR's Fisher kernel (--similar-kernel pfk) needs a "
                        "pseudo-label estimator, e.g. similar-phat; or give --similar-kernel cosine")
    if options.get("taps", "pre") != "pre" and not hasattr(build_model(model, 2), "tap_point"):
        raise UserError(f"--taps {options['taps']}: the taps of {model} are taken where its layers give them; "
                        "leave --taps out")
    train_s, unsup = schedules(defaults, given)
    weights = given.get("weights")
    pretrain = given.get("pretrain") or ("weights" if weights else "rotation")
    if weights and pretrain != "weights":
        raise UserError(f"--weights and --pretrain {pretrain}: weights replace the pretraining; give one of them")
    if pretrain == "weights" and not weights:
        raise UserError("--pretrain weights needs --weights FILE (or torchvision's weights name, e.g. DEFAULT)")
    if weights:                                       # weights that do not fit fail now, before anything is written
        with torch.random.fork_rng(devices=[]):
            load_weights(build_model(model, len(classes)), weights, model)
    augment = given.get("augment") or defaults.augment
    normalize = given.get("normalize") or ("imagenet" if weights and defaults.channels == 3 else "pool")
    if normalize == "imagenet" and defaults.channels != 3:
        raise UserError("--normalize imagenet is for RGB models; LeNet reads grey images")

    images = ImageList(pool_only + [p for p, _ in labeled] + [p for p, _ in val],
                       np.array(["pool"] * len(pool_only) + ["labeled"] * len(labeled) + ["val"] * len(val)),
                       [""] * len(pool_only) + [c for _, c in labeled] + [c for _, c in val])
    images.save(paths.images)
    source_name = Path(given["labeled"]).name if given.get("labeled") else ""
    save_labeled({p: Label(c, 0, source_name) for p, c in labeled}, paths.labeled)
    pixels = ImageCache(paths.cache, size, defaults.channels).load(images.paths, progress)
    if normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = channel_stats(pixels, np.flatnonzero(images.roles != "val"))
    settings = {
        "pool": _path_setting(given["pool"]), "labeled": _path_setting(given.get("labeled")),
        "val": _path_setting(given.get("val")), "val_share": None if given.get("val") else
        (DEFAULT_VAL_SHARE if given.get("val_share") is None else float(given["val_share"])),
        "classes": list(classes), "model": model if key != "torchvision" else given.get("model"),
        "layers": given.get("layers"), "image_size": size, "weights": normalized("weights", weights),
        "pretrain": pretrain, "augment": augment, "normalize": normalize, "acquisition": cfg.name,
        "epochs": train_s.epochs, "unsup_epochs": unsup.epochs, "batch_size": train_s.batch_size,
        "lr": train_s.lr, "seed": seed,
    }
    project = Project(classes=list(classes), model=model, image_size=size, channels=defaults.channels, mean=mean,
                      std=std, augment=augment, pretrain=pretrain, weights=normalized("weights", weights),
                      acquisition=cfg.name, train=train_s, unsup=unsup, seed=seed, settings=settings,
                      options=dict(options))
    project.save(paths.project)
    return project


# ----------------------------------------------------------------------------------------------------------------
# A round
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundOptions:
    """What may change from round to round."""

    budget: int = 100
    device: torch.device = torch.device("cpu")
    eval_batch: int = 500
    progress: bool = True
    ls_root: Optional[str] = None        # Label Studio's local-files document root (default: above the pool)
    ls_inline: bool = False              # embed the images in the tasks file as data: URIs
    sheet_max: int = 200                 # most picks shown on the contact sheet


@dataclass
class Workspace:
    """A project's data loaded for a round: ``data`` is the ALData every acquisition reads (see
    ``fkal.data.own_images.build_aldata``); ``candidates`` are the rows of ``split.pool``."""

    project: Project
    images: ImageList
    labeled: dict[str, Label]
    labels: np.ndarray          # [N] class index per image row, -1 unknown
    candidates: np.ndarray      # [N_c] rows that may be trained on or picked (pool and given labeled)
    val: np.ndarray             # [M] rows of D_v
    source: TensorSource
    data: object
    cfg: Config

    @property
    def labeled_pos(self) -> np.ndarray:
        return np.flatnonzero(self.labels[self.candidates] >= 0)

    @property
    def unlabeled_pos(self) -> np.ndarray:
        return np.flatnonzero(self.labels[self.candidates] < 0)

    def labeled_key(self) -> str:
        """A key of the labeled set (rows and classes): a step's saved result is reused only under the same key."""
        rows = self.candidates[self.labeled_pos]
        return hashlib.sha256(np.stack([rows, self.labels[rows]]).astype(np.int64).tobytes()).hexdigest()[:16]


def load_workspace(paths: StatePaths, project: Project, budget: int, progress: bool = True) -> Workspace:
    images = ImageList.load(paths.images)
    labeled = load_labeled(paths.labeled)
    index = {c: i for i, c in enumerate(project.classes)}
    row_of = {p: i for i, p in enumerate(images.paths)}
    labels = np.full(len(images.paths), -1, dtype=np.int64)
    val = images.rows("val")
    labels[val] = [index[images.labels[r]] for r in val]
    for p, lab in labeled.items():
        labels[row_of[p]] = index[lab.label]
    candidates = np.flatnonzero(images.roles != "val")
    pixels = ImageCache(paths.cache, project.image_size, project.channels).load(images.paths, progress)
    augment = None
    if project.augment != "none":
        augment = RandomCropFlip(max(1, project.image_size // 8), project.augment == "crop-flip", project.mean,
                                 project.std)
    source = TensorSource(torch.from_numpy(pixels), labels, project.mean, project.std, augment)
    cfg = parse_config(project.acquisition, ACQUISITIONS)
    L = cfg.L if cfg.L is not None else model_default_L(project.model)
    spec = project.spec(len(candidates), len(val), budget, L)
    data = build_aldata(spec, source, candidates, val, labels)
    return Workspace(project, images, labeled, labels, candidates, val, source, data, cfg)


def load_weights(model: torch.nn.Module, weights: str, model_name: str) -> None:
    """Copy ``weights`` (a checkpoint file, or torchvision's weights name for a torchvision architecture) into
    ``model``, all but a classifier of another size."""
    if Path(weights).is_file():
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"cannot read the weights file {weights}: {e}") from None
        if isinstance(state, dict):
            for k in ("model", "state_dict"):
                if isinstance(state.get(k), dict):
                    state = state[k]
        if isinstance(state, dict) and isinstance(state.get("models"), list):      # a round's model.pt
            state = state["models"][0]
        if not isinstance(state, dict):
            raise UserError(f"{weights} holds no state dict (a dict of parameter tensors)")
    elif model_name.startswith(TORCHVISION_PREFIX):
        import torchvision

        arch = model_name.split(":")[1]
        try:
            enum = torchvision.models.get_model_weights(arch)
            w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
        except (KeyError, ValueError):
            names = ", ".join(["DEFAULT"] + [w.name for w in torchvision.models.get_model_weights(arch)])
            raise UserError(f"--weights {weights}: no such file, nor a torchvision weights name of {arch} "
                            f"({names})") from None
        try:
            state = torchvision.models.get_model(arch, weights=w).state_dict()
        except Exception as e:
            raise UserError(f"cannot download torchvision's {arch} weights {w.name} ({e}): on a machine without "
                            "internet, save them to a file elsewhere and pass --weights FILE") from None
    else:
        raise UserError(f"--weights {weights}: no such file (torchvision's weights names are for torchvision "
                        "architectures)")
    target = getattr(model, "net", model) if model_name.startswith(TORCHVISION_PREFIX) else model
    classifier = type(model).classifier.removeprefix("net.") if target is not model else type(model).classifier
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = [k for k in state if k in own and k not in usable]
    missing = [k for k in own if k not in usable and not k.startswith(classifier + ".")
               and not k.endswith("num_batches_tracked")]
    if missing or any(not k.startswith(classifier + ".") for k in skipped):
        bad = (missing or [k for k in skipped if not k.startswith(classifier + ".")])[:3]
        raise UserError(f"--weights {weights} does not fit the model {model_name}: {', '.join(bad)} "
                        f"{'missing' if missing else 'of another shape'}; give weights of the same architecture")
    target.load_state_dict(usable, strict=False)


def ensure_initial(paths: StatePaths, ws: Workspace, member: int, device: torch.device, progress: bool) -> dict:
    """The initial model of one ensemble member (state dict), made once: rotation pretraining on the pool
    (every image that may be trained on), the given weights, or random weights."""
    target = paths.initial(member)
    if target.exists():
        return torch.load(target, map_location="cpu", weights_only=True)
    p = ws.project
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        model, seconds, _ = initial_model(
            lambda classes: build_model(p.model, classes or len(p.classes)), ws.source, ws.candidates,
            p.unsup if p.pretrain == "rotation" else None, device, derive_seed(p.seed, "init", member),
            derive_seed(p.seed, "rotation", member), generator(p.seed, "rotation-order", member),
            desc=f"rotation pretraining on {len(ws.candidates)} images" + (f" (member {member})" if member else ""),
            progress=progress)
        if p.pretrain == "weights":
            load_weights(model, p.weights, p.model)
    state = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "kind": p.pretrain,
             "seconds": seconds, "member": member}
    save_torch(state, target)
    return state


def _models(ws: Workspace, states: list[dict], wrapped: bool, device: torch.device) -> list[torch.nn.Module]:
    return models_from_states(lambda: build_model(ws.project.model, len(ws.project.classes)).to(device), states,
                              TASK_HOOKS.get(ws.cfg.acquisition), ws.data.spec, device, wrapped,
                              f"the project's {ws.project.model} model")


def _load(path: Path) -> Optional[dict]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
    except Exception:
        return None                      # a damaged file (it cannot be: files are renamed whole) is made again


def next_round(paths: StatePaths, labeled: dict[str, Label]) -> int:
    """The round ``select`` makes: the last complete round + 1, once the last round's annotations are merged."""
    done = paths.complete_rounds()
    last = done[-1] if done else 0
    if last and not any(lab.round == last for lab in labeled.values()):
        raise UserError(f"round {last} waits for its annotations: label the images of {paths.to_label(last)}, then "
                        f"python label_next.py merge --state {paths.root} FILE (a CSV path,label or a Label Studio "
                        "JSON export), then select again")
    return last + 1


def select_round(paths: StatePaths, project: Project, opts: RoundOptions) -> dict:
    """Make (or resume) the next round; returns its record (``round.json``)."""
    t_start = time.perf_counter()
    labeled = load_labeled(paths.labeled)
    n = next_round(paths, labeled)
    ws = load_workspace(paths, project, opts.budget, opts.progress)
    unlabeled = ws.unlabeled_pos
    if len(unlabeled) == 0:
        raise UserError("every pool image is labeled: there is nothing left to pick")
    if opts.budget < 1:
        raise UserError(f"--budget {opts.budget}: ask for at least one image")
    budget = min(opts.budget, len(unlabeled))
    key = ws.labeled_key()
    device, seed, cfg = opts.device, project.seed, ws.cfg
    cuda = [device.index or 0] if device.type == "cuda" else []
    seconds = {"pretrain": 0.0, "train": 0.0, "query": 0.0}

    # 1-2. the models of this round: the previous round's (or the initial ones) trained on the labeled set
    saved = _load(paths.model(n))
    if saved is not None and saved.get("key") == key:
        models = _models(ws, saved["models"], True, device)
        seconds["train"] = saved.get("train_seconds", 0.0)
    else:
        if n == 1:
            states = [ensure_initial(paths, ws, e, device, opts.progress) for e in range(cfg.E)]
            seconds["pretrain"] = sum(s.get("seconds", 0.0) for s in states)
            models = _models(ws, [s["model"] for s in states], False, device)
        else:
            previous = torch.load(paths.model(n - 1), map_location="cpu", weights_only=True)
            models = _models(ws, previous["models"], True, device)
        lab = ws.labeled_pos
        hooks = TASK_HOOKS.get(cfg.acquisition)
        extra = hooks.extra_loss(dict(project.options), ws.data.spec) if hooks is not None else None
        if len(lab):
            rows = ws.candidates[lab]
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(derive_seed(seed, "round", n))
                for e, m in enumerate(models):
                    seconds["train"] += train(
                        m, ws.source, rows, ws.labels[rows], project.train, device, generator(seed, "train", n, e),
                        extra_loss=extra, progress=opts.progress,
                        desc=f"round {n}: training on {len(rows)} labeled images" + (f" (member {e})" if e else ""))
        save_torch({"models": [{k: v.cpu() for k, v in m.state_dict().items()} for m in models], "key": key,
                    "train_seconds": seconds["train"], "labeled": int(len(lab))}, paths.model(n))

    # 3. the query
    picks = _read_picks(paths.picks(n))
    meta = {"key": key, "budget": budget, "acquisition": cfg.name}
    if picks is None or picks["meta"] != meta:
        def initial() -> torch.nn.Module:        # the project's initial model (rotation-pretrained by default)
            return _models(ws, [ensure_initial(paths, ws, 0, device, opts.progress)["model"]], False, device)[0]

        ctx = QueryContext(models=models, data=ws.data, labeled=ws.labeled_pos, unlabeled=unlabeled, budget=budget,
                           generator=generator(seed, "query", n), device=device, config=cfg, iteration=n,
                           batch_size=opts.eval_batch, progress=opts.progress, options=dict(project.options),
                           pretrained=initial)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(derive_seed(seed, "query-rng", n))
            result = registry.query(ctx)
        query_seconds = time.perf_counter() - t0
        picked = np.asarray(result.indices, dtype=np.int64)
        if len(picked) != budget or len(np.unique(picked)) != budget or ws.labels[ws.candidates[picked]].max() >= 0:
            raise RuntimeError(f"{cfg.name} returned {len(picked)} positions ({len(np.unique(picked))} distinct) for "
                               f"a budget of {budget}, or labeled ones")
        rows = ws.candidates[picked]
        probs = torch.stack([predict(m, ws.source, rows, device, opts.eval_batch) for m in models]).mean(0)  # [P, C]
        prob, pseudo = probs.max(1)
        picks = {"positions": picked, "rows": rows, "pseudo": pseudo.numpy(), "probability": prob.numpy(),
                 "scores": None if result.scores is None else np.asarray(result.scores, dtype=np.float64),
                 "meta": meta, "query_seconds": query_seconds,
                 "pseudo_label_accuracy": result.pseudo_label_accuracy}
        _save_picks(picks, paths.picks(n))
    seconds["query"] = picks["query_seconds"]

    # 4. the files for the annotators
    t0 = time.perf_counter()
    classes = project.classes
    sel = [ws.images.paths[r] for r in picks["rows"]]
    names = [classes[i] for i in picks["pseudo"]]
    save_text(outputs.to_label_csv(sel, picks["scores"], names, picks["probability"]), paths.to_label(n))
    pool_paths = [ws.images.paths[r] for r in ws.images.rows("pool")]
    # Label Studio serves a file below its document root only through a "Local files" storage whose folder is
    # strictly below that root: the pool's folder is the storage, its parent the default root
    storage = os.path.commonpath([str(Path(p).parent) for p in pool_paths])
    root = opts.ls_root or os.path.dirname(storage)
    if not opts.ls_inline:
        outside = [p for p in sel if not _below(p, root)]
        if outside:
            raise UserError(f"{outside[0]} is not below --ls-root {root}: give a folder that holds every pool image")
    tasks = outputs.label_studio_tasks(sel, names, picks["probability"], n, f"{cfg.name} round {n}", root,
                                       opts.ls_inline)
    save_text(json.dumps(tasks, indent=1), paths.tasks(n))
    save_text(outputs.label_studio_config(classes), paths.ls_config(n))
    shown = min(len(sel), max(1, opts.sheet_max))
    title = f"round {n}: {len(sel)} images to label, picked by {cfg.name}" + \
            (f" (the first {shown})" if shown < len(sel) else "") + "; caption: #rank: pseudo-label (probability)"
    pixels = ws.source.images[torch.as_tensor(picks["rows"][:shown])].numpy()
    sheet = outputs.contact_sheet(pixels, [f"#{i + 1}: {names[i]} ({picks['probability'][i]:.2f})"
                                           for i in range(shown)], title)
    with atomic_path(paths.sheet(n)) as tmp:
        sheet.save(tmp, format="PNG")
    seconds["files"] = time.perf_counter() - t0
    seconds["round"] = time.perf_counter() - t_start
    record = {
        "round": n, "acquisition": cfg.name, "budget": budget, "labeled": int(len(ws.labeled_pos)),
        "unlabeled": int(len(unlabeled)), "validation": int(len(ws.val)), "model": project.model,
        "pseudo_label_counts": {c: int((picks["pseudo"] == i).sum()) for i, c in enumerate(classes)},
        "pseudo_label_accuracy": picks["pseudo_label_accuracy"], "seconds": seconds,
        "label_studio_root": None if opts.ls_inline else root,
        "label_studio_storage": None if opts.ls_inline or not _below(storage, root) else storage,
        "device": str(device), "cuda": cuda_settings(device),
    }
    save_json(record, paths.record(n))
    return record


def _below(path: str, root: str) -> bool:
    """Whether ``path`` lies strictly below ``root``."""
    return os.path.normpath(path) != os.path.normpath(root) and \
        os.path.commonpath([path, root]) == os.path.normpath(root)


def _save_picks(picks: dict, path: Path) -> None:
    meta = json.dumps({"meta": picks["meta"], "query_seconds": picks["query_seconds"],
                       "pseudo_label_accuracy": picks["pseudo_label_accuracy"],
                       "has_scores": picks["scores"] is not None})
    scores = picks["scores"] if picks["scores"] is not None else np.zeros(len(picks["rows"]))
    save_npz(path, positions=picks["positions"], rows=picks["rows"], pseudo=picks["pseudo"],
             probability=picks["probability"], scores=scores, info=np.array(meta))


def _read_picks(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    with np.load(path) as f:
        info = json.loads(str(f["info"]))
        return {"positions": f["positions"], "rows": f["rows"], "pseudo": f["pseudo"],
                "probability": f["probability"], "scores": f["scores"] if info["has_scores"] else None,
                "meta": info["meta"], "query_seconds": info["query_seconds"],
                "pseudo_label_accuracy": info["pseudo_label_accuracy"]}


# ----------------------------------------------------------------------------------------------------------------
# Annotations back
# ----------------------------------------------------------------------------------------------------------------
def merge(paths: StatePaths, project: Project, file: str | Path) -> dict:
    """Merge an annotations file into the labeled set (all of it, or nothing on the first bad line); the labels
    belong to the last complete round."""
    done = paths.complete_rounds()
    if not done:
        raise UserError(f"{paths.root} has no round yet: run python label_next.py select --state {paths.root} first")
    n = done[-1]
    images = ImageList.load(paths.images)
    labeled = load_labeled(paths.labeled)
    anns = read_annotations(file)
    pool_rows = {images.paths[r]: int(r) for r in images.rows("pool")}
    others = {images.paths[r]: str(images.roles[r]) for r in np.flatnonzero(images.roles != "pool")}
    pairs = check(anns.items, project.classes, pool_rows, others, {p: lab.round for p, lab in labeled.items()})
    picks = _read_picks(paths.picks(n))
    picked = set(picks["rows"].tolist()) if picks is not None else set()
    updated = dict(labeled)
    for row, c in pairs:
        updated[images.paths[row]] = Label(project.classes[c], n, Path(file).name)
    save_labeled(updated, paths.labeled)
    in_round = sum(row in picked for row, _ in pairs)
    return {"round": n, "merged": len(pairs), "of_picks": in_round, "picks": len(picked),
            "outside_picks": len(pairs) - in_round, "skipped": anns.skipped, "labeled": len(updated)}
