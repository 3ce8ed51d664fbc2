#!/usr/bin/env python
"""Memory and time of the Fisher-kernel matching as the pool grows (ImageNet scale).

For each pool size a fresh process writes synthetic descriptors and Fisher scores (L = 768 as the ResNet taps
layer3 + layer4: scales of 256 and 512) into the float16 on-disk store the query uses past ``--memory-budget``
(``fkal.kernels.DiskFeatures``), then matches the centers against them with ``topk_similar`` (R_zg, eq. 12) and
the merge of Algorithm 1, and reports the matching's seconds and the process's peak resident memory (VmHWM: the
page cache of the files is not part of it). Peak memory must not grow with the pool.

  python benchmarks/match_scale.py                         # 100k, 400k, 1.28M rows, 1,250 centers (SVHN's P)
  python benchmarks/match_scale.py --centers 50000 --device cuda   # the ImageNet query on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCALES = (256, 512)          # layer3, layer4: L = 768


def one_size(rows: int, centers: int, budget_picks: int, device: str, chunk: int, seed: int) -> dict:
    """Write ``rows`` synthetic standardized rows to disk, match ``centers`` against them; in this process."""
    import torch
    from fkal.kernels import DiskFeatures, Features, pfk, topk_similar
    from fkal.selection import merge_by_rank

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    g = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="match-scale-") as folder:
        store = DiskFeatures(folder, dev)
        t0 = time.perf_counter()
        for start in range(0, rows, chunk):                                     # the pool, written in chunks
            n = min(chunk, rows - start)
            store.append([torch.randn(n, w, generator=g) for w in SCALES],
                         [torch.randn(n, w, generator=g) for w in SCALES])
        write_seconds = time.perf_counter() - t0
        c = Features([torch.randn(centers, w, generator=g) for w in SCALES],
                     [torch.randn(centers, w, generator=g) for w in SCALES]).standardized().to(dev)
        k = max(4, 2 * -(-budget_picks // centers))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        values, ranked = topk_similar(pfk, c, store, k)                         # [C, k]
        picked = merge_by_rank(ranked, values, budget_picks)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        match_seconds = time.perf_counter() - t0
        disk_bytes = sum(p.stat().st_size for p in Path(folder).iterdir())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss                # Linux: KiB
    return {"rows": rows, "centers": centers, "k": k, "picked": len(picked), "write_s": write_seconds,
            "match_s": match_seconds, "peak_rss_mb": peak_kib / 1024, "disk_mb": disk_bytes / 2 ** 20,
            "float32_pool_mb": rows * sum(SCALES) * 2 * 4 / 2 ** 20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000, 1_280_000])
    p.add_argument("--centers", type=int, default=1_250, help="matched validation centers (SVHN's P: 1,250; "
                   "ImageNet: up to 50,000)")
    p.add_argument("--picks", type=int, default=1_250, help="images selected (P)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=32_768, help="rows written and matched per chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)    # internal: run one size here
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.centers, args.picks, args.device, args.chunk, args.seed)))
        return 0
    print(f"# matching R_zg, L = 768 ({'+'.join(map(str, SCALES))}), float16 pool on disk, {args.centers} centers, "
          f"P = {args.picks}, device {args.device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| pool rows | float32 pool (MB) | on disk (MB) | write (s) | match (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = []
    for rows in args.rows:
        out = subprocess.run([sys.executable, __file__, "--one", str(rows), "--centers", str(args.centers),
                              "--picks", str(args.picks), "--device", args.device, "--chunk", str(args.chunk),
                              "--seed", str(args.seed)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"| {rows:,} | {r['float32_pool_mb']:,.0f} | {r['disk_mb']:,.0f} | {r['write_s']:.1f} | "
              f"{r['match_s']:.1f} | {r['peak_rss_mb']:,.0f} |", flush=True)
    if len(results) > 1:
        ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(f"\npeak RSS at {results[-1]['rows']:,} rows / at {results[0]['rows']:,} rows: {ratio:.2f} "
              f"(target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
