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
from dataclasses import replace
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
from .metrics import class_scores, imbalance_metrics, pseudo_label_rare_scores
from .models import copy_all_but_classifier
from .run_state import (RunPaths, Settings, adopt_pretraining, completed_iterations, config_settings, derive_seed,
                        ensure_split, generator, hooks_for, initial_settings, load_models, load_state, new_model,
                        read_json)
from .run_state import _OTHER_OUT, _attached, _check_same, _config_folder_ready, _resume_point
from .training import KeepBestEpoch, accuracy, predict, rotation_accuracy, train, train_rotation


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
        result = registry.query(ctx)
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
