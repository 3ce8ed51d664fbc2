"""The experiment: initial models (``run.py --initial``) and the active-learning iterations of each
configuration, with one results record per completed iteration and resume from the first missing one.

The state of a configuration's run is its models and ``labeled_at`` ([N] int: the iteration at which each pool
position was labeled, -1 if never); both are saved after every iteration, before its record is appended.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .acquisitions.contract import QueryContext
from .acquisitions.registry import ACQUISITIONS, TASK_HOOKS
from .config import Config
from .data import ALData, DatasetSpec, RawData, Schedule, Split, make_split
from .errors import UserError
from .io import append_jsonl, read_jsonl, save_json, save_torch
from .models import build_model, copy_all_but_classifier
from .training import evaluate, predict, accuracy, rotation_accuracy, train, train_rotation


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

    def state(self, imbalance_ratio: float, unsupervised: int, config: str, iteration: int) -> Path:
        kind = "rotation" if unsupervised else "random"
        return self.ir(imbalance_ratio) / kind / config / f"state_b{iteration:02d}.pt"


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

    def seed_of(self, run: int) -> int:
        return run if self.seed is None else self.seed


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from a base seed and keys (strings or ints), stable across processes."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence([seed, *ints]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(seed: int, *keys) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


# ----------------------------------------------------------------------------------------------------------------
# Initial models (b = 0)
# ----------------------------------------------------------------------------------------------------------------
def ensure_split(s: Settings, raw: RawData, run: int, ir: float) -> Split:
    path = RunPaths.of(s.out, s.spec, run).split(ir)
    if path.exists():
        return Split.load(path)
    split = make_split(s.spec, raw, s.seed_of(run), ir, s.noise_ratio, s.pool_size, s.val_size)
    split.save(path)
    return split


def new_model(s: Settings, num_classes: Optional[int] = None) -> torch.nn.Module:
    return build_model(s.spec.model, num_classes or s.spec.num_classes).to(s.device)


def ensure_initial(s: Settings, data: ALData, run: int, unsupervised: int, member: int = 0) -> Path:
    """The random-weights or rotation-pretrained initial model of one ensemble member; skipped when present.

    Both share the random classifier layer: the rotation model is trained from its own random start on the whole
    unlabeled pool, then every layer but the last is copied into the random-weights model.
    """
    paths = RunPaths.of(s.out, s.spec, run)
    ir = data.split.imbalance_ratio
    target = paths.initial(ir, unsupervised, member)
    if target.exists():
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
        info_path = paths.initial_info(ir)
        info = read_json(info_path)
        info[f"rotation_e{member}"] = {"rotation_test_accuracy": acc, "seconds": seconds,
                                       "epochs": s.unsup.epochs, "pool": int(len(data.split.pool))}
        save_json(info, info_path)
        tqdm.write(f"run{run} IR={ir:g} member {member}: rotation-task test accuracy {acc:.2f}% ({seconds:.0f} s)")
    save_torch({"model": model.state_dict(), "seed": seed, "member": member, "unsupervised": unsupervised}, target)
    return target


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run_initial(s: Settings, raw: RawData, run: int, ir: float, members: int = 1) -> None:
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    for member in range(members):
        for unsupervised in (0, 1):
            ensure_initial(s, data, run, unsupervised, member)


# ----------------------------------------------------------------------------------------------------------------
# Active learning iterations
# ----------------------------------------------------------------------------------------------------------------
def completed_iterations(results: Path, dataset: str, config: str, ir: float, unsupervised: int) -> dict[int, dict]:
    records, _ = read_jsonl(results)
    return {r["iteration"]: r for r in records
            if r.get("config") == config and r.get("dataset") == dataset and r.get("imbalance_ratio") == ir
            and r.get("unsupervised") == unsupervised}


def load_models(s: Settings, states: list[dict], acquisition: Optional[str] = None,
                wrapped: bool = False) -> list[torch.nn.Module]:
    """Models from state dicts; ``wrapped`` states were saved with the acquisition's task hooks applied,
    plain ones (initial models) get the hooks applied after loading."""
    hooks = TASK_HOOKS.get(acquisition)
    models = []
    for st in states:
        m = new_model(s)
        if hooks is not None and wrapped:
            m = hooks.wrap(m, s.spec).to(s.device)
        m.load_state_dict(st)
        if hooks is not None and not wrapped:
            m = hooks.wrap(m, s.spec).to(s.device)
        models.append(m.eval())
    return models


def run_config(s: Settings, raw: RawData, cfg: Config, run: int, ir: float, unsupervised: int) -> list[dict]:
    """B iterations of one configuration on one run; resumes at the first missing iteration."""
    if cfg.acquisition not in ACQUISITIONS:
        raise UserError(f"configuration {cfg.name}: acquisition '{cfg.acquisition}' is not available")
    paths = RunPaths.of(s.out, s.spec, run)
    seed = s.seed_of(run)
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    done = completed_iterations(paths.results, s.spec.name, cfg.name, float(ir), unsupervised)
    last = max((b for b in range(1, s.iterations + 1) if all(i in done for i in range(1, b + 1))), default=0)
    if last >= s.iterations:
        return [done[b] for b in range(1, s.iterations + 1)]
    if last > 0:
        state = torch.load(paths.state(ir, unsupervised, cfg.name, last), map_location="cpu")
        models = load_models(s, state["models"], cfg.acquisition, wrapped=True)
        labeled_at = state["labeled_at"].numpy().copy()
    else:
        models = load_models(s, [torch.load(ensure_initial(s, data, run, unsupervised, e), map_location="cpu")["model"]
                                 for e in range(cfg.E)], cfg.acquisition)
        labeled_at = np.full(len(split.pool), -1, dtype=np.int64)
    acquire = ACQUISITIONS[cfg.acquisition]
    hooks = TASK_HOOKS.get(cfg.acquisition)
    extra_loss = hooks.extra_loss(dict(s.options), s.spec) if hooks is not None else None
    records = [done[b] for b in range(1, last + 1)]
    test_idx = np.arange(len(raw.test))
    bar = tqdm(range(last + 1, s.iterations + 1), desc=f"run{run} IR={ir:g} {'rot' if unsupervised else 'rnd'} "
               f"{cfg.name}", leave=True, disable=not s.progress)
    for b in bar:
        torch.manual_seed(derive_seed(seed, "iteration", b, cfg.name))
        labeled, unlabeled = np.flatnonzero(labeled_at >= 0), np.flatnonzero(labeled_at < 0)
        budget = min(s.query_size, len(unlabeled))
        ctx = QueryContext(models=models, data=data, labeled=labeled, unlabeled=unlabeled, budget=budget,
                           generator=generator(seed, "query", b), device=s.device, config=cfg, iteration=b,
                           batch_size=s.eval_batch, progress=s.progress, options=dict(s.options))
        _sync(s.device)
        t0 = time.perf_counter()
        result = acquire(ctx)
        _sync(s.device)
        query_seconds = time.perf_counter() - t0
        picked = np.asarray(result.indices)
        if len(picked) != budget or len(np.unique(picked)) != budget or (labeled_at[picked] >= 0).any():
            raise RuntimeError(f"{cfg.name} returned {len(picked)} positions ({len(np.unique(picked))} distinct, "
                               f"{int((labeled_at[picked] >= 0).sum())} already labeled) for a budget of {budget}")
        labeled_at[picked] = b
        labeled = np.flatnonzero(labeled_at >= 0)
        train_seconds = 0.0
        for e, m in enumerate(models):
            train_seconds += train(m, data.pool_source, split.pool[labeled], split.pool_labels[labeled], s.train,
                                   s.device, generator(seed, "train", b, e), extra_loss=extra_loss,
                                   desc=f"train b={b} e{e}", progress=s.progress)
        probs = [predict(m, raw.test, test_idx, s.device, s.eval_batch) for m in models]
        accs = [accuracy(p.argmax(1).numpy(), raw.test.labels, s.spec.num_classes) for p in probs]
        ens = accuracy(torch.stack(probs).mean(0).argmax(1).numpy(), raw.test.labels, s.spec.num_classes)
        record = {
            "config": cfg.name, "dataset": s.spec.name, "run": run, "seed": seed, "imbalance_ratio": float(ir),
            "unsupervised": unsupervised, "iteration": b, "labeled": int(len(labeled)),
            "pool_size": int(len(split.pool)),
            "test_accuracy": float(np.mean([a.overall for a in accs])),
            "ensemble_test_accuracy": ens.overall if len(models) > 1 else None,
            "per_class_accuracy": (np.mean([a.per_class for a in accs], 0).tolist()),
            "selected_class_counts": np.bincount(raw.train.labels[split.pool[picked]],   # true classes
                                                 minlength=s.spec.num_classes).tolist(),
            "pseudo_label_accuracy": result.pseudo_label_accuracy,
            "query_seconds": query_seconds, "train_seconds": train_seconds,
            "epochs": s.train.epochs, "query_size": s.query_size,
        }
        save_torch({"models": [m.state_dict() for m in models], "labeled_at": torch.from_numpy(labeled_at),
                    "iteration": b},
                   paths.state(ir, unsupervised, cfg.name, b))
        append_jsonl(record, paths.results)
        records.append(record)
        bar.set_postfix(acc=f"{record['test_accuracy']:.2f}", labeled=record["labeled"])
    return records


def run_full_train(s: Settings, raw: RawData, run: int, ir: float, unsupervised: int) -> dict:
    """Train on the whole biased pool (all labels) from the initial model: the "all train" line."""
    paths = RunPaths.of(s.out, s.spec, run)
    done = completed_iterations(paths.results, s.spec.name, "full-train", float(ir), unsupervised)
    if 0 in done:
        return done[0]
    split = ensure_split(s, raw, run, ir)
    data = ALData(s.spec, raw, split)
    seed = s.seed_of(run)
    model = load_models(s, [torch.load(ensure_initial(s, data, run, unsupervised), map_location="cpu")["model"]])[0]
    seconds = train(model, data.pool_source, split.pool, split.pool_labels, s.train, s.device,
                    generator(seed, "full-train"), desc=f"run{run} IR={ir:g} full train", progress=s.progress)
    acc = evaluate(model, raw.test, np.arange(len(raw.test)), raw.test.labels, s.spec.num_classes, s.device)
    record = {"config": "full-train", "dataset": s.spec.name, "run": run, "seed": seed, "imbalance_ratio": float(ir),
              "unsupervised": unsupervised, "iteration": 0, "labeled": int(len(split.pool)),
              "pool_size": int(len(split.pool)), "test_accuracy": acc.overall, "ensemble_test_accuracy": None,
              "per_class_accuracy": acc.per_class,
              "selected_class_counts": np.bincount(raw.train.labels[split.pool],
                                                   minlength=s.spec.num_classes).tolist(),
              "pseudo_label_accuracy": None, "query_seconds": 0.0, "train_seconds": seconds,
              "epochs": s.train.epochs, "query_size": 0}
    append_jsonl(record, paths.results)
    return record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
