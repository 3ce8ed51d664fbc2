"""The experiment: initial models (``run.py --initial``) and the active-learning iterations of each
configuration, with one results record per completed iteration and resume from the first missing one.

The state of a configuration's run is its models and ``labeled_at`` ([N] int: the iteration at which each pool
position was labeled, -1 if never); both are saved after every iteration, before its record is appended. Where the
files live, the settings they carry and the checks made before a resumed run reuses them are ``fkal.run_state``'s.
One process at a time works on a configuration of a run (a lock per configuration state); different
configurations run side by side.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed as D
from . import protocols
from . import settings as settings_mod
from .acquisitions.contract import QueryContext, QueryResult
from .acquisitions import registry
from .acquisitions.registry import ACQUISITIONS
from .config import Config
from .data import ALData, RawData
from .errors import UserError
from .io import append_jsonl, exclusive, load_torch, save_json, save_torch
from .record import Record
from .metrics import class_scores, imbalance_metrics, pseudo_label_rare_scores
from .state.checkpoints import attached, hooks_for, load_models, load_state, new_model, read_json
from .state.paths import Cell, RunPaths
from .state.resume import (OTHER_OUT, adopt_pretraining, check_same, completed_iterations, config_folder_ready,
                           config_settings, ensure_split, initial_settings, resume_point)
from .state.run import Settings, derive_seed, generator
from .training import KeepBestEpoch, accuracy, initial_model, predict, rotation_accuracy, train


# ----------------------------------------------------------------------------------------------------------------
# Initial models (b = 0)
# ----------------------------------------------------------------------------------------------------------------
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
        model, seconds, rot = initial_model(
            lambda classes: new_model(s, num_classes=classes), data.pool_source, data.split.pool,
            s.unsup if unsupervised else None, s.device, derive_seed(seed, "init", member),
            derive_seed(seed, "rotation", member), generator(seed, "rotation-order", member),
            desc=f"run{run} IR={ir:g} rotation pretraining e{member}", progress=s.progress)
        if unsupervised:
            acc = rotation_accuracy(rot, data.raw.test, np.arange(len(data.raw.test)), s.device, s.eval_batch)
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
        check_same(state.get("settings"), current, path, f"{OTHER_OUT} (the initial models serve every "
                                                          f"configuration of run{run}; without --unsup-epochs a run "
                                                          "takes the pretraining they were made with)")
        return state["model"]
    return D.on_main(read)


def run_initial(s: Settings, raw: RawData, run: int, ir: float, members: int = 1) -> None:
    s = adopt_pretraining(s, run, ir)
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    for member in range(members):
        for unsupervised in (0, 1):
            load_initial(s, data, run, unsupervised, member)


# ----------------------------------------------------------------------------------------------------------------
# Active learning iterations
# ----------------------------------------------------------------------------------------------------------------
def run_config(s: Settings, raw: RawData, cfg: Config, run: int, ir: float, unsupervised: int) -> list[dict]:
    """B iterations of one configuration on one run; resumes at the first missing iteration."""
    if cfg.acquisition not in ACQUISITIONS:
        raise UserError(f"configuration {cfg.name}: acquisition '{cfg.acquisition}' is not available")
    s = adopt_pretraining(s, run, ir)
    cell = Cell.of(s.out, s.spec, run, ir, unsupervised, cfg)
    split = ensure_split(s, raw, run, ir,
                         query_budget=protocols.labels_needed(s.initial_labels, s.query_size, s.iterations))
    data = ALData(s.spec, raw, split)
    current = config_settings(s, raw, cfg, run, ir, unsupervised)
    sid = settings_mod.settings_id(current)
    with contextlib.ExitStack() as held:

        def prepare():           # on rank 0: the lock (held until the configuration is done), the folder, resume
            held.enter_context(exclusive(cell.lock, str(cell)))
            config_folder_ready(s, cell.paths, cfg, ir, unsupervised, current)
            done = completed_iterations(cell.results, s.spec.name, cfg.name, float(ir), unsupervised, sid)
            return done, resume_point(cell.paths, cfg, ir, unsupervised, done, s.iterations)
        done, last = D.on_main(prepare)
        if last >= s.iterations:
            return [done[b] for b in range(1, s.iterations + 1)]
        return _iterate(s, data, cell, current, sid, done, last)


@dataclass
class Query:
    """One iteration's query: the picks ``[P]`` (pool positions), the acquisition's result, its seconds, and the
    unlabeled positions it chose from."""

    picked: np.ndarray
    result: QueryResult
    seconds: float
    offered: np.ndarray


@dataclass
class Trained:
    """One iteration's training of the E members: the kept and the final epoch's test softmax outputs (``[N, C]``
    each member), the epoch each member kept, its accuracy on D_v, and the training seconds."""

    probs: list
    final_probs: list
    chosen: list
    val_accuracies: list
    seconds: float


def _iterate(s: Settings, data: ALData, cell: Cell, current: dict, sid: str, done: dict[int, dict],
             last: int) -> list[dict]:
    cfg, split, seed = cell.cfg, data.split, s.seed_of(cell.run)
    fix = (f"delete it and run the same command again: {cfg.name} then resumes from the iteration before it")
    if last > 0:
        path = cell.state(last)
        state = D.on_main(load_state, path, len(split.pool), fix, sid, cfg.E)
        with D.agreed():
            models = load_models(s, state["models"], cfg.acquisition, wrapped=True, origin=path, fix=fix)
        labeled_at = state["labeled_at"].numpy().astype(np.int64)
    else:
        models = _initial_models(s, data, cell)
        labeled_at = np.full(len(split.pool), -1, dtype=np.int64)

    def pretrained() -> torch.nn.Module:     # the run's rotation-pretrained initial model, for ctx.pretrained
        return load_models(s, [load_initial(s, data, cell.run, 1)])[0]

    hooks = hooks_for(s, cfg.acquisition)
    extra_loss = hooks.extra_loss(dict(s.options), s.spec) if hooks is not None else None
    records = [done[b] for b in range(1, last + 1)]
    bar = tqdm(range(last + 1, s.iterations + 1), desc=f"run{cell.run} IR={cell.ir:g} "
               f"{'rot' if cell.unsupervised else 'rnd'} {cfg.name}", leave=True, disable=not s.progress)
    for b in bar:
        torch.manual_seed(derive_seed(seed, "iteration", b, cfg.name))
        query = Query(*_select(s, data, cfg, models, labeled_at, b, seed, pretrained))
        labeled_at[query.picked] = b
        labeled = np.flatnonzero(labeled_at >= 0)
        if s.model_per_cycle == "fresh":
            models = _initial_models(s, data, cell)
        trained = _train_members(s, data, models, labeled, b, seed, extra_loss)
        record = _record(s, data, cell, b, labeled, query, trained, current, sid)
        if D.is_main():
            if b == 1:                                     # a new folder: the settings its states are made with
                save_json({"settings": current, "settings_id": sid}, cell.settings_file)
            save_torch({"models": [m.state_dict() for m in models], "labeled_at": torch.from_numpy(labeled_at),
                        "iteration": b, "settings_id": sid}, cell.state(b))
            moved = append_jsonl(record, cell.results)
            if moved:
                tqdm.write(f"warning: {cell.results}: its last line was cut short (a crash while writing); it was "
                           f"moved, bytes unchanged, to {moved.name} beside it, and the new record follows",
                           file=sys.stderr)
        D.barrier()
        records.append(record)
        bar.set_postfix(acc=f"{record['test_accuracy']:.2f}", labeled=record["labeled"])
    return records


def _train_members(s: Settings, data: ALData, models: list, labeled: np.ndarray, b: int, seed: int,
                   extra_loss) -> Trained:
    """Train each member on the labeled positions (warm start, a fresh schedule), keep the epoch
    ``--epoch-selection`` says, and evaluate on the test set (and D_v)."""
    split, raw = data.split, data.raw
    test_idx = np.arange(len(raw.test))
    seconds, final_probs, chosen, val_accs = 0.0, [], [], []
    for e, m in enumerate(models):
        keeper = KeepBestEpoch(m, lambda model: _accuracy(s, model, data.val_source, split.val, data.val_labels))
        seconds += train(m, data.pool_source, split.pool[labeled], split.pool_labels[labeled], s.train, s.device,
                         generator(seed, "train", b, e), extra_loss=extra_loss, desc=f"train b={b} e{e}",
                         progress=s.progress, on_epoch_end=keeper if s.epoch_selection == "val" else None)
        if s.epoch_selection == "val":
            final_probs.append(predict(m, raw.test, test_idx, s.device, s.eval_batch))
            keeper.restore()
            chosen.append(keeper.best_epoch)
            val_accs.append(keeper.best_score)
        else:
            chosen.append(s.train.epochs)
            val_accs.append(_accuracy(s, m, data.val_source, split.val, data.val_labels))
    probs = [predict(m, raw.test, test_idx, s.device, s.eval_batch) for m in models]
    return Trained(probs, final_probs or probs, chosen, val_accs, seconds)


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
        query_models = [getattr(m, "backbone", m) for m in models] if attached(s, cfg.acquisition) else models
        ctx = QueryContext(models=query_models, data=data, labeled=labeled, unlabeled=offered, budget=budget,
                           generator=generator(seed, "query", b), device=s.device, config=cfg, iteration=b,
                           batch_size=s.eval_batch, progress=s.progress, options=dict(s.options),
                           pretrained=pretrained)
        result = registry.query(ctx)
    _sync(s.device)
    query_seconds = time.perf_counter() - t0
    picked = np.asarray(D.broadcast_object(np.asarray(result.indices)))         # rank 0's picks, on every rank
    bad = (labeled_at[picked] >= 0) | ~np.isin(picked, offered)
    if len(picked) != budget or len(np.unique(picked)) != budget or bad.any():
        raise RuntimeError(f"{cfg.name} returned {len(picked)} positions ({len(np.unique(picked))} distinct, "
                           f"{int(bad.sum())} already labeled or not offered) for a budget of {budget}")
    return picked, result, query_seconds, offered


def _initial_models(s: Settings, data: ALData, cell: Cell) -> list[torch.nn.Module]:
    """The E initial models of the cell's run, with the configuration's hooks (also each cycle's fresh model under
    ``--model-per-cycle fresh``)."""
    models = []
    for e in range(cell.cfg.E):
        initial = load_initial(s, data, cell.run, cell.unsupervised, e)
        with D.agreed():
            models += load_models(s, [initial], cell.cfg.acquisition, origin=cell.initial(e), fix=_REMAKE_INITIAL)
    return models


def _accuracy(s: Settings, model: torch.nn.Module, source, idx: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (%) of ``model`` on ``source[idx]`` (nan on an empty set: no validation set)."""
    if len(idx) == 0:
        return float("nan")
    probs = predict(model, source, idx, s.device, s.eval_batch)
    return float(100.0 * (probs.argmax(1).numpy() == np.asarray(labels)).mean())


def _record(s: Settings, data: ALData, cell: Cell, b: int, labeled: np.ndarray, query: Query, trained: Trained,
            current: dict, sid: str) -> dict:
    """Iteration b's results record (``fkal.record.Record``), as the JSON object ``results.jsonl`` holds."""
    raw, split, C = data.raw, data.split, s.spec.num_classes
    test_labels = raw.test.labels
    accs = [accuracy(p.argmax(1).numpy(), test_labels, C) for p in trained.probs]
    final_accs = [accuracy(p.argmax(1).numpy(), test_labels, C) for p in trained.final_probs]
    ens = accuracy(torch.stack(trained.probs).mean(0).argmax(1).numpy(), test_labels, C)
    scores = [class_scores(p.argmax(1).numpy(), test_labels, C) for p in trained.probs]
    metrics = imbalance_metrics(np.mean([a for a, _ in scores], 0), np.mean([f for _, f in scores], 0),
                                split.rare_classes, split.pool_labels[labeled])
    result = query.result
    rare_scores = {}
    if result.pseudo_labels is not None and split.rare_classes:
        rare_scores = pseudo_label_rare_scores(result.pseudo_labels,
                                               data.pool_source.labels[split.pool[query.offered]], split.rare_classes)
    val = float(np.mean(trained.val_accuracies))
    return Record(
        config=cell.cfg.name, dataset=s.spec.name, protocol=s.protocol, run=cell.run, seed=s.seed_of(cell.run),
        imbalance_ratio=float(cell.ir), unsupervised=cell.unsupervised, iteration=b, labeled=int(len(labeled)),
        pool_size=int(len(split.pool)), test_accuracy=float(np.mean([a.overall for a in accs])),
        ensemble_test_accuracy=ens.overall if len(trained.probs) > 1 else None,
        per_class_accuracy=np.mean([a.per_class for a in accs], 0).tolist(),
        selected_class_counts=np.bincount(raw.train.labels[split.pool[query.picked]], minlength=C).tolist(),
        pseudo_label_accuracy=result.pseudo_label_accuracy, query_seconds=query.seconds,
        train_seconds=trained.seconds, epochs=s.train.epochs, query_size=int(len(query.picked)),
        epoch_selection=s.epoch_selection, chosen_epochs=[int(c) for c in trained.chosen],
        final_test_accuracy=float(np.mean([a.overall for a in final_accs])),
        val_accuracy=None if np.isnan(val) else val, **metrics, **rare_scores,
        rare_classes=None if split.rare_classes is None else list(split.rare_classes), world_size=D.world(),
        extras=dict(result.extras), settings=current, settings_id=sid, code_version=code_version()).to_json()


def run_full_train(s: Settings, raw: RawData, run: int, ir: float, unsupervised: int) -> dict:
    """Train on the whole biased pool (all labels) from the initial model: the "all train" line."""
    s = adopt_pretraining(s, run, ir)
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
        record = Record(
            config=cfg.name, dataset=s.spec.name, protocol=s.protocol, run=run, seed=seed,
            imbalance_ratio=float(ir), unsupervised=unsupervised, iteration=0, labeled=int(len(split.pool)),
            pool_size=int(len(split.pool)), test_accuracy=acc.overall, ensemble_test_accuracy=None,
            per_class_accuracy=acc.per_class,
            selected_class_counts=np.bincount(raw.train.labels[split.pool], minlength=s.spec.num_classes).tolist(),
            pseudo_label_accuracy=None, query_seconds=0.0, train_seconds=seconds, epochs=s.train.epochs,
            query_size=0, **metrics, rare_classes=None if split.rare_classes is None else list(split.rare_classes),
            world_size=D.world(), settings=current, settings_id=sid, code_version=code_version()).to_json()
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
