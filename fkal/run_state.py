"""The on-disk state of a run: where its files are (``RunPaths``), the run-wide settings (``Settings``) and the
seeds derived from them, the settings dictionaries that the files and records carry (``fkal.settings``), the split
(made and saved when missing), iteration states and saved weights read back and checked, the results records read
back, and the checks that decide where a configuration resumes. ``fkal.loop`` runs the iterations that write these
files.

Every file a run writes carries the settings that made it: the split, each initial model, each configuration's
folder (``settings.json``) and every record. A resumed run reuses only what was made with the same settings;
otherwise it stops with one line naming the differences and the way out.
"""
from __future__ import annotations

import json
import sys
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
from .acquisitions.contract import TaskHooks
from .acquisitions.registry import ACQUISITION_OPTIONS, ATTACHED_HOOKS, ATTACHED_OPTIONS, TASK_HOOKS, find
from .config import Config
from .data import DatasetSpec, RawData, Schedule, Split, make_split
from .device import cuda_settings
from .errors import UserError
from .io import exclusive, load_torch, remove_temporaries
from .models import build_model
from .reporting.records import parse_record


# ----------------------------------------------------------------------------------------------------------------
# Paths (the one place that names files), the run-wide settings and the seeds drawn from them
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
    # whether ``unsup`` was asked for (--unsup-epochs); when not, a run whose initial models exist takes the
    # pretraining schedule they were made with (``adopt_pretraining``)
    unsup_given: bool = True

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
    Carlo estimators' perturbations) are seeded per batch of the pool (``AcquisitionSpec.batch_seeded``)."""
    spec = find(cfg.acquisition)
    return spec is not None and spec.batch_seeded(cfg)


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


_adopted: set = set()      # (out, run, IR) whose adopted schedule this process has announced


def adopt_pretraining(s: Settings, run: int, ir: float) -> Settings:
    """``s`` with the rotation-pretraining schedule that run ``run``'s existing initial models were made with,
    where ``--unsup-epochs`` was not given: the active-learning stage only uses those models, so it need not repeat
    the flag. Unchanged where the flag was given (a schedule that differs is then refused when the models are
    loaded), where no rotation-pretrained initial model exists yet (it is made with ``s.unsup``), or where the file
    records no schedule."""
    if s.unsup_given:
        return s
    path = RunPaths.of(s.out, s.spec, run).initial(ir, 1, 0)
    stored = D.on_main(_stored_pretraining, path)
    if stored is None:
        return s
    schedule = replace(s.unsup, **{k: tuple(v) if k == "milestones" else v for k, v in stored.items()
                                   if k in s.unsup.__dataclass_fields__})
    if schedule != s.unsup and (s.out, run, ir) not in _adopted:
        _adopted.add((s.out, run, ir))
        D.print_once(f"run{run} IR={ir:g}: the initial models were pretrained for {schedule.epochs} epochs; this run "
                     f"takes their schedule (--unsup-epochs {schedule.epochs}); give --unsup-epochs to require "
                     "another", file=sys.stderr)
    return replace(s, unsup=schedule)


def _stored_pretraining(path: Path) -> Optional[dict]:
    """The ``unsup`` schedule recorded in an initial model's file, or None (no file, or none recorded)."""
    if not path.exists():
        return None
    state = load_torch(path, "delete it and run the same command again: the initial model is made anew")
    stored = state.get("settings") if isinstance(state, dict) else None
    unsup = stored.get("unsup") if isinstance(stored, dict) else None
    return unsup if isinstance(unsup, dict) else None


# ----------------------------------------------------------------------------------------------------------------
# The split
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


# ----------------------------------------------------------------------------------------------------------------
# Saved models and iteration states
# ----------------------------------------------------------------------------------------------------------------
def new_model(s: Settings, num_classes: Optional[int] = None) -> torch.nn.Module:
    return build_model(s.spec.model, num_classes or s.spec.num_classes).to(s.device)


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


# ----------------------------------------------------------------------------------------------------------------
# Results records
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


# ----------------------------------------------------------------------------------------------------------------
# Resume checks
# ----------------------------------------------------------------------------------------------------------------
def _config_folder_ready(s: Settings, paths: RunPaths, cfg: Config, ir: float, unsupervised: int,
                         current: dict) -> None:
    """Check the configuration's folder against ``current`` settings; with ``--fresh`` a folder made with other
    settings is moved aside (``{config}.replaced-{its settings id}``, nothing deleted) and the configuration starts
    afresh. Writes nothing else: ``settings.json`` is written with the first state (``fkal.loop._iterate``), so
    that a run that fails before its first iteration leaves no folder behind, and a ``settings.json`` beside no
    state binds nothing."""
    folder = paths.config(ir, unsupervised, cfg.name)
    remove_temporaries(folder)                             # left by a process killed while writing here
    if not any(folder.glob("state_b*.pt")):
        return
    settings_path = paths.config_settings(ir, unsupervised, cfg.name)
    stored = read_json(settings_path).get("settings") if settings_path.exists() else None
    fix = f"add --fresh {cfg.name} to start that configuration afresh (the old folder is kept beside it)"
    if stored is None:
        stored = {"recorded": "nothing (made before settings were recorded)"}
        if cfg.name not in s.fresh:
            raise UserError(f"{folder} holds iteration states but no settings.json to compare this run's settings "
                            f"with (made before settings were recorded, or the file was removed): {fix}")
    if settings_mod.differences(stored, current):
        if cfg.name in s.fresh:
            old = folder.with_name(f"{folder.name}.replaced-{settings_mod.settings_id(stored)}")
            folder.rename(old)
            tqdm.write(f"{folder} held other settings: moved to {old.name}; {cfg.name} starts afresh "
                       "(its earlier records stay in results.jsonl under their settings)")
        else:
            _check_same(stored, current, folder, f"{_OTHER_OUT}, or {fix}")


def _resume_point(paths: RunPaths, cfg: Config, ir: float, unsupervised: int, done: dict[int, dict],
                  iterations: int) -> int:
    """The last iteration to continue from: the longest run of completed iterations 1..b whose state is on disk
    (a state deleted because it was damaged sends the run back to the one before it)."""
    last = max((b for b in range(1, iterations + 1) if all(i in done for i in range(1, b + 1))), default=0)
    while last > 0 and not paths.state(ir, unsupervised, cfg.name, last).exists():
        last -= 1
    return last
