"""Descriptors z and Fisher scores g (paper sections 4.1-4.2, the gen_descr stage).

For tap j with activation ``Z^j`` (``[B, C, H, W]`` or ``[B, C]``), ``z^j = phi(Z^j)`` and
``g^j = phi(dL(S, y^)/dZ^j)`` where phi is global average pooling and L the cross-entropy against the label S.
One forward and one backward per batch give both for every image: the gradient of the *summed* loss with
respect to a per-sample activation is that sample's own gradient, because no operation of the task model in
eval mode mixes samples.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D
from .data import TensorSource
from .kernels import Features


def pool(t: torch.Tensor) -> torch.Tensor:
    """phi: global average pool, ``[B, C, H, W] -> [B, C]``; ``[B, C]`` stays."""
    return t.mean(dim=(2, 3)) if t.dim() == 4 else t


def fisher_scores(logits: torch.Tensor, acts: Sequence[torch.Tensor], labels: torch.Tensor,
                  retain_graph: bool = False) -> list[torch.Tensor]:
    """Pooled Fisher scores ``[B, L_j]`` per tap: phi(dL_i/dZ_i^j) with L_i the cross-entropy of sample i."""
    loss = F.cross_entropy(logits.float(), labels, reduction="sum")
    grads = torch.autograd.grad(loss, list(acts), retain_graph=retain_graph)
    return [pool(gr) for gr in grads]


def per_class_fisher_scores(logits: torch.Tensor, acts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fisher scores for every class d as the label: ``[D, B, L_j]`` per tap (one backward per class).

    dL(1_d, y^)/dlogits = softmax(logits) - 1_d, pulled back to each tap.
    """
    probs = logits.detach().float().softmax(1)                              # [B, D]
    D = probs.shape[1]
    out = [[] for _ in acts]
    for d in range(D):
        upstream = probs.clone()
        upstream[:, d] -= 1.0
        grads = torch.autograd.grad(logits, list(acts), grad_outputs=upstream.to(logits.dtype), retain_graph=True)
        for j, gr in enumerate(grads):
            out[j].append(pool(gr))
    return [torch.stack(o) for o in out]


# (model, x, logits, acts, z) -> (labels [B], Fisher scores per tap for those labels, or None)
Estimator = Callable[[nn.Module, torch.Tensor, torch.Tensor, list, list], tuple[torch.Tensor, Optional[list]]]


def extract(model: nn.Module, source: TensorSource, idx: np.ndarray, taps: Sequence[str], device: torch.device,
            batch_size: int = 1000, labels: Optional[np.ndarray] = None, estimator: Optional[Estimator] = None,
            fisher: bool = True, desc: Optional[str] = None) -> tuple[Features, torch.Tensor, torch.Tensor]:
    """Descriptors (and Fisher scores) of ``source[idx]`` for the given taps, float32 on the CPU.

    The label of the Fisher score is ``labels`` (aligned with idx) or the pseudo-label of ``estimator``.
    Returns ``(features, probs [N, D], used_labels [N])``; used_labels is -1 where no label was needed. Under
    several processes each rank extracts its batches and every rank gets the whole result (``extract_shard``
    keeps them apart).
    """
    feats, probs, used, where = extract_shard(model, source, idx, taps, device, batch_size, labels, estimator,
                                              fisher, desc)
    n = len(idx)
    gather = lambda t: D.gather_rows(t, where, n)                          # noqa: E731
    return (Features([gather(z) for z in feats.z], None if feats.g is None else [gather(g) for g in feats.g]),
            gather(probs), gather(used))


def extract_shard(model: nn.Module, source: TensorSource, idx: np.ndarray, taps: Sequence[str],
                  device: torch.device, batch_size: int = 1000, labels: Optional[np.ndarray] = None,
                  estimator: Optional[Estimator] = None, fisher: bool = True, desc: Optional[str] = None,
                  sink=None) -> tuple[Features, torch.Tensor, torch.Tensor, np.ndarray]:
    """``extract`` of this rank's batches only (``fkal.distributed.sharded``): ``(features, probs, used_labels,
    positions)``, rows aligned with ``positions`` into ``idx``. With one process: everything, positions in order.

    An estimator with a ``begin_batch(global_batch_index)`` method is told each batch's index first, so that its
    randomness depends on the batch, not on the rank that computes it. ``sink`` (e.g. ``fkal.kernels.DiskFeatures``)
    receives each batch's features ``sink.append(z, g)`` instead of keeping them in memory, and is returned in
    place of the features.
    """
    model.eval()
    n = len(idx)
    n_local = len(D.my_positions(n, batch_size))
    zs: list[torch.Tensor] = []                  # [n_local, L_j] each, filled batch by batch (no list + cat copy)
    gs: list[torch.Tensor] = []
    filled = 0
    probs, used, where = [], [], []
    labels_t = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    need_grad = fisher or estimator is not None
    batches = tqdm(D.sharded(source, idx, batch_size), total=len(D.my_batches(n, batch_size)), desc=desc,
                   leave=False, disable=desc is None or not D.is_main())
    for batch_index, pos, x in batches:
        if hasattr(estimator, "begin_batch"):
            estimator.begin_batch(batch_index)
        where.append(pos)
        x = x.to(device, non_blocking=True)
        with torch.set_grad_enabled(need_grad):
            logits, tapd = model(x)
            acts = [tapd[t] for t in taps]
            z = [pool(a).detach().float() for a in acts]
            g = None
            if labels_t is not None:
                y = labels_t[pos].to(device)
            elif estimator is not None:
                y, g = estimator(model, x, logits, acts, z)
            else:
                y = torch.full((len(pos),), -1, dtype=torch.long, device=device)
            if fisher and g is None:
                g = fisher_scores(logits, acts, y)
        if sink is not None:
            sink.append([t.cpu() for t in z], [t.detach().float().cpu() for t in g] if fisher else None)
        else:
            if not zs:
                zs = [torch.empty(n_local, t.shape[1]) for t in z]
                gs = [torch.empty(n_local, t.shape[1]) for t in z] if fisher else []
            rows = slice(filled, filled + len(pos))
            for j in range(len(taps)):
                zs[j][rows] = z[j]
                if fisher:
                    gs[j][rows] = g[j].detach()
            filled += len(pos)
        probs.append(logits.detach().float().softmax(1).cpu())
        used.append(y.cpu())
    positions = np.concatenate(where) if where else np.zeros(0, dtype=np.int64)
    if not where:        # a rank with no batch (a set smaller than the world): no rows; gathers take others' widths
        empty = [torch.zeros(0, 0) for _ in taps]
        return (sink if sink is not None else Features(empty, [e.clone() for e in empty] if fisher else None),
                torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), positions)
    if sink is not None:
        return sink, torch.cat(probs), torch.cat(used), positions
    feats = Features([z[:filled] for z in zs], [g[:filled] for g in gs] if fisher else None)
    return feats, torch.cat(probs), torch.cat(used), positions
