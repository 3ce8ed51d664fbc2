"""What a resumed run may reuse: the settings each file and record carries (``fkal.settings``), compared before
anything is reused; the split (made and saved when missing); the results records read back; the point where a
configuration resumes.

Every file a run writes carries the settings that made it: the split, each initial model, each configuration's
folder (``settings.json``) and every record. A resumed run reuses only what was made with the same settings;
otherwise it stops with one line naming the differences and the way out.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from .. import distributed as D
from .. import settings as settings_mod
from ..acquisitions.registry import ACQUISITION_OPTIONS, ATTACHED_OPTIONS, find
from ..config import Config
from ..data import RawData, Split, make_split
from ..device import cuda_settings
from ..errors import UserError
from ..io import exclusive, load_torch, remove_temporaries
from ..reporting.records import parse_record
from .checkpoints import attached, read_json
from .paths import RunPaths
from .run import Settings


# ----------------------------------------------------------------------------------------------------------------
# Settings of the split, the initial models and a configuration (fkal.settings)
# ----------------------------------------------------------------------------------------------------------------
def split_settings(s: Settings, raw: RawData, run: int, ir: float) -> dict:
    return settings_mod.split_settings(s.spec, raw.fingerprint(), s.seed_of(run), ir, s.noise_ratio,
                                       s.train_size_or_default(),
                                       s.val_size_or_default())


def initial_settings(s: Settings, raw: RawData, run: int, ir: float, unsupervised: int) -> dict:
    return settings_mod.initial_settings(split_settings(s, raw, run, ir), s.spec.model,
                                         s.unsup if unsupervised else None)


def config_settings(s: Settings, raw: RawData, cfg: Config, run: int, ir: float, unsupervised: int) -> dict:
    options = dict(s.options)
    dests = ACQUISITION_OPTIONS.get(cfg.acquisition, ()) + (ATTACHED_OPTIONS if attached(s, cfg.acquisition) else ())
    return settings_mod.config_settings(
        initial_settings(s, raw, run, ir, unsupervised), cfg.name, unsupervised, s.train, s.query_size,
        s.epoch_selection, {d: options.get(d) for d in dests},
        s.device.type, taps=options.get("taps", "pre"), standardize=options.get("standardize", "unit"),
        world_size=D.world(), cuda=cuda_settings(s.device),
        **({"eval_batch": s.eval_batch} if batch_seeded(cfg) else {}), **protocol_settings(s),
        **({"config_file": s.config_file} if s.config_file else {}))


def batch_seeded(cfg: Config) -> bool:
    """Whether a configuration's picks depend on ``--eval-batch``: its random draws (MC-dropout masks, the Monte
    Carlo estimators' perturbations) are seeded per batch of the pool (``AcquisitionSpec.batch_seeded``)."""
    spec = find(cfg.acquisition)
    return spec is not None and spec.batch_seeded(cfg)


def protocol_settings(s: Settings) -> dict:
    """The settings ``fkal.protocols`` adds (``fkal.settings.ADDED_LATER`` holds their earlier values)."""
    return {"protocol": s.protocol, "initial_labels": s.initial_labels, "subset_size": s.subset_size,
            "model_per_cycle": s.model_per_cycle, "loss_module_all": s.loss_module_all,
            "crop_padding": s.crop_padding}


def check_same(stored: Optional[dict], current: dict, what: Path, fix: str) -> None:
    """One ``UserError`` naming the differing settings of ``what`` and ``fix``; nothing when they agree (or when
    ``stored`` is None: a file written before settings were recorded)."""
    if stored is None:
        return
    diffs = settings_mod.differences(stored, current)
    if diffs:
        raise UserError(f"{what} was made with other settings ({settings_mod.describe(diffs)}): {fix}")


OTHER_OUT = "use another --out, or the settings it was made with"


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
        D.print_once(f"run{run} IR={ir:g}: the initial models were pretrained for {schedule.epochs} "
                     f"epoch{'s' if schedule.epochs != 1 else ''}; this run "
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
        check_same(split.settings, current, path, f"{OTHER_OUT} (the split serves every configuration of run{run})")
    else:
        split = make_split(s.spec, raw, s.seed_of(run), ir, s.noise_ratio, s.train_size, s.val_size)
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
def config_folder_ready(s: Settings, paths: RunPaths, cfg: Config, ir: float, unsupervised: int,
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
            check_same(stored, current, folder, f"{OTHER_OUT}, or {fix}")


def resume_point(paths: RunPaths, cfg: Config, ir: float, unsupervised: int, done: dict[int, dict],
                  iterations: int) -> int:
    """The last iteration to continue from: the longest run of completed iterations 1..b whose state is on disk
    (a state deleted because it was damaged sends the run back to the one before it)."""
    last = max((b for b in range(1, iterations + 1) if all(i in done for i in range(1, b + 1))), default=0)
    while last > 0 and not paths.state(ir, unsupervised, cfg.name, last).exists():
        last -= 1
    return last
