"""The paper's acquisition (Algorithm 1): ``pcc`` (R_z, eq. 6), ``pfk`` (R_zg, eq. 12) and ``pfk-sum`` (R_z + R_g,
the authors' code release).

Distribution matching between the misclassified validation images and the unlabeled pool. The scores are pure
functions elsewhere (``fkal.kernels``, ``fkal.selection``, ``fkal.pseudo_labels``); this module wires them to the
model and the data.

Two options (``add_arguments``) reproduce the release's own selection choices; the defaults are this project's:
``--taps pre|post`` (descriptors and Fisher scores before or after the ReLU: ``fkal.models``) and
``--standardize unit|release`` (each scale of unit norm, or weighed L_j - 1 as in the release: ``fkal.kernels``).
With ``--taps post --standardize release`` and ``pfk-sum-phat-L80`` the selection is the release's (its epoch
choice and p^ details aside: docs/method.md, "Where the authors' release differs").
"""
from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from .. import distributed as D
from ..arguments import number
from ..data import ALData
from ..descriptors import extract, extract_shard
from ..kernels import KERNELS, NEEDS_FISHER, STANDARDIZATIONS, DiskFeatures, Features, Kernel, topk_similar
from ..models import TAP_POINTS, taps_at, taps_for
from ..pseudo_labels import build_estimator
from ..selection import kcenter_greedy, merge_by_rank
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult, always

DEFAULT_MEMORY_BUDGET_GB = 4.0   # --memory-budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``pcc``, ``pfk`` and ``pfk-sum``: two reproduce the authors' release (recorded in every
    record's settings as ``taps`` and ``standardize``), one bounds their memory on large pools."""
    group = parser.add_argument_group("Fisher-kernel selection (pcc, pfk, pfk-sum)")
    group.add_argument("--taps", choices=TAP_POINTS, default="pre",
                       help="where descriptors z and Fisher scores g are taken: pre (before each tapped layer's ReLU; "
                            "g is the paper's dL/dz~) or post (after it, as the authors' release does: LeNet "
                            "relu(pool(conv1)), relu(pool(conv2)), relu(fc1)). The ResNet taps end in a ReLU: "
                            "both give the same taps there")
    group.add_argument("--standardize", choices=tuple(STANDARDIZATIONS), default="unit",
                       help="per image and per scale: unit (zero mean, unit norm: every scale weighs the same) or "
                            "release ((v - mean) / (std + 1e-10), unbiased std, as the release: scale j weighs "
                            "L_j - 1)")
    group.add_argument("--memory-budget", type=number(0, above=True), default=DEFAULT_MEMORY_BUDGET_GB,
                       metavar="GB",
                       help="where one process's share of the pool's descriptors and Fisher scores would take more "
                            "than this many GB as float32, they are written to float16 files in the temporary "
                            "folder ($TMPDIR) and the matching streams them, so memory stays bounded whatever the "
                            "pool size (records say pool_features: disk-float16)")


def selection_options(options: dict) -> tuple[str, str]:
    """``(taps, standardize)`` from the command line's options (the defaults where absent)."""
    return options.get("taps") or "pre", options.get("standardize") or "unit"


def _pool_estimator(model: nn.Module, data: ALData, unlabeled: np.ndarray, taps: tuple[str, ...],
                    pseudo: Optional[str], val_std: Features, device: torch.device, batch_size: int, k: int,
                    generator: torch.Generator, standardization: str, desc: Optional[str] = None):
    """The estimator of S, ready for ``extract``: one that needs the whole pool first (``prepare``, e.g. the EM
    prior correction of ``phat-em``) gets its forward pass over the unlabeled pool here (gathered from every rank,
    so that every rank estimates the same priors). ``val_std`` may be on any device: it is moved to ``device``,
    where the estimator's validation labels are."""
    if pseudo in (None, "y"):
        return None
    estimator = build_estimator(pseudo, val_std.to(device), torch.as_tensor(data.val_labels, device=device),
                                data.spec.num_classes, taps, k, generator, standardization, rare=rare_classes(data))
    if hasattr(estimator, "prepare"):
        estimator.prepare(model, data.pool_source, data.split.pool[unlabeled], taps, device, batch_size,
                          desc=None if desc is None else f"{desc} (prior estimation)")
    return estimator


def rare_classes(data: ALData) -> tuple[int, ...]:
    """The classes the bias decimated, for the estimators that treat them apart (``phat-agree``): none on a
    balanced split (IR = 1), where the protocol's rare classes are not rare."""
    if data.split.imbalance_ratio <= 1 or not data.split.rare_classes:
        return ()
    return tuple(int(c) for c in data.split.rare_classes)


def misclassified(val_probs: torch.Tensor, val_labels: np.ndarray) -> np.ndarray:
    """M^ (Algorithm 1, lines 3-4): positions of the validation images the model gets wrong; all of them when it
    gets none wrong (then the whole validation set is matched)."""
    wrong = np.flatnonzero(val_probs.argmax(1).numpy() != val_labels)
    return wrong if len(wrong) else np.arange(len(val_labels))


def kcenter_centers(similarity_to, n: int, budget: int, generator: torch.Generator) -> np.ndarray:
    """Lines 5-7: ``budget`` centers among n misclassified images by k-center greedy under the kernel, the first
    drawn from ``generator``. ``similarity_to(i) -> [n]``."""
    first = int(torch.randint(n, (1,), generator=generator))
    return kcenter_greedy(similarity_to, n, budget, first)


def pseudo_label_stats(data: ALData, unlabeled: np.ndarray, used: torch.Tensor) -> dict:
    """The QueryResult fields that describe pseudo-labels ``used [len(unlabeled)]`` (all rows): their accuracy
    against the pool's true labels (percent) and the labels themselves (the loop scores them on the rare
    classes). The accuracy counts only the images whose label is known (-1: an image nobody has labeled yet, as in a
    labeling round on the user's images); None when none is."""
    true = data.pool_source.labels[data.split.pool[unlabeled]]
    known = true >= 0
    accuracy = float(100.0 * (used.numpy()[known] == true[known]).mean()) if known.any() else None
    return {"pseudo_label_accuracy": accuracy, "pseudo_labels": used.numpy()}


def pool_descriptors(model: nn.Module, data: ALData, unlabeled: np.ndarray, taps: tuple[str, ...],
                     pseudo: Optional[str], val_std: Features, fisher: bool, device: torch.device, batch_size: int,
                     k: int, generator: torch.Generator, desc: Optional[str] = None,
                     standardization: str = "unit") -> tuple[Features, torch.Tensor]:
    """Descriptors (and Fisher scores) of the unlabeled pool positions with the pseudo-labels S (Algorithm 1,
    line 8), at the model's current ``tap_point``. ``val_std``: validation features standardized by
    ``standardization``, for the estimators that match against D_v (on any device). Returns the raw features and
    the labels used ``[len(unlabeled)]`` (-1 where none was needed), all rows on every rank
    (``pool_descriptors_shard`` keeps each rank's own)."""
    estimator = _pool_estimator(model, data, unlabeled, taps, pseudo, val_std, device, batch_size, k, generator,
                                standardization, desc)
    given = data.split.pool_labels[unlabeled] if pseudo == "y" else None
    feats, _, used = extract(model, data.pool_source, data.split.pool[unlabeled], taps, device, batch_size,
                             labels=given, estimator=estimator, fisher=fisher, desc=desc)
    return feats, used


def pool_descriptors_shard(model: nn.Module, data: ALData, unlabeled: np.ndarray, taps: tuple[str, ...],
                           pseudo: Optional[str], val_std: Features, fisher: bool, device: torch.device,
                           batch_size: int, k: int, generator: torch.Generator, desc: Optional[str] = None,
                           standardization: str = "unit", sink=None) -> tuple[Features, torch.Tensor, np.ndarray]:
    """``pool_descriptors`` of this rank's batches: ``(features, labels used, positions into unlabeled)``;
    with a ``sink`` (``DiskFeatures``) the features go to disk, standardized, and the sink is returned."""
    estimator = _pool_estimator(model, data, unlabeled, taps, pseudo, val_std, device, batch_size, k, generator,
                                standardization, desc)
    given = data.split.pool_labels[unlabeled] if pseudo == "y" else None
    feats, _, used, where = extract_shard(model, data.pool_source, data.split.pool[unlabeled], taps, device,
                                          batch_size, labels=given, estimator=estimator, fisher=fisher, desc=desc,
                                          sink=sink)
    return feats, used, where


def global_top_k(values: torch.Tensor, positions: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per center, the k best of the candidates ``[C, m]`` (similarity, pool position), ordered by decreasing
    similarity, equal similarities by increasing position: the same order whether the candidates come from one
    process or from the shards of several."""
    by_position = torch.argsort(positions, dim=1, stable=True)
    values, positions = values.gather(1, by_position), positions.gather(1, by_position)
    order = torch.argsort(-values, dim=1, stable=True)[:, :k]
    return values.gather(1, order), positions.gather(1, order)


def gathered_candidates(kernel, centers: Features, pool_std, where: np.ndarray, k: int,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank's top-k pool rows per center (``topk_similar`` over its shard), gathered from every rank and
    reduced to the global top-k: ``(values [C, k], positions into the unlabeled pool [C, k])`` on every rank."""
    if len(pool_std):
        values, local = topk_similar(kernel, centers, pool_std, k)                     # [C, k'] on device
        positions = torch.as_tensor(where, device=local.device)[local]
    else:
        values = torch.zeros(len(centers), 0, device=device)
        positions = torch.zeros(len(centers), 0, dtype=torch.long, device=device)
    parts = D.all_gather_object((values.float().cpu(), positions.cpu()))
    values = torch.cat([v for v, _ in parts], 1)
    positions = torch.cat([q for _, q in parts], 1)
    return global_top_k(values, positions, k)


def best_similarity(kernel, centers: Features, pool_std, where: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """Each picked image's best similarity over all centers, ``[P]`` in the order of ``picked`` (positions into the
    unlabeled pool), the same on every rank. A pick is in the top k of some centers only, so the candidates' values
    are not enough: each rank evaluates ``kernel(centers, its picked rows)`` ``[C, P_r]`` and takes the max over
    centers, and the ranks' values are gathered."""
    local = {int(p): r for r, p in enumerate(np.asarray(where).tolist())}     # pool position -> row of this shard
    mine = [int(p) for p in picked if int(p) in local]
    values = (kernel(centers, pool_std.rows([local[p] for p in mine])).max(0).values.float().cpu().tolist()
              if mine else [])                                              # [P_r]
    best = {p: v for part in D.all_gather_object((mine, values)) for p, v in zip(*part)}
    return np.array([best[int(p)] for p in picked], dtype=np.float64)


def fisher_kernel_select(val: Features, misclassified: Sequence[int], pool: Features | DiskFeatures, budget: int,
                         *, kernel: str | Kernel = "pfk", generator: Optional[torch.Generator] = None,
                         pool_size: Optional[int] = None, candidates: Optional[Callable] = None,
                         best: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, lines 5-10, on features: k-center greedy picks the centers among the misclassified
    validation images, each center ranks the pool by the kernel, and the rankings are merged into ``budget``
    distinct pool images. Pure: no model, no data, no process group.

    Args:
        val: standardized features of D_v (``Features``: ``z[j]``, ``g[j]`` each ``[M, L_j]``; ``g`` None for ``pcc``).
        misclassified: ``[M^]`` positions into ``val`` of the validation images the model gets wrong (line 3-4).
        pool: standardized features of the unlabeled pool, ``[N]`` rows (``Features``, or ``DiskFeatures`` streamed
            from float16 files).
        budget: P, how many to pick.
        kernel: ``"pcc"`` (R_z, eq. 6), ``"pfk"`` (R_zg, eq. 12), ``"pfk-sum"`` (R_z + R_g, the authors' release)
            or a function ``(a, b) -> [A, B]`` similarities.
        generator: draws the first k-center (used only when ``|M^| > budget``).
        pool_size: the whole pool's N where ``pool`` holds one process's share (``candidates`` and ``best`` then
            gather across processes); default ``len(pool)``.
        candidates: ``(kernel, centers, k) -> (values [C, k], positions [C, k])``, each center's k most similar pool
            images best first (default: ``topk_similar`` over ``pool``).
        best: ``(kernel, centers, picked) -> [P]``, each pick's best similarity over the centers (default: computed
            on ``pool``).

    Returns:
        ``(picks, scores)``: ``[budget]`` positions into the pool rows (fewer only where the pool holds fewer),
        rank 0 of every center first, then rank 1, ...; and ``[budget]`` float64, each pick's largest similarity
        to a center.

    Raises:
        ValueError: no misclassified image to match, or an unknown kernel name.
    """
    kern = kernel if callable(kernel) else _kernel(kernel)
    centers = val.rows(select_centers(val, misclassified, budget, kern, generator))
    return match_centers(centers, pool, budget, kernel=kern, pool_size=pool_size, candidates=candidates, best=best)


def select_centers(val: Features, misclassified: Sequence[int], budget: int, kernel: str | Kernel = "pfk",
                   generator: Optional[torch.Generator] = None) -> np.ndarray:
    """Algorithm 1, lines 5-7: the centers, positions into ``val``: all of ``misclassified`` where they are at most
    ``budget``, else ``budget`` of them by k-center greedy under the kernel, the first drawn from ``generator``
    (default: one seeded with 0). Raises ValueError where ``misclassified`` is empty."""
    kern = kernel if callable(kernel) else _kernel(kernel)
    misclassified = np.asarray(misclassified, dtype=np.int64)
    if len(misclassified) == 0:
        raise ValueError("misclassified: no validation image to match (give the positions of D_v's misclassified "
                         "images, or all of D_v when the model gets none wrong)")
    if len(misclassified) <= budget:
        return misclassified
    rows = val.rows(misclassified)
    pick = kcenter_centers(lambda i: kern(rows.rows([i]), rows)[0], len(misclassified), budget,
                           generator if generator is not None else torch.Generator().manual_seed(0))
    return misclassified[pick]


def match_centers(centers: Features, pool: Features | DiskFeatures, budget: int, *, kernel: str | Kernel = "pfk",
                  pool_size: Optional[int] = None, candidates: Optional[Callable] = None,
                  best: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, lines 9-10: each center's ranking of the pool under the kernel, merged by rank into ``budget``
    distinct pool rows; arguments and result as ``fisher_kernel_select``, ``centers`` the centers' features."""
    kern = kernel if callable(kernel) else _kernel(kernel)
    n = len(pool) if pool_size is None else pool_size
    candidates = candidates or (lambda kf, c, k: topk_similar(kf, c, pool, k))
    k = max(4, 2 * math.ceil(budget / len(centers)))
    while True:
        values, ranked = candidates(kern, centers, k)                                  # [C, k]
        picked = merge_by_rank(ranked, values, budget)
        if len(picked) >= budget or k >= n:
            break
        k *= 2
    if best is None:
        scores = kern(centers, pool.rows(picked)).max(0).values.double().cpu().numpy() if len(picked) else \
            np.zeros(0)
    else:
        scores = best(kern, centers, picked)
    return picked, np.asarray(scores, dtype=np.float64)


def _kernel(name: str) -> Kernel:
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}: choose one of {', '.join(KERNELS)}") from None


def fisher_kernel_query(ctx: QueryContext) -> QueryResult:
    """Algorithm 1: distribution matching between misclassified validation images and the unlabeled pool.

    1. descriptors and Fisher scores of D_v with its true labels; M^ = the misclassified subset (line 3-4)
    2. if |M^| > P, k-center greedy picks P centers among M^ under the same kernel (lines 5-7)
    3. descriptors and Fisher scores of the unlabeled pool with the pseudo-labels S (line 8)
    4. kernel R_z (pcc, eq. 6), R_zg (pfk, eq. 12) or R_z + R_g (pfk-sum) between centers and pool (line 9),
       top-K per center, merged by rank into P distinct images (line 10)

    Steps 2 and 4 are ``fisher_kernel_select``; this is the glue that makes its features. Taps and standardization
    follow ``ctx.options`` (``--taps``, ``--standardize``; see ``add_arguments``). Under several processes the
    validation set's features are gathered on every rank (steps 1-2 run the same everywhere); the pool's stay on
    their rank (on disk past ``--memory-budget``), each rank keeps its shard's top-K per center and the candidates
    of all ranks are merged into the same P picks on every rank.
    """
    return match(ctx, ctx.budget, ctx.config.acquisition)


def match(ctx: QueryContext, budget: int, kernel: str,
          centers_among: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> QueryResult:
    """``fisher_kernel_query`` for ``budget`` picks under ``kernel``; ``centers_among(true labels of M^) -> [|M^|]
    bool`` keeps only some misclassified images as candidate centers (all where it keeps none)."""
    tap_point, how = selection_options(ctx.options)
    with taps_at(ctx.models[0], tap_point):
        return _query(ctx, how, budget, kernel, centers_among)


def _query(ctx: QueryContext, how: str, budget: int, kernel_name: str, centers_among) -> QueryResult:
    cfg, data, model = ctx.config, ctx.data, ctx.models[0]
    kernel = _kernel(kernel_name)
    taps = taps_for(model, cfg.L)
    needs_g = NEEDS_FISHER[kernel_name]
    pseudo = cfg.pseudo_label
    if needs_g and pseudo is None:
        raise ValueError(f"{cfg.name}: the Fisher kernel needs a pseudo-label estimator (e.g. {cfg.acquisition}-phat)")
    val_labels = data.val_labels
    val_feats, val_probs, _ = extract(model, data.val_source, data.split.val, taps, ctx.device, ctx.batch_size,
                                      labels=val_labels, fisher=needs_g or pseudo == "phat-g",
                                      desc=ctx.describe("validation descriptors"))
    val_std = val_feats.standardize_(how).to(ctx.device)
    wrong = misclassified(val_probs, val_labels)
    if centers_among is not None:
        keep = np.asarray(centers_among(np.asarray(val_labels)[wrong]), dtype=bool)
        wrong = wrong[keep] if keep.any() else wrong
    centers = val_std.rows(select_centers(val_std, wrong, budget, kernel, ctx.generator))   # before the pool pass

    unlabeled = np.asarray(ctx.unlabeled)
    n_local = len(D.my_positions(len(unlabeled), ctx.batch_size))
    width = sum(val_feats.z[j].shape[1] for j in range(len(taps)))           # L
    on_disk = n_local * width * (2 if needs_g else 1) * 4 > float(ctx.options.get("memory_budget") or
                                                                  DEFAULT_MEMORY_BUDGET_GB) * 2 ** 30
    with tempfile.TemporaryDirectory(prefix="fkal-pool-") if on_disk else contextlib.nullcontext() as scratch:
        sink = DiskFeatures(scratch, ctx.device, how) if on_disk else None
        pool_feats, used, where = pool_descriptors_shard(model, data, unlabeled, taps, pseudo, val_std, needs_g,
                                                         ctx.device, ctx.batch_size, cfg.K or 32, ctx.generator,
                                                         desc=ctx.describe("pool descriptors"), standardization=how,
                                                         sink=sink)
        pool_std = pool_feats.standardize_(how).to(ctx.device)              # in place: no second copy of the pool
        picked, scores = match_centers(
            centers, pool_std, budget, kernel=kernel, pool_size=len(unlabeled),
            candidates=lambda kf, centers, k: gathered_candidates(kf, centers, pool_std, where, k, ctx.device),
            best=lambda kf, centers, picks: best_similarity(kf, centers, pool_std, where, picks))
    stats = {} if pseudo is None else pseudo_label_stats(data, unlabeled, D.gather_rows(used, where, len(unlabeled)))
    return QueryResult(unlabeled[picked], scores, **stats,
                       extras={"pool_features": "disk-float16" if on_disk else "memory-float32"})


def monte_carlo_pseudo_labels(cfg) -> bool:
    """Whether a configuration's pseudo-labels are drawn from K perturbed copies seeded per batch (``trC``,
    ``mi``, ``mi-diag``): its picks then depend on ``--eval-batch``."""
    return cfg.pseudo_label in ("trC", "mi", "mi-diag")


# --taps and --standardize shape these picks too; they are recorded for every configuration at the top level of
# the settings (``taps``, ``standardize``), not among the acquisition's options.
_FK_BARS = ("validation descriptors", "pool descriptors")
SPECS = tuple(
    AcquisitionSpec(name, fisher_kernel_query, title=title, add_arguments=add_arguments, ours=True,
                    needs=frozenset({"val"}), default_L=always, batch_seeded=monte_carlo_pseudo_labels,
                    example=Example(example, bars=_FK_BARS))
    for name, title, example in (("pcc", "R_z", "pcc-L20"), ("pfk", "R_zg", "pfk-phat-L80"),
                                 ("pfk-sum", "R_z+R_g", "pfk-sum-yhat-L20")))
