"""fkal.select on your own model and data: a torchvision ResNet-18 trained for a few steps, then the next 50 images
to label by the paper's method (``pfk-phat``), BADGE and random, and how many of each class they hold.

    python examples/select_torchvision.py --data-root ../shared/datasets     # real MNIST (the folder holding MNIST/raw)
    python examples/select_torchvision.py                                    # generated digits-like images

The pool is biased as in the paper: classes 0-4 common, classes 5-9 twenty times rarer. The validation set D_v is
balanced: it stands for the data the model will meet. Nothing here is specific to the toolkit's own models or
data: ``model`` is any classifier ``nn.Module``, the data are tensors of the images the model takes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import fkal

RARE = (5, 6, 7, 8, 9)


def mnist_images(data_root: str | None, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` MNIST training images (or generated ones without a data root) as 3 x 32 x 32 floats, normalized."""
    g = torch.Generator().manual_seed(seed)
    if data_root:
        from fkal.data.mnist import load_mnist
        train = load_mnist(data_root, download=False).train
        pick = torch.randperm(len(train), generator=g)[:n].numpy()
        x, y = train.images[pick].float() / 255.0, torch.as_tensor(train.labels[pick])
    else:                                   # class c: a bright bar at a class-specific height, plus noise
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.rand(n, 1, 28, 28, generator=g) * 0.15
        for c in range(10):
            x[y == c, :, 3 + 2 * c:6 + 2 * c, 4:24] = 1.0
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return (x - 0.13) / 0.31, y


def biased(x: torch.Tensor, y: torch.Tensor, ratio: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep every image of classes 0-4 and one in ``ratio`` of classes 5-9."""
    g = torch.Generator().manual_seed(seed)
    keep = ~torch.isin(y, torch.tensor(RARE)) | (torch.rand(len(y), generator=g) < 1.0 / ratio)
    return x[keep], y[keep]


def per_class(x: torch.Tensor, y: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([torch.nonzero(y == c).flatten()[:count] for c in range(10)])
    return x[rows], y[rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="the folder that holds MNIST/raw (default: generated images)")
    p.add_argument("--pool", type=int, default=3000, help="images drawn before the bias")
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--steps", type=int, default=60, help="training steps on the labeled images")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    x, y = mnist_images(args.data_root, args.pool + 400, args.seed)
    val_x, val_y = per_class(x[:400], y[:400], 20)                          # D_v: balanced, 20 a class
    pool_x, pool_y = biased(x[400:], y[400:], ratio=20, seed=args.seed)     # the biased pool
    lab_x, lab_y = per_class(pool_x, pool_y, 2)                             # 2 labeled images a class
    in_lab = torch.zeros(len(pool_x), dtype=torch.bool)
    for c in range(10):
        in_lab[torch.nonzero(pool_y == c).flatten()[:2]] = True
    pool_x, pool_y = pool_x[~in_lab], pool_y[~in_lab]                       # the unlabeled pool

    model = torchvision.models.resnet18(num_classes=10)                     # random init, any classifier will do
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(args.steps):                                             # a few steps on the labeled images
        loss = F.cross_entropy(model(lab_x), lab_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    rare_share = float(torch.isin(pool_y, torch.tensor(RARE)).float().mean())
    print(f"pool: {len(pool_x)} unlabeled images, {100 * rare_share:.1f}% of them in the rare classes 5-9; "
          f"labeled: {len(lab_x)}; D_v: {len(val_x)} (balanced)")
    for name in ("pfk-phat", "badge", "random"):
        t0 = time.perf_counter()
        picks = fkal.select(name, model, pool_x, args.budget, labeled=(lab_x, lab_y), val=(val_x, val_y),
                            generator=torch.Generator().manual_seed(args.seed))
        counts = torch.bincount(pool_y[picks.indices], minlength=10).tolist()
        rare = sum(counts[c] for c in RARE)
        print(f"{picks.extras['config']:>14}: class counts {counts}, rare {rare}/{args.budget} "
              f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
