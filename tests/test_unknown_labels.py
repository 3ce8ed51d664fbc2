"""Acquisitions on a pool whose labels are unknown (-1), as in a labeling round on the user's own images."""
from __future__ import annotations

import numpy as np
import torch

from fkal.acquisitions.registry import ACQUISITIONS
from fkal.config import parse_config
from fkal.descriptors import extract
from fkal.kernels import Features
from fkal.models import taps_for
from fkal.pseudo_labels import NearestValidation


def _phat_labels(ctx) -> np.ndarray:
    """p^(y, z) of every unlabeled image, recomputed apart from the query: nearest D_v image under R_z."""
    model, data = ctx.models[0], ctx.data
    taps = taps_for(model, ctx.config.L)
    val, _, _ = extract(model, data.val_source, data.split.val, taps, ctx.device, 64, fisher=False)
    pool, _, _ = extract(model, data.pool_source, data.split.pool[ctx.unlabeled], taps, ctx.device, 64, fisher=False)
    est = NearestValidation(Features(val.standardized().z), torch.as_tensor(data.val_labels), 10)
    labels, _ = est(model, None, pool.z[0], None, pool.z)          # (logits only give the device)
    return labels.numpy()


def test_pseudo_label_accuracy_counts_only_known_labels(query_ctx):
    cfg = parse_config("pfk-phat-L80", ACQUISITIONS)
    full = query_ctx(cfg)
    before = ACQUISITIONS["pfk"](full)
    ctx = query_ctx(cfg)
    labels = ctx.data.pool_source.labels
    true = labels[ctx.data.split.pool[ctx.unlabeled]].copy()
    hidden = ctx.unlabeled[::2]                                   # every other unlabeled image loses its label
    labels[ctx.data.split.pool[hidden]] = -1
    ctx.data.split.pool_labels[hidden] = -1
    result = ACQUISITIONS["pfk"](ctx)
    np.testing.assert_array_equal(result.indices, before.indices)     # p^ never reads the pool's labels
    phat = _phat_labels(ctx)
    known = np.ones(len(ctx.unlabeled), bool)
    known[::2] = False
    assert result.pseudo_label_accuracy == 100.0 * (phat[known] == true[known]).mean()
    assert before.pseudo_label_accuracy == 100.0 * (phat == true).mean()


def test_pseudo_label_accuracy_is_none_when_no_label_is_known(query_ctx):
    ctx = query_ctx("pfk-phat-L80")
    ctx.data.pool_source.labels[ctx.data.split.pool] = -1
    ctx.data.split.pool_labels[:] = -1
    result = ACQUISITIONS["pfk"](ctx)
    assert result.pseudo_label_accuracy is None
    assert len(np.unique(result.indices)) == ctx.budget
