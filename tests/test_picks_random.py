"""``random`` by its definition: P of the unlabeled positions, uniformly, without replacement, from the generator."""
import numpy as np
import torch

from acquisition_cases import check_contract
from fkal.acquisitions.registry import ACQUISITIONS


def test_random_picks_every_unlabeled_position_equally_often(query_ctx):
    ctx = query_ctx("random", n_labeled=20, budget=3)
    ctx.unlabeled = ctx.unlabeled[5:15]                                       # 10 candidates, some labeled between
    counts = np.zeros(len(ctx.data.split.pool))
    firsts = set()
    for seed in range(600):
        ctx.generator = torch.Generator().manual_seed(seed)
        picked = check_contract(ctx, ACQUISITIONS["random"](ctx))
        counts[picked] += 1
        firsts.add(int(picked[0]))
    share = counts[ctx.unlabeled] / 600                                      # 3 of 10: 0.3 each
    assert counts.sum() == 1800 and counts[ctx.unlabeled].sum() == 1800
    assert np.abs(share - 0.3).max() < 0.08, share
    assert firsts == set(ctx.unlabeled.tolist())
