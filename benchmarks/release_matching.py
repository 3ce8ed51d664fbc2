"""The matching of Algorithm 1 against the 2021 reference release's, side by side on the same inputs: seconds and
resident memory of each.

    python benchmarks/release_matching.py --release PATH/al-fk-self-supervision --pool 200000 --centers 1250

Both sides get the same generated descriptors and Fisher scores, L = 768 (two scales, 256 + 512, as the SVHN and
ImageNet ResNets' block3 + block4), ``--centers`` misclassified validation images (no more than the budget, so both
match every one of them, without k-center greedy) and ``--pool`` pool rows, each in a process of its own with one
thread:

* this project: ``fisher_kernel_select`` on the raw features, standardized in place (``Features.standardize_``),
  kernel R_z + R_g (``pfk-sum``, the sum the release computes) with ``--standardize release``;
* the release: the lines of ``svhn/main_descr.py`` from ``fvec_miss = descr_miss[...]`` to
  ``topindex_sim = sortedindex_sim[0:args.augment_size]`` (standardization, chunked similarities, per-center
  top-32 and their merge), read from a checkout of github.com/gudovskiy/al-fk-self-supervision given by
  ``--release`` and run as they are on the same arrays laid out as it reads them (``[N, L, 2]``: z and g). Nothing
  of the release is copied here; without ``--release`` only this project's side runs.

Printed per side: the features' own size, the resident memory once they are loaded, the peak resident memory
(``ru_maxrss``), the extra memory the matching took above the loaded features, and the matching's seconds; and how
many of the picks the two sides share (they standardize alike; ties and float sums may order a few differently).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTHS = (256, 512)
RELEASE_FILE = "svhn/main_descr.py"
START = re.compile(r"^\s*fvec_miss\s*=\s*descr_miss\[")
STOP = re.compile(r"^\s*topindex_sim\s*=\s*sortedindex_sim\[0:args\.augment_size\]")


def rss_mb() -> float:
    """The process's resident memory now, in MB (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_inputs(folder: Path, pool: int, centers: int, seed: int) -> None:
    """Descriptors and Fisher scores as the release stores them, ``[N, L, 2]`` float32 (z, g), for the
    misclassified validation images and the pool."""
    rng = np.random.default_rng(seed)
    L = sum(WIDTHS)
    for name, n in (("val", centers), ("pool", pool)):
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, L, 2))
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            out[start:stop] = rng.standard_normal((stop - start, L, 2), dtype=np.float32) + \
                rng.random((stop - start, 1, 1), dtype=np.float32)
        out.flush()
        edges = np.cumsum((0,) + WIDTHS)                  # the same numbers, one file per scale and kind
        for kind, k in (("z", 0), ("g", 1)):
            for j, (a, b) in enumerate(zip(edges, edges[1:])):
                np.save(folder / f"{name}_{kind}{j}.npy", np.ascontiguousarray(out[:, a:b, k]))
        del out


def run_ours(folder: Path, budget: int) -> dict:
    import torch
    from fkal.acquisitions.fisher_kernel import fisher_kernel_select
    from fkal.kernels import Features

    torch.set_num_threads(1)

    def load(name: str) -> Features:                                            # [N, L_j] per scale, as extracted
        return Features([torch.from_numpy(np.load(folder / f"{name}_z{j}.npy")) for j in range(len(WIDTHS))],
                        [torch.from_numpy(np.load(folder / f"{name}_g{j}.npy")) for j in range(len(WIDTHS))])
    val, pool = load("val"), load("pool")
    loaded = rss_mb()
    t0 = time.perf_counter()
    val.standardize_("release")
    pool.standardize_("release")
    picks, _ = fisher_kernel_select(val, np.arange(len(val)), pool, budget, kernel="pfk-sum")
    seconds = time.perf_counter() - t0
    return {"loaded_mb": loaded, "peak_mb": peak_mb(), "seconds": seconds, "picks": picks.tolist()}


def run_release(folder: Path, budget: int, release: Path) -> dict:
    import random
    import types

    import torch

    torch.set_num_threads(1)
    lines = (release / RELEASE_FILE).read_text().splitlines()
    start = next((i for i, s in enumerate(lines) if START.match(s)), None)
    stop = next((i for i, s in enumerate(lines) if STOP.match(s)), None)
    if start is None or stop is None or stop < start:
        raise SystemExit(f"error: {release / RELEASE_FILE} has no matching block from 'fvec_miss = descr_miss[' to "
                         "'topindex_sim = sortedindex_sim[0:args.augment_size]': give a checkout of "
                         "github.com/gudovskiy/al-fk-self-supervision")
    block = lines[start:stop + 1]
    indent = len(block[0]) - len(block[0].lstrip())
    code = "\n".join(s[indent:] if s.strip() else "" for s in block)
    descr_miss = torch.from_numpy(np.load(folder / "val.npy"))
    descr_avail = torch.from_numpy(np.load(folder / "pool.npy"))
    loaded = rss_mb()
    random.seed(0)
    scope = {"torch": torch, "random": random, "np": np, "descr_miss": descr_miss, "descr_avail": descr_avail,
             "args": types.SimpleNamespace(augment_size=budget, augment_method="topKandPccFprGrad"),
             "device": torch.device("cpu"), "L": sum(WIDTHS), "M": len(descr_miss), "P": len(descr_avail),
             "K": 32, "S": 256, "I": [0, WIDTHS[0], sum(WIDTHS)], "print": lambda *a, **k: None}
    t0 = time.perf_counter()
    exec(compile(code, str(release / RELEASE_FILE), "exec"), scope)
    seconds = time.perf_counter() - t0
    return {"loaded_mb": loaded, "peak_mb": peak_mb(), "seconds": seconds,
            "picks": [int(i) for i in scope["topindex_sim"]]}


def child(side: str, folder: str, budget: int, release: str) -> None:
    result = run_ours(Path(folder), budget) if side == "ours" else run_release(Path(folder), budget, Path(release))
    print(json.dumps(result))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--release", type=Path, default=None, help="a checkout of gudovskiy/al-fk-self-supervision")
    p.add_argument("--pool", type=int, default=200_000, help="pool rows N")
    p.add_argument("--centers", type=int, default=1_250, help="misclassified validation images = centers = budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        side, folder, budget, release = args.child
        child(side, folder, int(budget), release)
        return 0
    if args.release is not None and not (args.release / RELEASE_FILE).is_file():
        print(f"error: --release {args.release} holds no {RELEASE_FILE}: give a checkout of "
              "github.com/gudovskiy/al-fk-self-supervision", file=sys.stderr)
        return 2
    features_mb = args.pool * sum(WIDTHS) * 2 * 4 / 2 ** 20
    print(f"pool {args.pool:,} rows, L = {sum(WIDTHS)} (z and g: {features_mb:,.0f} MB as float32), "
          f"{args.centers:,} centers, budget {args.centers:,}, one thread per side")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="release-matching-") as folder:
        write_inputs(Path(folder), args.pool, args.centers, args.seed)
        for side in ("ours", "release") if args.release else ("ours",):
            out = subprocess.run([sys.executable, __file__, "--child", side, folder, str(args.centers),
                                  str(args.release or "")], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(out.stderr.strip(), file=sys.stderr)
                return out.returncode
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[side] = r
            extra = r["peak_mb"] - r["loaded_mb"]
            print(f"{side:8s} loaded {r['loaded_mb']:,.0f} MB, peak {r['peak_mb']:,.0f} MB, matching took "
                  f"{extra:,.0f} MB more than the loaded features ({extra / features_mb:.2f}x their size), "
                  f"{r['seconds']:.1f} s")
    if len(results) == 2:
        shared = len(set(results["ours"]["picks"]) & set(results["release"]["picks"]))
        a, b = results["ours"], results["release"]
        print(f"picks in common: {shared} of {args.centers}; extra memory {a['peak_mb'] - a['loaded_mb']:,.0f} MB "
              f"(ours) against {b['peak_mb'] - b['loaded_mb']:,.0f} MB (release); {b['seconds'] / a['seconds']:.2f}x "
              "the release's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
