#!/usr/bin/env python
"""How well each pseudo-label estimator S finds the rare classes, on the same models and the same pools.

The records of ``run.py`` give the rare-class precision and recall of each configuration's own pseudo-labels, but
each configuration picks its own images and trains its own models, so from iteration 2 on the estimators are
compared on different models. This script replays the queries of a finished run instead. For iterations
b = 1..``--iterations`` it loads the model and the labeled set that ``--reference`` (default ``pfk-phat-L80``)
queried with at iteration b (the rotation-pretrained initial model at b = 1, its saved state of iteration b - 1
after). On them it runs the query of ``pfk-{S}-L{L}`` for every S of ``--estimators``, with the reference's P and
selection options (``--taps``, ``--standardize``) and the generator the loop gave that query: for S = the
reference's own S the replay gives the recorded pseudo-labels and picks. It prints per S:

  - the rare-class precision and recall of the pseudo-labels over the unlabeled pool, as the loop records them
    (``fkal.metrics.pseudo_label_rare_scores``: a rare pseudo-label is a hit when it is the image's own class),
    and how many pool images got a rare pseudo-label against how many are rare;
  - how many of the P picks are rare.

    python benchmarks/pseudo_label_quality.py --data-root ../shared/datasets --out local_data --runs 0 1 2

It reads ``{out}/MNIST/run{r}/ir{IR}/split.npz``, ``init_rotation.pt`` and the reference's ``state_bNN.pt`` files,
which ``run.py`` wrote, and changes nothing there. A query of one S on the full pool takes seconds to a minute on
one CPU core (phat-em and efs-em fit a temperature and run EM first).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence


import numpy as np
import torch

from fkal.acquisitions.contract import QueryContext
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.cli import pick_device
from fkal.config import parse_config
from fkal.data import DATASETS, ALData
from fkal.data.mnist import load_mnist
from fkal.data.split import Split
from fkal.errors import UserError
from fkal.io import load_torch
from fkal.run_state import generator
from fkal.metrics import pseudo_label_rare_scores
from fkal.models import build_model
from fkal.reporting.curves import mean_std
from fkal.reporting.names import format_ratio
from fkal.reporting.tables import format_spread

SPEC = DATASETS["mnist"]
ESTIMATORS = ("phat", "phat-em", "phat-agree", "efs", "efs-em", "yhat")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default="local_data", help="folder that holds MNIST/raw (never downloaded here)")
    p.add_argument("--out", default="local_data", help="folder run.py wrote into")
    p.add_argument("--runs", nargs="+", type=int, default=[0, 1, 2], help="run indices")
    p.add_argument("--imbalance-ratio", type=float, default=100.0, help="imbalance ratio IR of the runs")
    p.add_argument("--iterations", type=int, default=3, help="replay the queries of iterations 1..this")
    p.add_argument("--reference", default="pfk-phat-L80",
                   help="the configuration whose models and labeled sets the queries are replayed on")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), metavar="S",
                   help="pseudo-label estimators S, each run as pfk-{S}-L{L}")
    p.add_argument("--L", type=int, default=80, help="descriptor length L of the queried configurations")
    p.add_argument("--gpu", type=int, default=None, help="CUDA device index (default: the CPU)")
    p.add_argument("--eval-batch", type=int, default=1000, help="inference batch size")
    return p.parse_args(argv)


def model_from(saved: dict, device: torch.device) -> torch.nn.Module:
    """The model of an initial model file ({'model': ...}) or member 0 of an iteration state ({'models': [...]})."""
    model = build_model(SPEC.model, SPEC.num_classes)
    model.load_state_dict(saved["models"][0] if "models" in saved else saved["model"])
    return model.to(device).eval()


def replay(folder: Path, data: ALData, reference: str, b: int, device: torch.device) -> tuple:
    """``(model, labeled [N_l], unlabeled [N_u])`` with which ``reference`` queried at iteration b."""
    if b == 1:
        saved = load_torch(folder / "init_rotation.pt", "run run.py for this run first")
        return model_from(saved, device), np.zeros(0, np.int64), np.arange(len(data.split.pool))
    saved = load_torch(folder / "rotation" / reference / f"state_b{b - 1:02d}.pt",
                       f"run run.py --only {reference} for this run first")
    labeled_at = saved["labeled_at"].numpy()
    return model_from(saved, device), np.flatnonzero(labeled_at >= 0), np.flatnonzero(labeled_at < 0)


def reference_settings(folder: Path, reference: str) -> dict:
    """The settings the reference ran with (its ``settings.json``): its P and its selection options are replayed."""
    path = folder / "rotation" / reference / "settings.json"
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}): run run.py --only {reference} for this "
                        "run first, or name another --reference") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.gpu)
    raw = load_mnist(args.data_root, download=False)
    ir = format_ratio(args.imbalance_ratio)
    rows: dict[tuple[str, int], list[dict]] = {}
    for run in args.runs:
        folder = Path(args.out) / "MNIST" / f"run{run}" / f"ir{ir}"
        if not (folder / "split.npz").exists():
            raise UserError(f"{folder / 'split.npz'} does not exist: run run.py --run-start {run} "
                            f"--run-stop {run + 1} --imbalance-ratios {ir} first, or point --out at its output")
        split = Split.load(folder / "split.npz", raw)
        data = ALData(SPEC, raw, split)
        rare = list(split.rare_classes)
        settings = reference_settings(folder, args.reference)
        budget, options = settings["query_size"], {**settings["options"], "taps": settings["taps"]}
        for b in range(1, args.iterations + 1):
            model, labeled, unlabeled = replay(folder, data, args.reference, b, device)
            true = data.pool_source.labels[split.pool[unlabeled]]
            for s in args.estimators:
                cfg = parse_config(f"pfk-{s}-L{args.L}", ACQUISITIONS)
                ctx = QueryContext(models=[model], data=data, labeled=labeled, unlabeled=unlabeled,
                                   budget=budget, options=options, generator=generator(split.seed, "query", b),
                                   device=device, config=cfg, iteration=b, batch_size=args.eval_batch,
                                   progress=False)
                result = ACQUISITIONS[cfg.acquisition](ctx)
                scores = pseudo_label_rare_scores(result.pseudo_labels, true, rare)
                picked = data.pool_source.labels[split.pool[result.indices]]
                row = {"precision": scores["pseudo_label_rare_precision"],
                       "recall": scores["pseudo_label_rare_recall"], "said": scores["pseudo_label_rare_count"],
                       "rare": int(np.isin(true, rare).sum()), "picked": int(np.isin(picked, rare).sum())}
                rows.setdefault((s, b), []).append(row)
                print(f"run{run} b={b} {cfg.name}: rare precision {row['precision']:.1f}%, recall "
                      f"{row['recall']:.1f}%, {row['said']} called rare of which {row['rare']} are, "
                      f"{row['picked']} of {budget} picks rare", flush=True)
    print(f"\nMNIST IR={ir}, runs {' '.join(map(str, args.runs))}: the queries of {args.reference} replayed "
          f"(mean ± std over runs)\n")
    print(f"| S | b | rare precision (%) | rare recall (%) | pool images called rare | rare picks of {budget} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (s, b), values in rows.items():
        cells = [_spread([v[k] for v in values]) for k in ("precision", "recall", "said", "picked")]
        print(f"| {s} | {b} | " + " | ".join(cells) + " |")
    return 0


def _spread(values: list) -> str:
    """Mean ± sample std of the values that are not None, as the comparison tables print it."""
    values = [v for v in values if v is not None]
    return format_spread(*mean_std(values)) if values else "–"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
