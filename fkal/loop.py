"""The experiment: initial models (``run.py --initial``) and the active-learning iterations of each
configuration, with one results record per completed iteration and resume from the first missing one.

The state of a configuration's run is its models and ``labeled_at`` ([N] int: the iteration at which each pool
position was labeled, -1 if never); both are saved after every iteration, before its record is appended.

Every file a run writes carries the settings that made it (``fkal.settings``): the split, each initial model, each
configuration's folder (``settings.json``) and every record. A resumed run reuses only what was made with the same
settings; otherwise it stops with one line naming the differences and the way out. One process at a time works
on a configuration of a run (a lock per configuration state); different configurations run side by side.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed as D
from . import protocols
from . import settings as settings_mod
from .acquisitions.contract import QueryContext, QueryResult, TaskHooks
from .acquisitions.registry import ACQUISITION_OPTIONS, ACQUISITIONS, ATTACHED_HOOKS, ATTACHED_OPTIONS, TASK_HOOKS
from .config import Config
from .data import ALData, DatasetSpec, RawData, Schedule, Split, make_split
from .device import cuda_settings
from .errors import UserError
from .io import append_jsonl, exclusive, load_torch, remove_temporaries, save_json, save_torch
from .metrics import class_scores, imbalance_metrics, pseudo_label_rare_scores
from .models import build_model, copy_all_but_classifier
from .reporting.records import parse_record
from .training import KeepBestEpoch, accuracy, predict, rotation_accuracy, train, train_rotation


# ----------------------------------------------------------------------------------------------------------------
# Paths: the one place that names files
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPaths:
    root: Path          # {out}/{DATASET}/run{r}

    @classmethod
    def of(cls, out: str | Path, spec: DatasetSpec, run: int) -> "RunPaths":
        return cls(Path(out) / spec.folder / f"run{run}")

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    def ir(self, imbalance_ratio: float) -> Path:
        return self.root / f"ir{imbalance_ratio:g}"

    def split(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / "split.npz"

    def initial(self, imbalance_ratio: float, unsupervised: int, member: int = 0) -> Path:
        kind = "rotation" if unsupervised else "random"
        return self.ir(imbalance_ratio) / f"init_{kind}{'' if member == 0 else f'_e{member}'}.pt"

    def initial_info(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / "initial.json"

    def config(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        kind = "rotation" if unsupervised else "random"
        return self.ir(imbalance_ratio) / kind / config

    def state(self, imbalance_ratio: float, unsupervised: int, config: str, iteration: int) -> Path:
        return self.config(imbalance_ratio, unsupervised, config) / f"state_b{iteration:02d}.pt"

    def config_settings(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        return self.config(imbalance_ratio, unsupervised, config) / "settings.json"

    def config_lock(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        folder = self.config(imbalance_ratio, unsupervised, config)
        return folder.parent / f".{folder.name}.lock"

    def initial_lock(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / ".initial.lock"


@dataclass(frozen=True)
class Settings:
    """Run-wide settings from the command line (protocol numbers after overrides)."""

    out: Path
    spec: DatasetSpec
    train: Schedule
    unsup: Schedule
    query_size: int
    iterations: int
    device: torch.device
    seed: Optional[int] = None       # None: seed = run index
    noise_ratio: float = 0.0
    pool_size: Optional[int] = None  # override of |D| before imbalance
    val_size: Optional[int] = None
    eval_batch: int = 1000
    progress: bool = True
    options: tuple = ()              # (key, value) pairs of the command line, passed to acquisitions
    epoch_selection: str = "final"   # "final": the last epoch's model; "val": the epoch best on D_v
    fresh: tuple[str, ...] = ()      # configurations to start afresh when their folder holds other settings
    # fkal.protocols (TA-VAAL's benchmark); the defaults are the Fisher-kernel protocol's
    protocol: str = "fk"             # the protocol whose defaults the command line filled in
    initial_labels: int = 0          # >0: iteration 1 labels this many random pool images (same for every config)
    subset_size: protocols.SubsetSize = None   # acquisitions select from a random unlabeled subset of this size
    model_per_cycle: str = "warm"    # "fresh": every iteration trains from the run's initial model
    loss_module_all: int = 0         # 1: every acquisition's task model carries the loss-prediction module
    crop_padding: Optional[int] = None  # recorded override of the loader's crop augmentation

    def seed_of(self, run: int) -> int:
        return run if self.seed is None else self.seed

    def train_size(self) -> int:
        return self.spec.pool_size if self.pool_size is None else self.pool_size

    def val_size_or_default(self) -> int:
        return self.spec.val_size if self.val_size is None else self.val_size


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from a base seed and keys (strings or ints), stable across processes."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence([seed, *ints]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(seed: int, *keys) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


# ----------------------------------------------------------------------------------------------------------------
# Settings of the split, the initial models and a configuration (fkal.settings)
# ----------------------------------------------------------------------------------------------------------------
def split_settings(s: Settings, raw: RawData, run: int, ir: float) -> dict:
    return settings_mod.split_settings(s.spec, raw.fingerprint(), s.seed_of(run), ir, s.noise_ratio, s.train_size(),
                                       s.val_size_or_default())


def initial_settings(s: Settings, raw: RawData, run: int, ir: float, unsupervised: int) -> dict:
    return settings_mod.initial_settings(split_settings(s, raw, run, ir), s.spec.model,
                                         s.unsup if unsupervised else None)


def config_settings(s: Settings, raw: RawData, cfg: Config, run: int, ir: float, unsupervised: int) -> dict:
    options = dict(s.options)
    dests = ACQUISITION_OPTIONS.get(cfg.acquisition, ()) + (ATTACHED_OPTIONS if _attached(s, cfg.acquisition) else ())
    return settings_mod.config_settings(
        initial_settings(s, raw, run, ir, unsupervised), cfg.name, unsupervised, s.train, s.query_size,
        s.epoch_selection, {d: options.get(d) for d in dests},
        s.device.type, taps=options.get("taps", "pre"), standardize=options.get("standardize", "unit"),
        world_size=D.world(), cuda=cuda_settings(s.device),
        **({"eval_batch": s.eval_batch} if _batch_seeded(cfg) else {}), **protocol_settings(s))


def _batch_seeded(cfg: Config) -> bool:
    """Whether a configuration's picks depend on ``--eval-batch``: its random draws (MC-dropout masks, the Monte
    Carlo estimators' perturbations) are seeded per batch of the pool."""
    return cfg.acquisition in ("varR", "entropy", "bald", "std") or cfg.pseudo_label in ("trC", "mi", "mi-diag")


def protocol_settings(s: Settings) -> dict:
    """The settings ``fkal.protocols`` adds (``fkal.settings.ADDED_LATER`` holds their earlier values)."""
    return {"protocol": s.protocol, "initial_labels": s.initial_labels, "subset_size": s.subset_size,
            "model_per_cycle": s.model_per_cycle, "loss_module_all": s.loss_module_all,
            "crop_padding": s.crop_padding}


def _attached(s: Settings, acquisition: Optional[str]) -> bool:
    """True where ``--loss-module-all`` gives an acquisition without task hooks of its own the loss module (never
    for ``acquisition`` None: a plain model, e.g. an initial one)."""
    return bool(s.loss_module_all) and acquisition is not None and acquisition not in TASK_HOOKS


def hooks_for(s: Settings, acquisition: Optional[str]) -> Optional[TaskHooks]:
    """The task hooks of an acquisition: its own, or with ``--loss-module-all`` the attached loss module's."""
    return ATTACHED_HOOKS if _attached(s, acquisition) else TASK_HOOKS.get(acquisition)


def _check_same(stored: Optional[dict], current: dict, what: Path, fix: str) -> None:
    """One ``UserError`` naming the differing settings of ``what`` and ``fix``; nothing when they agree (or when
    ``stored`` is None: a file written before settings were recorded)."""
    if stored is None:
        return
    diffs = settings_mod.differences(stored, current)
    if diffs:
        raise UserError(f"{what} was made with other settings ({settings_mod.describe(diffs)}): {fix}")


_OTHER_OUT = "use another --out, or the settings it was made with"


# ----------------------------------------------------------------------------------------------------------------
# Initial models (b = 0)
# ----------------------------------------------------------------------------------------------------------------
def ensure_split(s: Settings, raw: RawData, run: int, ir: float, query_budget: Optional[int] = None) -> Split:
    """The run's split, made and saved when missing. ``query_budget`` (P x B) is checked against the pool before
    anything is written. A split made with other settings ends with one clear error. Under several processes
    rank 0 reads or makes it and hands it to the others."""
    return D.on_main(_ensure_split, s, raw, run, ir, query_budget)


def _ensure_split(s: Settings, raw: RawData, run: int, ir: float, query_budget: Optional[int]) -> Split:
    paths = RunPaths.of(s.out, s.spec, run)
    path = paths.split(ir)
    _remove_temporaries(paths, ir)
    current = split_settings(s, raw, run, ir)
    if path.exists():
        split = Split.load(path, raw)
        _check_same(split.settings, current, path, f"{_OTHER_OUT} (the split serves every configuration of run{run})")
    else:
        split = make_split(s.spec, raw, s.seed_of(run), ir, s.noise_ratio, s.pool_size, s.val_size)
        split.settings = current
    if query_budget is not None and query_budget > len(split.pool):
        raise UserError(f"{s.iterations} iterations of {s.query_size} images"
                        f"{f' (the first {s.initial_labels})' if s.initial_labels else ''} need {query_budget} pool "
                        f"images, but the pool of run{run} at IR={ir:g} holds {len(split.pool)}: lower --pool-size or "
                        "--iterations (or raise --train-size)")
    if not path.exists():
        with exclusive(paths.initial_lock(ir), f"run{run} IR={ir:g} initial models", wait=True):
            if path.exists():                              # made by another process while this one waited
                return _ensure_split(s, raw, run, ir, query_budget)
            split.save(path)
    return split


def _remove_temporaries(paths: RunPaths, ir: float) -> None:
    """Remove the temporary files that a process killed while writing the split or an initial model left in the
    IR folder, when no other process is writing there (it holds the lock of the initial models)."""
    folder = paths.ir(ir)
    if not any(folder.glob(".*.tmp")):
        return
    try:
        with exclusive(paths.initial_lock(ir), "the initial models"):
            remove_temporaries(folder)
    except UserError:                                      # being written right now: left for a later run
        pass


def new_model(s: Settings, num_classes: Optional[int] = None) -> torch.nn.Module:
    return build_model(s.spec.model, num_classes or s.spec.num_classes).to(s.device)


def ensure_initial(s: Settings, data: ALData, run: int, unsupervised: int, member: int = 0) -> Path:
    """The random-weights or rotation-pretrained initial model of one ensemble member; skipped when present (and
    made with the same settings).

    Both share the random classifier layer: the rotation model is trained from its own random start on the whole
    unlabeled pool, then every layer but the last is copied into the random-weights model. A second process that
    needs the same initial models waits for the first to finish them.
    """
    paths = RunPaths.of(s.out, s.spec, run)
    ir = data.split.imbalance_ratio
    target = paths.initial(ir, unsupervised, member)
    if D.on_main(target.exists):
        return target
    lock = exclusive(paths.initial_lock(ir), f"run{run} IR={ir:g} initial models", wait=True)
    with lock if D.is_main() else contextlib.nullcontext():
        if D.on_main(target.exists):                       # made by another process while this one waited
            return target
        seed = s.seed_of(run)
        torch.manual_seed(derive_seed(seed, "init", member))
        model = new_model(s)
        if unsupervised:
            torch.manual_seed(derive_seed(seed, "rotation", member))
            rot = new_model(s, num_classes=4)
            seconds = train_rotation(rot, data.pool_source, data.split.pool, s.unsup, s.device,
                                     generator(seed, "rotation-order", member),
                                     desc=f"run{run} IR={ir:g} rotation pretraining e{member}", progress=s.progress)
            acc = rotation_accuracy(rot, data.raw.test, np.arange(len(data.raw.test)), s.device, s.eval_batch)
            copy_all_but_classifier(rot, model)
            if D.is_main():
                info_path = paths.initial_info(ir)
                info = read_json(info_path)
                info[f"rotation_e{member}"] = {"rotation_test_accuracy": acc, "seconds": seconds,
                                               "epochs": s.unsup.epochs, "pool": int(len(data.split.pool))}
                save_json(info, info_path)
                tqdm.write(f"run{run} IR={ir:g} member {member}: rotation-task test accuracy {acc:.2f}% "
                           f"({seconds:.0f} s)")
        if D.is_main():
            save_torch({"model": model.state_dict(), "seed": seed, "member": member, "unsupervised": unsupervised,
                        "settings": initial_settings(s, data.raw, run, ir, unsupervised)}, target)
        D.barrier()
    return target


_REMAKE_INITIAL = "delete it and run the same command again: the initial model is made anew from the run's seed"


def load_initial(s: Settings, data: ALData, run: int, unsupervised: int, member: int = 0) -> dict:
    """The state dict of an initial model (made first when missing), checked to be made with these settings."""
    path = ensure_initial(s, data, run, unsupervised, member)
    current = initial_settings(s, data.raw, run, data.split.imbalance_ratio, unsupervised)

    def read() -> dict:
        state = load_torch(path, _REMAKE_INITIAL)
        if not (isinstance(state, dict) and isinstance(state.get("model"), dict)):
            raise UserError(f"{path} is not an initial model that run.py wrote: {_REMAKE_INITIAL}")
        _check_same(state.get("settings"), current, path, f"{_OTHER_OUT} (the initial models serve every "
                                                          f"configuration of run{run})")
        return state["model"]
    return D.on_main(read)


def load_state(path: Path, pool_size: int, fix: str, settings_id: Optional[str] = None,
               members: Optional[int] = None) -> dict:
    """An iteration state ``{"models": [E state dicts], "labeled_at": [N] int64, "iteration", "settings_id"}``
    checked before use: its shape, the pool it indexes (``pool_size``), and with ``settings_id`` / ``members``
    the configuration that made it (a state copied from another configuration's folder is refused)."""
    state = load_torch(path, fix)
    models = state.get("models") if isinstance(state, dict) else None
    labeled_at = state.get("labeled_at") if isinstance(state, dict) else None
    if not (isinstance(models, list) and models and all(isinstance(m, dict) for m in models)
            and isinstance(labeled_at, torch.Tensor) and labeled_at.dim() == 1
            and not labeled_at.is_floating_point()):
        raise UserError(f"{path} is not an iteration state that run.py wrote: {fix}")
    stored = state.get("settings_id")
    if settings_id is not None and stored is not None and stored != settings_id:
        raise UserError(f"{path} was made by another configuration or with other settings (settings {stored}, this "
                        f"configuration's are {settings_id}): {fix}")
    if len(labeled_at) != pool_size:
        raise UserError(f"{path} holds the selections of a pool of {len(labeled_at)} images, this run's pool has "
                        f"{pool_size}: {fix}")
    if members is not None and len(models) != members:
        raise UserError(f"{path} holds {len(models)} models where the configuration has {members}: {fix}")
    return state


def read_json(path: Path) -> dict:
    """The JSON object in ``path`` ({} when there is no such file); anything else is one ``UserError``."""
    fix = "delete it and run the same command again"
    try:
        value = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        raise UserError(f"cannot read {path}: it is not valid JSON; {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    if not isinstance(value, dict):
        raise UserError(f"cannot read {path}: it holds JSON but not a JSON object; {fix}")
    return value


def run_initial(s: Settings, raw: RawData, run: int, ir: float, members: int = 1) -> None:
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    for member in range(members):
        for unsupervised in (0, 1):
            load_initial(s, data, run, unsupervised, member)


# ----------------------------------------------------------------------------------------------------------------
# Active learning iterations
# ----------------------------------------------------------------------------------------------------------------
_warned: set[str] = set()


def read_results(results: Path) -> list[dict]:
    """The records of a results file that ``run_plot.py`` would use too (``fkal.reporting.parse_record``: JSON
    objects with every field of a record); every other line is reported once per process (file and line named)."""
    if results.exists() and not results.is_file():
        raise UserError(f"{results} is not a file: run.py keeps its results there; move it away, or use another "
                        "--out")
    try:
        lines = results.read_text(encoding="utf-8", errors="replace").splitlines() if results.exists() else []
    except OSError as e:
        raise UserError(f"cannot read {results}: {e.strerror or e}; make it readable, or use another --out") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record, problem = parse_record(line)
        if record is not None:
            records.append(record)
            continue
        warning = f"{results}:{number}: skipped a broken line ({problem})"
        if warning not in _warned:
            _warned.add(warning)
            tqdm.write(f"warning: {warning}", file=sys.stderr)
    return records


def completed_iterations(results: Path, dataset: str, config: str, ir: float, unsupervised: int,
                         settings_id: Optional[str] = None) -> dict[int, dict]:
    """``{iteration: record}`` of one configuration; with ``settings_id`` only the records made with it."""
    return {r["iteration"]: r for r in read_results(results)
            if r.get("config") == config and r.get("dataset") == dataset and r.get("imbalance_ratio") == ir
            and r.get("unsupervised") == unsupervised
            and (settings_id is None or r.get("settings_id") == settings_id)}


def load_models(s: Settings, states: list[dict], acquisition: Optional[str] = None,
                wrapped: bool = False, origin: Optional[Path] = None, fix: str = "") -> list[torch.nn.Module]:
    """Models from state dicts; ``wrapped`` states were saved with the acquisition's task hooks applied,
    plain ones (initial models) get the hooks applied after loading. Weights that do not fit the model are a
    ``UserError`` naming ``origin`` (the file they came from) and ``fix``."""
    hooks = hooks_for(s, acquisition)
    models = []
    for st in states:
        m = new_model(s)
        if hooks is not None and wrapped:
            m = hooks.wrap(m, s.spec).to(s.device)
        try:
            m.load_state_dict(st)
        except (RuntimeError, TypeError, KeyError, AttributeError):
            raise UserError(f"{origin or 'a saved model'} does not fit the {s.spec.model} model"
                            f"{f' of {acquisition}' if acquisition else ''} ({_misfit(m, st)})"
                            f"{': ' + fix if fix else ''}") from None
        if hooks is not None and not wrapped:
            m = hooks.wrap(m, s.spec).to(s.device)
        models.append(m.eval())
    return models


def _misfit(model: torch.nn.Module, state: object) -> str:
    """Why ``state`` does not load into ``model``, in a few words: the weights it lacks, those it has beyond the
    model's, those of another shape (a few of each named)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict of weights"
    want = model.state_dict()

    def few(names: list) -> str:
        return ", ".join(map(str, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shape = [k for k in want if k in state and getattr(state[k], "shape", None) != want[k].shape]
    parts = ([f"lacks {few(missing)}"] if missing else []) + ([f"has {few(extra)} besides"] if extra else []) + \
        ([f"{few(shape)} of another shape"] if shape else [])
    return "; ".join(parts) or "its weights do not load"


def _config_folder_ready(s: Settings, paths: RunPaths, cfg: Config, ir: float, unsupervised: int,
                         current: dict) -> None:
    """Check the configuration's folder against ``current`` settings; with ``--fresh`` a folder made with other
    settings is moved aside (``{config}.replaced-{its settings id}``, nothing deleted) and the configuration starts
    afresh. Writes nothing else: ``settings.json`` is written with the first state (``_iterate``), so that a run
    that fails before its first iteration leaves no folder behind, and a ``settings.json`` beside no state binds
    nothing."""
    folder = paths.config(ir, unsupervised, cfg.name)
    remove_temporaries(folder)                             # left by a process killed while writing here
    if not any(folder.glob("state_b*.pt")):
        return
    settings_path = paths.config_settings(ir, unsupervised, cfg.name)
    stored = read_json(settings_path).get("settings") if settings_path.exists() else None
    if stored is None:
        stored = {"recorded": "nothing (made before settings were recorded)"}
    if settings_mod.differences(stored, current):
        if cfg.name in s.fresh:
            old = folder.with_name(f"{folder.name}.replaced-{settings_mod.settings_id(stored)}")
            folder.rename(old)
            tqdm.write(f"{folder} held other settings: moved to {old.name}; {cfg.name} starts afresh "
                       "(its earlier records stay in results.jsonl under their settings)")
        else:
            _check_same(stored, current, folder,
                        f"{_OTHER_OUT}, or add --fresh {cfg.name} to start that configuration afresh (the old "
                        "folder is kept beside it)")


def _resume_point(paths: RunPaths, cfg: Config, ir: float, unsupervised: int, done: dict[int, dict],
                  iterations: int) -> int:
    """The last iteration to continue from: the longest run of completed iterations 1..b whose state is on disk
    (a state deleted because it was damaged sends the run back to the one before it)."""
    last = max((b for b in range(1, iterations + 1) if all(i in done for i in range(1, b + 1))), default=0)
    while last > 0 and not paths.state(ir, unsupervised, cfg.name, last).exists():
        last -= 1
    return last


def run_config(s: Settings, raw: RawData, cfg: Config, run: int, ir: float, unsupervised: int) -> list[dict]:
    """B iterations of one configuration on one run; resumes at the first missing iteration."""
    if cfg.acquisition not in ACQUISITIONS:
        raise UserError(f"configuration {cfg.name}: acquisition '{cfg.acquisition}' is not available")
    paths = RunPaths.of(s.out, s.spec, run)
    split = ensure_split(s, raw, run, ir,
                         query_budget=protocols.labels_needed(s.initial_labels, s.query_size, s.iterations))
    data = ALData(s.spec, raw, split)
    current = config_settings(s, raw, cfg, run, ir, unsupervised)
    sid = settings_mod.settings_id(current)
    with contextlib.ExitStack() as held:

        def prepare():           # on rank 0: the lock (held until the configuration is done), the folder, resume
            held.enter_context(exclusive(paths.config_lock(ir, unsupervised, cfg.name),
                                         f"{cfg.name} of run{run} at IR={ir:g}"))
            _config_folder_ready(s, paths, cfg, ir, unsupervised, current)
            done = completed_iterations(paths.results, s.spec.name, cfg.name, float(ir), unsupervised, sid)
            return done, _resume_point(paths, cfg, ir, unsupervised, done, s.iterations)
        done, last = D.on_main(prepare)
        if last >= s.iterations:
            return [done[b] for b in range(1, s.iterations + 1)]
        return _iterate(s, data, cfg, run, ir, unsupervised, current, sid, done, last)


def _iterate(s: Settings, data: ALData, cfg: Config, run: int, ir: float, unsupervised: int, current: dict,
             sid: str, done: dict[int, dict], last: int) -> list[dict]:
    paths = RunPaths.of(s.out, s.spec, run)
    raw, split, seed = data.raw, data.split, s.seed_of(run)
    fix = (f"delete it and run the same command again: {cfg.name} then resumes from the iteration before it")
    if last > 0:
        path = paths.state(ir, unsupervised, cfg.name, last)
        state = D.on_main(load_state, path, len(split.pool), fix, sid, cfg.E)
        with D.agreed():
            models = load_models(s, state["models"], cfg.acquisition, wrapped=True, origin=path, fix=fix)
        labeled_at = state["labeled_at"].numpy().astype(np.int64)
    else:
        models = _initial_models(s, data, cfg, run, ir, unsupervised)
        labeled_at = np.full(len(split.pool), -1, dtype=np.int64)

    def pretrained() -> torch.nn.Module:     # the run's rotation-pretrained initial model, for ctx.pretrained
        return load_models(s, [load_initial(s, data, run, 1)])[0]

    hooks = hooks_for(s, cfg.acquisition)
    extra_loss = hooks.extra_loss(dict(s.options), s.spec) if hooks is not None else None
    records = [done[b] for b in range(1, last + 1)]
    test_idx = np.arange(len(raw.test))
    val_idx = split.val
    bar = tqdm(range(last + 1, s.iterations + 1), desc=f"run{run} IR={ir:g} {'rot' if unsupervised else 'rnd'} "
               f"{cfg.name}", leave=True, disable=not s.progress)
    for b in bar:
        torch.manual_seed(derive_seed(seed, "iteration", b, cfg.name))
        picked, result, query_seconds, unlabeled = _select(s, data, cfg, models, labeled_at, b, seed, pretrained)
        labeled_at[picked] = b
        labeled = np.flatnonzero(labeled_at >= 0)
        if s.model_per_cycle == "fresh":
            models = _initial_models(s, data, cfg, run, ir, unsupervised)
        train_seconds, final_probs, chosen, val_accs = 0.0, [], [], []
        for e, m in enumerate(models):
            keeper = KeepBestEpoch(m, lambda model: _accuracy(s, model, data.val_source, val_idx, data.val_labels))
            train_seconds += train(m, data.pool_source, split.pool[labeled], split.pool_labels[labeled], s.train,
                                   s.device, generator(seed, "train", b, e), extra_loss=extra_loss,
                                   desc=f"train b={b} e{e}", progress=s.progress,
                                   on_epoch_end=keeper if s.epoch_selection == "val" else None)
            if s.epoch_selection == "val":
                final_probs.append(predict(m, raw.test, test_idx, s.device, s.eval_batch))
                keeper.restore()
                chosen.append(keeper.best_epoch)
                val_accs.append(keeper.best_score)
            else:
                chosen.append(s.train.epochs)
                val_accs.append(_accuracy(s, m, data.val_source, val_idx, data.val_labels))
        probs = [predict(m, raw.test, test_idx, s.device, s.eval_batch) for m in models]
        final_probs = final_probs or probs
        record = _record(s, data, cfg, run, ir, unsupervised, b, labeled, picked, probs, final_probs, chosen, val_accs,
                         result, unlabeled, query_seconds, train_seconds, current, sid)
        if D.is_main():
            if b == 1:                                     # a new folder: the settings its states are made with
                save_json({"settings": current, "settings_id": sid},
                          paths.config_settings(ir, unsupervised, cfg.name))
            save_torch({"models": [m.state_dict() for m in models], "labeled_at": torch.from_numpy(labeled_at),
                        "iteration": b, "settings_id": sid},
                       paths.state(ir, unsupervised, cfg.name, b))
            if append_jsonl(record, paths.results):
                tqdm.write(f"warning: {paths.results}: its last line was cut short (a crash while writing); it is "
                           "kept as it was and skipped when read, and the new record follows on a line of its own",
                           file=sys.stderr)
        D.barrier()
        records.append(record)
        bar.set_postfix(acc=f"{record['test_accuracy']:.2f}", labeled=record["labeled"])
    return records


def _select(s: Settings, data: ALData, cfg: Config, models: list, labeled_at: np.ndarray, b: int,
            seed: int, pretrained=None) -> tuple[np.ndarray, QueryResult, float, np.ndarray]:
    """Iteration b's picks ``[budget]`` (pool positions), the query result, its seconds, and the unlabeled
    positions it chose from. ``pretrained``: the run's rotation-pretrained model on demand (``ctx.pretrained``).

    With ``--initial-labels`` iteration 1 draws that many pool images at random, the same for every configuration
    of a run (the TA-VAAL protocol's initial labeled set). Otherwise the acquisition queries the unlabeled pool,
    or with ``--subset-size`` a random subset of it drawn anew each iteration (the same draw for every
    configuration whose unlabeled pool is the same). The picks are checked: distinct, unlabeled, offered.
    """
    labeled, unlabeled = np.flatnonzero(labeled_at >= 0), np.flatnonzero(labeled_at < 0)
    budget = protocols.iteration_budget(s.initial_labels, s.query_size, b)
    _sync(s.device)
    t0 = time.perf_counter()
    if b == 1 and s.initial_labels:
        offered = unlabeled
        result = QueryResult(protocols.initial_draw(unlabeled, budget, generator(seed, "initial-labels")))
    else:
        offered = protocols.candidate_subset(unlabeled, protocols.subset_count(s.subset_size, budget),
                                             generator(seed, "subset", b))
        query_models = [getattr(m, "backbone", m) for m in models] if _attached(s, cfg.acquisition) else models
        ctx = QueryContext(models=query_models, data=data, labeled=labeled, unlabeled=offered, budget=budget,
                           generator=generator(seed, "query", b), device=s.device, config=cfg, iteration=b,
                           batch_size=s.eval_batch, progress=s.progress, options=dict(s.options),
                           pretrained=pretrained)
        result = ACQUISITIONS[cfg.acquisition](ctx)
    _sync(s.device)
    query_seconds = time.perf_counter() - t0
    picked = np.asarray(D.broadcast_object(np.asarray(result.indices)))         # rank 0's picks, on every rank
    bad = (labeled_at[picked] >= 0) | ~np.isin(picked, offered)
    if len(picked) != budget or len(np.unique(picked)) != budget or bad.any():
        raise RuntimeError(f"{cfg.name} returned {len(picked)} positions ({len(np.unique(picked))} distinct, "
                           f"{int(bad.sum())} already labeled or not offered) for a budget of {budget}")
    return picked, result, query_seconds, offered


def _initial_models(s: Settings, data: ALData, cfg: Config, run: int, ir: float,
                    unsupervised: int) -> list[torch.nn.Module]:
    """The E initial models of the run, with the configuration's hooks (also each cycle's fresh model under
    ``--model-per-cycle fresh``)."""
    models = []
    for e in range(cfg.E):
        initial = load_initial(s, data, run, unsupervised, e)
        with D.agreed():
            models += load_models(s, [initial], cfg.acquisition,
                                  origin=RunPaths.of(s.out, s.spec, run).initial(ir, unsupervised, e), fix=_REMAKE_INITIAL)
    return models


def _accuracy(s: Settings, model: torch.nn.Module, source, idx: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (%) of ``model`` on ``source[idx]`` (nan on an empty set: no validation set)."""
    if len(idx) == 0:
        return float("nan")
    probs = predict(model, source, idx, s.device, s.eval_batch)
    return float(100.0 * (probs.argmax(1).numpy() == np.asarray(labels)).mean())


def _record(s: Settings, data: ALData, cfg: Config, run: int, ir: float, unsupervised: int, b: int,
            labeled: np.ndarray, picked: np.ndarray, probs: list, final_probs: list, chosen: list, val_accs: list,
            result, unlabeled: np.ndarray, query_seconds: float, train_seconds: float, current: dict,
            sid: str) -> dict:
    """One iteration's results record (README: "Results records")."""
    raw, split, C = data.raw, data.split, s.spec.num_classes
    test_labels = raw.test.labels
    accs = [accuracy(p.argmax(1).numpy(), test_labels, C) for p in probs]
    final_accs = [accuracy(p.argmax(1).numpy(), test_labels, C) for p in final_probs]
    ens = accuracy(torch.stack(probs).mean(0).argmax(1).numpy(), test_labels, C)
    scores = [class_scores(p.argmax(1).numpy(), test_labels, C) for p in probs]
    metrics = imbalance_metrics(np.mean([a for a, _ in scores], 0), np.mean([f for _, f in scores], 0),
                                split.rare_classes, split.pool_labels[labeled])
    rare_scores = {}
    if result.pseudo_labels is not None and split.rare_classes:
        rare_scores = pseudo_label_rare_scores(result.pseudo_labels, data.pool_source.labels[split.pool[unlabeled]],
                                               split.rare_classes)
    return {
        "config": cfg.name, "dataset": s.spec.name, "protocol": s.protocol, "run": run, "seed": s.seed_of(run),
        "imbalance_ratio": float(ir), "unsupervised": unsupervised, "iteration": b, "labeled": int(len(labeled)),
        "pool_size": int(len(split.pool)),
        "test_accuracy": float(np.mean([a.overall for a in accs])),
        "ensemble_test_accuracy": ens.overall if len(probs) > 1 else None,
        "per_class_accuracy": (np.mean([a.per_class for a in accs], 0).tolist()),
        "selected_class_counts": np.bincount(raw.train.labels[split.pool[picked]],   # true classes
                                             minlength=C).tolist(),
        "pseudo_label_accuracy": result.pseudo_label_accuracy,
        "query_seconds": query_seconds, "train_seconds": train_seconds,
        "epochs": s.train.epochs, "query_size": int(len(picked)),
        "epoch_selection": s.epoch_selection, "chosen_epochs": [int(c) for c in chosen],
        "final_test_accuracy": float(np.mean([a.overall for a in final_accs])),
        "val_accuracy": None if np.isnan(np.mean(val_accs)) else float(np.mean(val_accs)),
        **metrics,
        "pseudo_label_rare_precision": rare_scores.get("pseudo_label_rare_precision"),
        "pseudo_label_rare_recall": rare_scores.get("pseudo_label_rare_recall"),
        "pseudo_label_rare_count": rare_scores.get("pseudo_label_rare_count"),
        "rare_classes": None if split.rare_classes is None else list(split.rare_classes),
        "world_size": D.world(),
        **result.extras,
        "settings": current, "settings_id": sid, "code_version": code_version(),
    }


def run_full_train(s: Settings, raw: RawData, run: int, ir: float, unsupervised: int) -> dict:
    """Train on the whole biased pool (all labels) from the initial model: the "all train" line."""
    paths = RunPaths.of(s.out, s.spec, run)
    cfg = Config("full-train")
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    current = config_settings(replace(s, epoch_selection="final"), raw, cfg, run, ir, unsupervised)
    sid = settings_mod.settings_id(current)
    with contextlib.ExitStack() as held:

        def prepare():
            held.enter_context(exclusive(paths.config_lock(ir, unsupervised, cfg.name),
                                         f"full-train of run{run} at IR={ir:g}"))
            return completed_iterations(paths.results, s.spec.name, cfg.name, float(ir), unsupervised, sid)
        done = D.on_main(prepare)
        if 0 in done:
            return done[0]
        seed = s.seed_of(run)
        model = load_models(s, [load_initial(s, data, run, unsupervised)])[0]
        seconds = train(model, data.pool_source, split.pool, split.pool_labels, s.train, s.device,
                        generator(seed, "full-train"), desc=f"run{run} IR={ir:g} full train", progress=s.progress)
        probs = predict(model, raw.test, np.arange(len(raw.test)), s.device, s.eval_batch)
        acc = accuracy(probs.argmax(1).numpy(), raw.test.labels, s.spec.num_classes)
        metrics = imbalance_metrics(*class_scores(acc.predictions, raw.test.labels, s.spec.num_classes),
                                    split.rare_classes, split.pool_labels)
        record = {"config": cfg.name, "dataset": s.spec.name, "protocol": s.protocol, "run": run, "seed": seed,
                  "imbalance_ratio": float(ir),
                  "unsupervised": unsupervised, "iteration": 0, "labeled": int(len(split.pool)),
                  "pool_size": int(len(split.pool)), "test_accuracy": acc.overall, "ensemble_test_accuracy": None,
                  "per_class_accuracy": acc.per_class,
                  "selected_class_counts": np.bincount(raw.train.labels[split.pool],
                                                       minlength=s.spec.num_classes).tolist(),
                  "pseudo_label_accuracy": None, "query_seconds": 0.0, "train_seconds": seconds,
                  "epochs": s.train.epochs, "query_size": 0, **metrics,
                  "rare_classes": None if split.rare_classes is None else list(split.rare_classes),
                  "world_size": D.world(), "settings": current, "settings_id": sid, "code_version": code_version()}
        if D.is_main():
            append_jsonl(record, paths.results)
    return record


_CODE_VERSION: list = []


def code_version() -> Optional[str]:
    """``git describe`` of the checkout this code runs from (``-dirty`` with uncommitted changes), None outside
    git: which code made a record (informational; resume does not compare it)."""
    if not _CODE_VERSION:
        try:
            out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                                 capture_output=True, text=True, timeout=10)
            _CODE_VERSION.append(out.stdout.strip() or None if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _CODE_VERSION.append(None)
    return _CODE_VERSION[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
