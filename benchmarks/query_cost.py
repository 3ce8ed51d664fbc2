#!/usr/bin/env python
"""Query cost of one active-learning iteration, measured (the paper's Table 1, Gudovskiy et al., CVPR 2020).

Table 1 counts DNN passes per AL phase: MC-dropout uncertainty costs E*K*N_u forward passes over the N_u unlabeled
images, the practical Fisher kernel 2(M + N_u) (one forward and one backward over the M validation images and the
pool), so uncertainty is E*K/2 times dearer when N_u >> M: 64x for varR with E=1, K=128. This script times one
query of each, on the same biased MNIST pool on the same machine, plus one plain forward pass over pool and
validation set (the unit of Table 1), and prints the measured ratios beside Table 1's.

    python benchmarks/query_cost.py --data-root ../shared/datasets            # IR=100 split of run 0, fresh LeNet
    python benchmarks/query_cost.py --state local_data/MNIST/run0/ir100/init_rotation.pt
    python benchmarks/query_cost.py --train-size 2000 --val-size 500          # a quick check of the script
    python benchmarks/query_cost.py --skip-uncertainty --also coreset vaal tavaal lloss   # the other baselines
    python benchmarks/query_cost.py --clock cpu --skip-uncertainty --also badge typiclust  # CPU s, under load too

The model is a fresh LeNet or the one in ``--state`` (an initial model or an iteration state); a random
``--labeled`` pool images are labeled, mimicking iteration 2 (P=125 labels per iteration, 250 after two). The
cheap steps (plain forward, Fisher-kernel query) run once untimed first, so that first-call costs are left out.
On 2 CPU cores the full pool (about 25k unlabeled images, 3.2M varR forward passes) takes about 10 minutes.

``--clock wall`` (the default) times wall seconds: right on an otherwise idle machine and on a GPU. ``--clock cpu``
times the CPU seconds of this process (``time.process_time``, all its threads): with ``OMP_NUM_THREADS=1`` that is
the wall time the step would take on one idle core, and other load on the machine barely changes it. TypiClust
clusters the features of the run's rotation-pretrained model: ``--pretrained``, by default the ``init_rotation.pt``
of the run folder that ``--state`` lies in.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence


import numpy as np
import torch

from fkal.acquisitions.contract import QueryContext
from fkal.acquisitions.registry import ACQUISITIONS, TASK_HOOKS
from fkal.cli import pick_device
from fkal.config import Config, parse_config
from fkal.data import DATASETS, ALData, make_split
from fkal.data.mnist import load_mnist
from fkal.errors import UserError
from fkal.io import load_torch
from fkal.models import build_model
from fkal.training import predict

SPEC = DATASETS["mnist"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default="local_data", help="folder that holds MNIST/raw (never downloaded here)")
    p.add_argument("--imbalance-ratio", type=float, default=100.0, help="class imbalance ratio IR of the split")
    p.add_argument("--seed", type=int, default=0, help="split seed (the run index) and seed of the labeled draw")
    p.add_argument("--repeats", type=int, default=1, help="time each step this many times; the median is shown")
    p.add_argument("--gpu", type=int, default=None, help="CUDA device index (default: the CPU)")
    p.add_argument("--state", default=None,
                   help="saved model: an initial model ({'model': ...}) or an iteration state ({'models': [...]}); "
                        "default: a fresh LeNet")
    p.add_argument("--pretrained", default=None,
                   help="the run's rotation-pretrained initial model (init_rotation.pt), for typiclust; default: "
                        "the one in --state's run folder, where there is one")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall seconds, or CPU seconds of this process (robust to other load; use with one thread)")
    p.add_argument("--labeled", type=int, default=250, help="pool images labeled at random before the query")
    p.add_argument("--uncertainty", default="varR-K128", help="the uncertainty configuration timed")
    p.add_argument("--fisher", default="pfk-phat-L80", help="the Fisher-kernel configuration timed")
    p.add_argument("--skip-uncertainty", action="store_true",
                   help="leave the uncertainty query out (about 6 minutes for varR-K128 on 2 CPU cores)")
    p.add_argument("--also", nargs="+", default=[], metavar="CONFIG",
                   help="more configurations timed on the same model and pool, e.g. 'coreset vaal tavaal lloss' "
                        "(their own options at their defaults; learning loss and TA-VAAL get the model wrapped "
                        "with a fresh loss prediction module, which costs what a trained one costs)")
    p.add_argument("--train-size", type=int, default=None,
                   help="pool size before the imbalance (default: the protocol's 50000); small for a quick check")
    p.add_argument("--val-size", type=int, default=None, help="validation set size (default: the protocol's 10000)")
    p.add_argument("--eval-batch", type=int, default=1000, help="inference batch size")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p.parse_args(argv)


def load_models(state: Optional[str], E: int, device: torch.device, seed: int) -> list[torch.nn.Module]:
    """E models: copies of the one in ``state`` (its members, where it holds several), or fresh LeNets."""
    if state is None:
        torch.manual_seed(seed)
        return [build_model(SPEC.model, SPEC.num_classes).to(device).eval() for _ in range(E)]
    saved = load_torch(state, "pass a state_bNN.pt or init_*.pt that run.py wrote")
    states = saved["models"] if "models" in saved else [saved["model"]]
    models = []
    for e in range(E):
        m = build_model(SPEC.model, SPEC.num_classes)
        m.load_state_dict(states[e % len(states)])
        models.append(m.to(device).eval())
    return models


def timed(fn: Callable[[], object], device: torch.device, repeats: int, clock: str = "wall") -> float:
    """Median seconds of ``repeats`` calls, synchronizing the GPU around each: wall seconds, or (``clock="cpu"``)
    the CPU seconds of this process."""
    now = time.perf_counter if clock == "wall" else time.process_time
    seconds = []
    for _ in range(repeats):
        _sync(device)
        t0 = now()
        fn()
        _sync(device)
        seconds.append(now() - t0)
    return statistics.median(seconds)


def pretrained_path(pretrained: Optional[str], state: Optional[str]) -> Optional[Path]:
    """``--pretrained``, or the ``init_rotation.pt`` of the run folder ``<run>/ir<IR>/`` that holds ``--state``
    (``.../ir100/rotation/<config>/state_bNN.pt`` or ``.../ir100/init_rotation.pt``); None where there is none."""
    if pretrained is not None:
        return Path(pretrained)
    if state is None:
        return None
    for folder in list(Path(state).resolve().parents)[:3]:
        if (folder / "init_rotation.pt").is_file():
            return folder / "init_rotation.pt"
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return (f"device {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
            f"{os.cpu_count()} CPUs")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.gpu)
    configs = [parse_config(n, ACQUISITIONS) for n in (args.uncertainty, args.fisher)]
    also = [parse_config(n, ACQUISITIONS) for n in args.also]
    raw = load_mnist(args.data_root, download=False)
    split = make_split(SPEC, raw, args.seed, args.imbalance_ratio, train_size=args.train_size,
                       val_size=args.val_size)
    data = ALData(SPEC, raw, split)
    if args.labeled >= len(split.pool):
        raise UserError(f"--labeled {args.labeled} leaves no unlabeled image in a pool of {len(split.pool)}")
    labeled = np.sort(np.random.default_rng(args.seed).choice(len(split.pool), args.labeled, replace=False))
    unlabeled = np.setdiff1d(np.arange(len(split.pool)), labeled)
    budget = min(SPEC.query_size, len(unlabeled))
    models = load_models(args.state, max(c.E for c in configs + also), device, args.seed)
    pretrained_file = pretrained_path(args.pretrained, args.state)
    pretrained = None if pretrained_file is None else load_models(str(pretrained_file), 1, device, args.seed)[0]

    def query(cfg: Config) -> Callable[[], object]:
        members = models[:cfg.E]
        hooks = TASK_HOOKS.get(cfg.acquisition)
        if hooks is not None:                   # the task model as the loop holds it: with the acquisition's head
            members = [hooks.wrap(copy.deepcopy(m), SPEC).to(device).eval() for m in members]

        def run():
            ctx = QueryContext(models=members, data=data, labeled=labeled, unlabeled=unlabeled, budget=budget,
                               generator=torch.Generator().manual_seed(args.seed), device=device, config=cfg,
                               iteration=2, batch_size=args.eval_batch, progress=not args.no_progress,
                               pretrained=None if pretrained is None else (lambda: pretrained))
            return ACQUISITIONS[cfg.acquisition](ctx)
        return run

    def plain_forward():
        predict(models[0], data.pool_source, split.pool[unlabeled], device, args.eval_batch)
        predict(models[0], data.val_source, split.val, device, args.eval_batch)

    unc, fk = configs
    plain_forward(), query(fk)()             # warm-up, untimed: first-call costs (allocator, autograd, kernels)
    t_plain = timed(plain_forward, device, args.repeats, args.clock)
    t_fk = timed(query(fk), device, args.repeats, args.clock)
    t_unc = None if args.skip_uncertainty else timed(query(unc), device, args.repeats, args.clock)
    t_also = [timed(query(cfg), device, args.repeats, args.clock) for cfg in also]

    n_u, m = len(unlabeled), len(split.val)
    EK = unc.E * (unc.K or 128)
    print(f"machine: {machine(device)}")
    print(f"split: MNIST IR={args.imbalance_ratio:g} seed {args.seed}: pool {len(split.pool)} "
          f"({len(labeled)} labeled, N_u = {n_u} unlabeled), validation M = {m}, P = {budget}; "
          f"model: {args.state or 'fresh LeNet'}; median of {args.repeats}, {args.clock} seconds")
    rows = [("plain forward (pool + val)", "M + N_u", m + n_u, t_plain),
            (fk.name, "2(M + N_u)", 2 * (m + n_u), t_fk)]
    if t_unc is not None:
        rows.append((unc.name, f"E*K*N_u, EK={EK}", EK * n_u, t_unc))
    rows += [(cfg.name, "-", None, sec) for cfg, sec in zip(also, t_also)]
    print(f"{'query':<28}{'Table 1 passes':<22}{'passes':>12}{'seconds':>10}{'x ' + fk.name:>18}"
          f"{'x forward':>12}")
    for name, formula, passes, sec in rows:
        print(f"{name:<28}{formula:<22}{'-' if passes is None else f'{passes:,}':>12}{sec:>10.2f}"
              f"{sec / t_fk:>17.2f}x{sec / t_plain:>11.2f}x")
    if t_unc is not None:
        print(f"ratio {unc.name} / {fk.name}: measured {t_unc / t_fk:.1f}x, Table 1 "
              f"{EK * n_u / (2 * (m + n_u)):.1f}x (EK/2 = {EK / 2:g}x when N_u >> M)")
    print(f"ratio {fk.name} / plain forward: measured {t_fk / t_plain:.2f}x, Table 1 2x")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
