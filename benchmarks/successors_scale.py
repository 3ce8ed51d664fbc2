"""Query time and peak memory of GALAXY, DIRECT, BASE and BADGE at SVHN and ImageNet size, on synthetic pools.

Each (size, method) runs in a fresh subprocess, so peaks do not mix. The subprocess builds a synthetic pool
(untimed, with ``--gen-threads`` threads), resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs the
pure selection function on ``--threads`` threads (default 1) and reports the wall time and the peak resident memory
of the query (VmHWM, which includes the pool's tensors already resident), next to the size of the pool's float32
softmax outputs ``N x C x 4`` bytes.

The synthetic pool: class c drawn with prior 1 for the first C/2 classes and 1/IR for the rest (the protocol's bias,
IR = 100 by default); class means mu_c ~ N(0, I_d); features h = relu(mu_y + 3.5 N(0, I_d)) (d = 512); a
classifier W = mu + N(0, I), b = 0; logits = h W^T / sqrt(d); softmax. A random P images are labeled (their true
class), the oracle returns the true class. GALAXY and DIRECT get the softmax outputs of the pool; BASE the logits
and W; BADGE the softmax outputs and the features (the labeled rows masked out).

Sizes: SVHN N = 500,000, C = 10, P = 1,250; ImageNet N = 1,280,000, C = 1,000, P = 64,000.
``--max-picks K`` stops GALAXY and BADGE after K picks (their cost grows with the picks; DIRECT and BASE always run
in full); the table then says so and gives a linear extrapolation to P, marked as such: never a measurement.

    OMP_NUM_THREADS=1 python benchmarks/successors_scale.py --size svhn
    OMP_NUM_THREADS=1 python benchmarks/successors_scale.py --size imagenet --max-picks 2000 --methods badge
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from fkal.acquisitions.badge import badge_select
from fkal.acquisitions.base import base_select
from fkal.acquisitions.direct import direct_select
from fkal.acquisitions.galaxy import galaxy_select

SIZES = {"svhn": dict(n=500_000, c=10, p=1_250), "imagenet": dict(n=1_280_000, c=1_000, p=64_000),
         "tiny": dict(n=3_000, c=6, p=60)}                    # tiny: for the tests
METHODS = ("galaxy", "direct", "base", "badge")
FEATURE_DIM = 512
CHUNK = 1 << 15


def synthetic_pool(n: int, c: int, d: int, ir: float, seed: int, need: set[str]) -> dict:
    """The pool described in the module docstring, built in row blocks: only the tensors in ``need``
    (``probs``, ``logits``, ``features``) are kept."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.ones(c)
    prior[c // 2:] /= ir
    y = torch.multinomial(prior, n, replacement=True, generator=g)
    mu = torch.randn(c, d, generator=g)
    weight = mu + torch.randn(c, d, generator=g)
    out = {"truth": y, "weight": weight}
    keep = {name: torch.empty(n, c if name != "features" else d) for name in need}
    for r in range(0, n, CHUNK):
        yy = y[r:r + CHUNK]
        h = torch.relu(mu[yy] + 3.5 * torch.randn(len(yy), d, generator=g))
        z = (h @ weight.T) / math.sqrt(d)
        if "features" in keep:
            keep["features"][r:r + CHUNK] = h
        if "logits" in keep:
            keep["logits"][r:r + CHUNK] = z
        if "probs" in keep:
            keep["probs"][r:r + CHUNK] = torch.softmax(z, 1)
    out.update(keep)
    out["weight"] = weight / math.sqrt(d)                      # the layer that produced the logits
    return out


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args) -> dict:
    size = SIZES[args.size]
    n, c, p = size["n"], size["c"], size["p"]
    method = args.child
    need = {"galaxy": {"probs"}, "direct": {"probs"}, "base": {"logits"}, "badge": {"probs", "features"}}[method]
    torch.set_num_threads(args.gen_threads)
    pool = synthetic_pool(n, c, FEATURE_DIM, args.ir, args.seed, need)
    g = torch.Generator().manual_seed(args.seed + 1)
    n_labeled = p if args.labeled is None else args.labeled
    labeled_idx = torch.randperm(n, generator=g)[:n_labeled]
    labels = torch.full((n,), -1, dtype=torch.long)
    labels[labeled_idx] = pool["truth"][labeled_idx]
    truth = pool["truth"].tolist()

    def oracle(i: int) -> int:
        return truth[i]

    picks = p if args.max_picks is None or method in ("direct", "base") else min(p, args.max_picks)
    torch.set_num_threads(args.threads)
    resident = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")              # reset VmHWM to the current RSS
    gen = torch.Generator().manual_seed(args.seed + 2)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if method == "galaxy":
        out = galaxy_select(pool["probs"], labels, picks, oracle, gen)
    elif method == "direct":
        out = direct_select(pool["probs"], labels, picks, oracle, gen)
    elif method == "base":
        out, _ = base_select(pool["weight"], picks, logits=pool["logits"], labeled=labels >= 0)
    else:
        out, _ = badge_select(pool["probs"], pool["features"], picks, gen, labeled=labels >= 0)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = _status("VmHWM")
    assert len(out) == picks and len(set(out.tolist())) == picks and bool((labels[out] < 0).all())
    return dict(size=args.size, method=method, n=n, c=c, p=p, picks=picks, seconds=seconds, cpu=cpu, peak=peak,
                resident=resident, softmax=n * c * 4, threads=args.threads)


def run_one(size: str, method: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--size", size, "--threads", str(args.threads),
           "--gen-threads", str(args.gen_threads), "--ir", str(args.ir), "--seed", str(args.seed)]
    if args.max_picks is not None:
        cmd += ["--max-picks", str(args.max_picks)]
    if args.labeled is not None:
        cmd += ["--labeled", str(args.labeled)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return dict(size=size, method=method, error=(res.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['size']} | {r['method']} | failed: {r['error']} |"
    gb = 1e9
    note = ""
    if r["picks"] < r["p"]:
        note = (f"time for {r['picks']:,} of {r['p']:,} picks; linear extrapolation to {r['p']:,}: "
                f"~{r['cpu'] * r['p'] / r['picks']:,.0f} CPU s (not measured)")
    return (f"| {r['size']} | {r['method']} | {r['n']:,} | {r['c']:,} | {r['p']:,} | {r['picks']:,} | "
            f"{r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak'] / gb:.2f} | {(r['peak'] - r['resident']) / gb:.2f} | "
            f"{r['softmax'] / gb:.2f} | {r['peak'] / r['softmax']:.2f} | {note} |")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=[*SIZES, "both"], default="svhn")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from " + ", ".join(METHODS))
    ap.add_argument("--max-picks", type=int, default=None, help="stop GALAXY and BADGE after this many picks")
    ap.add_argument("--labeled", type=int, default=None, help="labeled images before the query (default P)")
    ap.add_argument("--ir", type=float, default=100.0, help="imbalance ratio of the synthetic classes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the timed query")
    ap.add_argument("--gen-threads", type=int, default=2, help="torch threads building the synthetic pool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    sizes = ["svhn", "imagenet"] if args.size == "both" else [args.size]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}")
    print(f"query on {args.threads} thread(s); wall and CPU seconds of the query (CPU: the process's user + "
          f"system time, robust to other load on the machine); peak = VmHWM during the query (the pool's tensors "
          f"included); extra = peak - RSS before the query; softmax = N x C float32")
    print("| size | method | N | C | P | picks | wall s | CPU s | peak GB | extra GB | softmax GB | peak / softmax "
          "| note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in sizes:
        for m in methods:
            print(row(run_one(size, m, args)), flush=True)


if __name__ == "__main__":
    main()
