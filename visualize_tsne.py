#!/usr/bin/env python
"""Confusion matrices and t-SNE of test-set features for several configurations at one AL iteration
(the paper's Figure 6: MNIST, IR=100, b=3, varR-K128 / pfk-phat-L80 / pfk-y-L80).

Reads the iteration states that ``run.py`` saved under ``{out}/{DATASET}/run{r}/ir{IR}/``; prints the per-class
test accuracy of the under-represented classes and writes ``tsne_b{b}.png`` and ``.pdf``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fkal.acquisitions.registry import ACQUISITIONS
from fkal.cli import pick_device
from fkal.data import get_spec, load_raw
from fkal.diagnostics import Panel, confusion_matrix, features_and_predictions, figure, tsne
from fkal.errors import UserError
from fkal.io import load_torch
from fkal.run_state import RunPaths, Settings, load_models
from fkal.reporting.figures import save_figure
from fkal.config import parse_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=None, help="folder that holds the dataset; default: --out")
    p.add_argument("--out", default="local_data")
    p.add_argument("--run", type=int, default=0)
    p.add_argument("--imbalance-ratio", type=float, default=100.0)
    p.add_argument("--unsupervised", type=int, choices=(0, 1), default=1)
    p.add_argument("--iteration", type=int, default=3, help="AL iteration b whose models are shown")
    p.add_argument("--configs", nargs="+", default=["varR-K128", "pfk-phat-L80", "pfk-y-L80"])
    p.add_argument("--tap", default=None, help="feature tap for t-SNE (default: the model's penultimate layer)")
    p.add_argument("--samples", type=int, default=2000, help="test images in the t-SNE")
    p.add_argument("--rare", type=int, nargs="+", default=None, help="under-represented classes (default: dataset's)")
    p.add_argument("--figures", default=None, help="output folder (default: {out}/{DATASET}/figures)")
    p.add_argument("--gpu", type=int, default=None, help="CUDA device index (default: the CPU)")
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    spec = get_spec(args.dataset)
    device = pick_device(args.gpu)                     # before anything touches CUDA (fkal.device)
    raw = load_raw(spec, args.data_root or args.out, False, device)
    s = Settings(out=Path(args.out), spec=spec, train=spec.train, unsup=spec.unsup, query_size=spec.query_size,
                 iterations=spec.iterations, device=device)
    paths = RunPaths.of(args.out, spec, args.run)
    rare = args.rare if args.rare is not None else list(spec.rare_classes)
    rng = np.random.default_rng(args.run)
    subset = np.sort(rng.choice(len(raw.test), min(args.samples, len(raw.test)), replace=False))
    panels = []
    for name in args.configs:
        cfg = parse_config(name, ACQUISITIONS)
        path = paths.state(args.imbalance_ratio, args.unsupervised, name, args.iteration)
        if not path.exists():
            raise UserError(f"{path} does not exist: run `python run.py --only {name} --run-start {args.run} "
                            f"--run-stop {args.run + 1} --imbalance-ratios {args.imbalance_ratio:g} "
                            f"--unsupervised {args.unsupervised}` through iteration {args.iteration} first")
        state = load_torch(path, "run the configuration again to rewrite it")
        model = load_models(s, state["models"][:1], cfg.acquisition, wrapped=True)[0]
        tap = args.tap or model.penultimate
        feats, preds = features_and_predictions(model, raw.test, np.arange(len(raw.test)), tap, device)
        labels = raw.test.labels
        conf = confusion_matrix(labels, preds, spec.num_classes)
        per_class = 100.0 * np.diag(conf) / np.maximum(conf.sum(1), 1)
        print(f"{name}: test accuracy {100.0 * (preds == labels).mean():.2f}%; under-represented classes "
              + ", ".join(f"{c}: {per_class[c]:.1f}%" for c in rare)
              + f"; their mean {per_class[rare].mean():.1f}%")
        panels.append(Panel(title=f"{name} (b={args.iteration}, {int(state['labeled_at'].ge(0).sum())} labels)",
                            confusion=conf, embedding=tsne(feats[subset], seed=args.run), labels=labels[subset],
                            wrong=preds[subset] != labels[subset]))
    fig = figure(panels, spec.num_classes, suptitle=f"{spec.folder} run {args.run}, IR={args.imbalance_ratio:g}, "
                                                    f"{'rotation-pretrained' if args.unsupervised else 'random init'}")
    folder = Path(args.figures) if args.figures else Path(args.out) / spec.folder / "figures"
    stem = folder / f"tsne_ir{args.imbalance_ratio:g}_b{args.iteration}"
    save_figure(fig, stem, dpi=110)
    print(f"wrote {stem}.png and {stem}.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
