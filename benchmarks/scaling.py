#!/usr/bin/env python
"""Throughput of the pool pass (descriptors and Fisher scores, Algorithm 1 line 8) with 1 and 2 processes.

CPU: the same pass over a synthetic MNIST-size pool (LeNet, L = 80, S = y^) with one process and under
``torchrun --nproc_per_node 2`` (gloo), one thread per process; prints images/s, the speedup and the parallel
efficiency (speedup / 2). Where a GPU is present, ResNet-18 at 224 px: plain inference against descriptors and
Fisher scores (L = 768), with bf16 autocast and channels_last as options, and their ratio.

  python benchmarks/scaling.py                   # CPU table
  python benchmarks/scaling.py --gpu             # and the GPU table (needs CUDA)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pool_pass(n: int, batch: int, repeats: int) -> dict:
    """The timed pass, in this process (or this rank): seconds of the slowest rank, best of ``repeats``."""
    import numpy as np
    import torch
    from fkal import distributed as D
    from fkal.data import TensorSource
    from fkal.descriptors import extract_shard
    from fkal.models import lenet, taps_for
    from fkal.pseudo_labels import yhat

    torch.set_num_threads(1)
    D.init()
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
                          np.zeros(n, dtype=np.int64), (0.1307,), (0.3081,))
    torch.manual_seed(0)
    model = lenet().eval()
    taps = taps_for(model, 80)
    idx = np.arange(n)
    extract_shard(model, source, idx[:2 * batch * D.world()], taps, torch.device("cpu"), batch, estimator=yhat,
                  fisher=True)                                                   # warm-up, not timed
    best = float("inf")
    for _ in range(repeats):
        D.barrier()
        t0 = time.perf_counter()
        extract_shard(model, source, idx, taps, torch.device("cpu"), batch, estimator=yhat, fisher=True)
        local = time.perf_counter() - t0
        slowest = max(D.all_gather_object(local))
        best = min(best, slowest)
    out = {"world": D.world(), "seconds": best, "images_per_s": n / best}
    D.shutdown()
    return out


def gpu_table(n: int, batch: int) -> list[dict]:
    """ResNet-18, 224 px, on CUDA: plain inference against descriptors + Fisher scores (L = 768)."""
    import numpy as np
    import torch
    from fkal.data import TensorSource
    from fkal.descriptors import extract
    from fkal.models import resnet18, taps_for
    from fkal.pseudo_labels import yhat

    dev = torch.device("cuda", 0)
    g = torch.Generator().manual_seed(0)
    source = TensorSource(torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g),
                          np.zeros(n, dtype=np.int64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rows = []
    for bf16 in (False, True):
        for channels_last in (False, True):
            model = resnet18(num_classes=1000).to(dev).eval()
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            taps = taps_for(model, 768)

            def timed(fn) -> float:
                fn()                                                              # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            def plain():
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                    for _, x in source.batches(np.arange(n), batch):
                        x = x.to(dev, non_blocking=True)
                        model(x.to(memory_format=torch.channels_last) if channels_last else x)

            def descriptors():
                with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                    extract(model, source, np.arange(n), taps, dev, batch, estimator=yhat, fisher=True)
            p, d = timed(plain), timed(descriptors)
            rows.append({"bf16": bf16, "channels_last": channels_last, "plain_img_s": n / p,
                         "descr_img_s": n / d, "ratio": p / d})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="pool images of the CPU pass")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu", action="store_true", help="also the ResNet-18 GPU table")
    p.add_argument("--gpu-images", type=int, default=4_096)
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)      # internal: the timed pass here
    args = p.parse_args()
    if args.one:
        r = pool_pass(args.images, args.batch, args.repeats)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(r))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    me = [__file__, "--one", "--images", str(args.images), "--batch", str(args.batch), "--repeats",
          str(args.repeats)]
    results = {}
    for world in (1, 2):
        cmd = [sys.executable] + (me if world == 1 else
                                  ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + me)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        results[world] = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    speedup = results[1]["seconds"] / results[2]["seconds"]
    print(f"# pool pass (LeNet, L = 80, descriptors + Fisher scores, S = y^), {args.images:,} images, batch "
          f"{args.batch}, one thread per process, best of {args.repeats}, on {os.cpu_count()} cores")
    print("| processes | seconds | images/s |")
    print("| --- | --- | --- |")
    for world in (1, 2):
        print(f"| {world} | {results[world]['seconds']:.2f} | {results[world]['images_per_s']:,.0f} |")
    print(f"\nspeedup {speedup:.2f}, parallel efficiency {speedup / 2:.0%} (target >= 80%)")
    if args.gpu:
        import torch
        if not torch.cuda.is_available():
            print("\n(no GPU here: the ResNet-18 table needs CUDA)")
            return 0
        print(f"\n# ResNet-18, 224 px, {torch.cuda.get_device_name(0)}, {args.gpu_images} images, batch "
              f"{args.gpu_batch}")
        print("| bf16 autocast | channels_last | plain inference (img/s) | descriptors + Fisher (img/s) | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for r in gpu_table(args.gpu_images, args.gpu_batch):
            print(f"| {r['bf16']} | {r['channels_last']} | {r['plain_img_s']:,.0f} | {r['descr_img_s']:,.0f} | "
                  f"{r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
