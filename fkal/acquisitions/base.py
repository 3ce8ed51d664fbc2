"""BASE: balanced selection by distance to the decision boundaries (Emam, Chu, Chiang, Czaja, Leapman, Goldblum, Goldstein,
"Active Learning at the ImageNet Scale", arXiv 2111.12880).

With penultimate features h, classifier rows w_c and biases b_c (logits z_c = w_c . h + b_c) and predicted class
y^ = argmax_c z_c, the Euclidean distance from h to the boundary between y^ and c is

    r_c = (z_y^ - z_c) / ||w_y^ - w_c||        (r_y^ = +inf).

Every class c gets a quota of the budget, ``P // C`` plus one for the first ``P mod C`` classes, and takes, in turn
(class 0 first), its quota of the images not taken yet with the smallest

    d_c = min_c' r_c'   for the images predicted as c (their distance to their nearest boundary),
    d_c = r_c           for the others (their distance to c's region).

So each class gets the images closest to it: its own uncertain images and the other classes' images nearest its
boundary, a class-balanced batch even where c is rarely predicted. Scaling W and b by a positive constant changes
no distance.

Follows the authors' code (zeyademam/active_learning, ``query_strategies/base_sampler.py`` and the margin
computation of ``mase_sampler.py``): classes take their quotas in index order; the boundary radius is
``|z_y^ - z_c| / ||w_y^ - w_c||`` with 0/0 (c = y^, or two equal rows of W) read as +inf. Images taken by an earlier
class are excluded outright (the authors set them to +inf, so a class whose quota exceeds its finite distances
could take one again; their assert would fail). Equal distances are taken in index order (a stable choice; the
authors' ``torch.sort`` leaves it unspecified).

Memory: the logits ``[N, C]`` (the size of the softmax outputs) plus O(N) and a few blocks of ``SCAN_ELEMENTS``
logits; from features the logits are computed in row blocks.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .coreset import penultimate_outputs

ROW_BLOCK = 1 << 16          # rows of logits computed at a time
SCAN_ELEMENTS = 1 << 22      # logits scanned at a time for the nearest boundary (a few [rows, C] temporaries)


def class_quotas(budget: int, num_classes: int) -> torch.Tensor:
    """``[C]`` int64: ``P // C`` each, plus one for the first ``P mod C`` classes (P = 7, C = 3: 3, 2, 2)."""
    q = torch.full((num_classes,), budget // num_classes, dtype=torch.long)
    q[:budget % num_classes] += 1
    return q


def logits_from_features(features: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         row_block: int = ROW_BLOCK) -> torch.Tensor:
    """``h W^T + b``: ``[N, C]`` from features ``[N, d]``, weight ``[C, d]``, bias ``[C]``, in row blocks."""
    out = torch.empty(len(features), len(weight), dtype=torch.promote_types(features.dtype, weight.dtype))
    for r in range(0, len(features), row_block):
        z = features[r:r + row_block] @ weight.T
        out[r:r + row_block] = z if bias is None else z + bias
    return out


def weight_gaps(weight: torch.Tensor, block_elements: int = 1 << 24) -> torch.Tensor:
    """``||w_a - w_c||`` for every pair of classes: ``[C, C]``, from exact differences (not the Gram shortcut, which
    leaves a rounding residue where two rows are equal), a block of rows at a time (memory ~``block_elements``)."""
    c, d = weight.shape
    out = torch.empty(c, c, dtype=weight.dtype)
    rows = max(1, block_elements // max(1, c * d))
    for a in range(0, c, rows):
        out[a:a + rows] = torch.linalg.vector_norm(weight[a:a + rows, None, :] - weight[None, :, :], dim=2)
    return out


def _radius(gap: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """gap / norm with 0/0 and x/0 read as +inf (the authors: nan -> inf)."""
    r = gap / norm
    return torch.where(torch.isnan(r) | (norm == 0), torch.full_like(r, float("inf")), r)


def boundary_distances(logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``r[x, c]`` = distance from image x's features to the boundary between its predicted class and c: ``[N, C]``
    (+inf at the predicted class). Meant for small pools and tests; :func:`base_select` never builds it."""
    gaps = weight_gaps(weight)
    pred = logits.argmax(1)
    z_top = logits.gather(1, pred[:, None])
    return _radius(z_top - logits, gaps[pred])


def base_select(weight: torch.Tensor, budget: int, logits: Optional[torch.Tensor] = None,
                features: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                labeled: Optional[torch.Tensor] = None, row_block: int = ROW_BLOCK
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BASE's batch: (indices ``[budget]`` int64 distinct rows, class by class in index order; their d_c ``[budget]``).

    weight ``[C, d]``: the classifier layer's rows; logits ``[N, C]`` (= features W^T + b), or features ``[N, d]``
    with bias ``[C]`` to compute them; labeled ``[N]`` bool: rows never taken (default none).
    """
    if logits is None:
        if features is None:
            raise ValueError("give logits, or features (with bias) to compute them")
        logits = logits_from_features(features, weight, bias, row_block)
    n, c = logits.shape
    if weight.shape[0] != c:
        raise ValueError(f"weight has {weight.shape[0]} rows but logits have {c} classes")
    taken = torch.zeros(n, dtype=torch.bool) if labeled is None else labeled.clone().bool()
    available = n - int(taken.sum())
    if budget < 0 or budget > available:
        raise ValueError(f"budget {budget} is not in [0, {available}] (the number of unlabeled images)")
    gaps = weight_gaps(weight).to(logits.dtype)                              # [C, C]
    pred = torch.empty(n, dtype=torch.long)
    z_top = torch.empty(n, dtype=logits.dtype)
    nearest = torch.empty(n, dtype=logits.dtype)                             # min_c r_c
    scan = max(1, SCAN_ELEMENTS // c)
    for r in range(0, n, scan):
        z = logits[r:r + scan]                                               # [B, C]
        p = z.argmax(1)
        zt = z.gather(1, p[:, None])
        pred[r:r + scan], z_top[r:r + scan] = p, zt[:, 0]
        nearest[r:r + scan] = _radius(zt - z, gaps[p]).min(1).values
    quotas = class_quotas(budget, c)
    picks, scores = [], []
    for k in range(c):
        q = int(quotas[k])
        if q == 0:
            continue
        d = _radius(z_top - logits[:, k], gaps[pred, k])                     # [N] r_k
        d = torch.where(pred == k, nearest, d)
        idx = smallest_untaken(d, taken, q)
        taken[idx] = True
        picks.append(idx)
        scores.append(d[idx])
    if not picks:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=logits.dtype)
    return torch.cat(picks), torch.cat(scores)


def smallest_untaken(values: torch.Tensor, taken: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest ``values`` among rows not ``taken``, ascending by (value, index): ``[k]``.

    O(N): one ``topk`` for the k-th value, then every row below it and the first rows equal to it (NaN counts as
    +inf)."""
    v = torch.where(taken | torch.isnan(values), torch.full_like(values, float("inf")), values)
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    kth = torch.topk(v, k, largest=False, sorted=True).values[-1]
    below = torch.nonzero((v < kth) & ~taken).flatten()
    equal = torch.nonzero((v == kth) & ~taken).flatten()[:k - len(below)]
    idx = torch.cat([below, equal])
    return idx[torch.sort(v[idx], stable=True).indices]


# ---------------------------------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------------------------------

def classifier_layer(model: nn.Module) -> nn.Linear:
    """The last layer, named by ``type(model).classifier`` (``fc2`` for LeNet, ``fc`` for the ResNets)."""
    name = getattr(type(model), "classifier", None)
    try:
        layer = model.get_submodule(name) if name else None
    except AttributeError:
        layer = None
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"{type(model).__name__} names no linear classifier layer (class attribute 'classifier')")
    return layer


def base_query(ctx: QueryContext) -> QueryResult:
    """BASE on ``models[0]``: features h = relu(penultimate tap) of the unlabeled images and the classifier
    layer's W, b; scores are each pick's distance d_c for the class that took it."""
    model = ctx.models[0]
    unlabeled = np.asarray(ctx.unlabeled)
    _, feats = penultimate_outputs(model, ctx.data.pool_source, ctx.data.split.pool[unlabeled], ctx.device,
                                   ctx.batch_size, desc=ctx.describe("features"))
    layer = classifier_layer(model)
    weight = layer.weight.detach().float().cpu()
    bias = None if layer.bias is None else layer.bias.detach().float().cpu()
    picks, dist = base_select(weight, ctx.budget, features=feats, bias=bias)
    return QueryResult(unlabeled[picks.numpy()], dist.numpy())


SPECS = (AcquisitionSpec("base", base_query, title="BASE", example=Example("base", bars=("features",))),)
