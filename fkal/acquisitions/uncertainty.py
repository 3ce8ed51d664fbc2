"""MC-dropout uncertainty baselines: variation ratio, max entropy, BALD and mean std.

Gal, Islam and Ghahramani, "Deep Bayesian Active Learning with Image Data" (ICML 2017): K stochastic forward
passes with dropout active at inference; Beluch et al., "The power of ensembles for active learning in image
classification" (CVPR 2018): the passes of E independently trained members pooled into E*K samples. The paper
reproduced here (Gudovskiy et al., CVPR 2020, section 5 and Table 1) reports varR, its best uncertainty baseline,
with E=1, K=128 and E=4, K=32; a query costs E*K forward passes over the unlabeled pool.

The metrics are pure functions in the style of baal's heuristics: ``probs`` ``[K, N, C]`` (K stochastic passes,
N images, C classes) -> scores ``[N]``, larger = more uncertain. The acquisitions take the top P over the whole
unlabeled pool; the pool's ``[K, N, C]`` tensor is never held, each batch is reduced to its scores at once.
"""
from __future__ import annotations

import argparse
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import distributed as D
from ..data import TensorSource
from ..models import mc_dropout_copy
from .contract import AcquisitionSpec, Example, QueryContext, QueryResult, always
from .random_sampling import random_query

Metric = Callable[[torch.Tensor], torch.Tensor]   # probs [K, N, C] -> scores [N]

DEFAULT_K = 128   # stochastic passes when the configuration name gives no K (the paper's varR-K128)


# ----------------------------------------------------------------------------------------------------------------
# Metrics: probs [K, N, C] -> scores [N], larger = more uncertain
# ----------------------------------------------------------------------------------------------------------------
def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis, with 0 log 0 = 0: [..., C] -> [...]."""
    return -torch.special.xlogy(p, p).sum(-1)


def variation_ratio(probs: torch.Tensor) -> torch.Tensor:
    """1 - f_m / K, where f_m is how many of the K passes vote for the modal class (Freeman, 1965; Gal et al.).

    Each pass votes for its argmax class. With a tie between classes for the top count the frequency is still
    that count / K. All passes agreeing gives 0; the maximum is 1 - 1/C when the votes are spread evenly.
    """
    K, N, C = probs.shape
    votes = torch.zeros(N, C, dtype=torch.float64, device=probs.device)
    votes.scatter_add_(1, probs.argmax(2).T, torch.ones(N, K, dtype=torch.float64, device=probs.device))  # [N, C]
    return (1.0 - votes.max(1).values / K).to(probs.dtype)


def max_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy H[mean_k p_k] of the mean softmax (Shannon, 1948; Gal et al.)."""
    return _entropy(probs.mean(0))


def bald(probs: torch.Tensor) -> torch.Tensor:
    """BALD mutual information between prediction and weights: H[mean_k p_k] - mean_k H[p_k] (Houlsby et al.,
    2011; Gal et al.). Zero when every pass gives the same distribution."""
    return _entropy(probs.mean(0)) - _entropy(probs).mean(0)


def mean_std(probs: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the per-class standard deviation over passes (Kampffmeyer et al., 2016; Gal et al.):
    sigma_c = sqrt(E_k[p_c^2] - E_k[p_c]^2), the population std (no K-1 correction, so K=1 gives 0 and repeating
    the passes leaves the score unchanged)."""
    return probs.std(0, correction=0).mean(1)


# configuration name of the acquisition -> metric
METRICS: dict[str, Metric] = {"varR": variation_ratio, "entropy": max_entropy, "bald": bald, "std": mean_std}


# ----------------------------------------------------------------------------------------------------------------
# Stochastic passes
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def iter_mc_probabilities(models: Sequence[nn.Module], source: TensorSource, idx: np.ndarray, K: int,
                          device: torch.device, batch_size: int, generator: torch.Generator, *, model_name: str,
                          num_classes: int, forward_size: Optional[int] = None,
                          desc: Optional[str] = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(positions, probs)`` per batch of ``source[idx]``: probs ``[E*K, B, C]`` (float32, on ``device``),
    member e's K passes at rows ``e*K:(e+1)*K``.

    Every member is turned into its MC-dropout variant (``fkal.models.mc_dropout_copy``: the same weights, dropout
    active at inference). Each batch is read once; its K passes are made by repeating it along the batch axis,
    ``forward_size`` images per forward (default ``4 * batch_size``), so several passes share one forward.
    The dropout masks of member e on batch i (the global index of the batch in ``idx``, ``batch_size`` images
    each) come from the seed ``s_e + i``, with ``s_e`` drawn from ``generator``: the result is deterministic, the
    same for member e whatever the other members are and whatever rank processes the batch (under several
    processes each rank yields its own batches only), and the global RNG state is restored afterwards. The masks
    of an image thus depend on its position and on ``batch_size`` (``--eval-batch``, part of these
    configurations' recorded settings).
    """
    if K < 1:
        raise ValueError(f"K={K}: at least one stochastic pass is needed")
    seeds = [int(s) for s in torch.randint(2 ** 62, (len(models),), generator=generator)]
    forward_size = forward_size or 4 * batch_size
    cuda = [device.index or 0] if device.type == "cuda" else []
    batches = D.sharded(source, idx, batch_size)                                # this rank's batches
    if desc and D.is_main():
        batches = tqdm(batches, total=len(D.my_batches(len(idx), batch_size)), desc=desc, leave=False)
    with torch.random.fork_rng(devices=cuda):                                    # (building draws an init)
        mc_models = [mc_dropout_copy(m, model_name, num_classes) for m in models]
    for i, pos, x in batches:                                                    # i: the global batch index
        with torch.random.fork_rng(devices=cuda):                                # the caller's RNG untouched
            probs = _passes(mc_models, [s + i for s in seeds], x.to(device, non_blocking=True), K, forward_size)
        yield pos, probs


def _passes(mc_models: Sequence[nn.Module], seeds: Sequence[int], x: torch.Tensor, K: int,
            forward_size: int) -> torch.Tensor:
    """K passes of each MC-dropout model over one batch x ``[B, ...]``, seeded per model: ``[E*K, B, C]``."""
    per_forward = max(1, min(K, forward_size // len(x)))                         # passes sharing one forward
    out = []
    for mc, seed in zip(mc_models, seeds):
        torch.manual_seed(seed)
        for start in range(0, K, per_forward):
            r = min(per_forward, K - start)
            logits, _ = mc(x.repeat(r, *([1] * (x.dim() - 1))))                  # [r*B, C]
            out.append(logits.float().softmax(1).view(r, len(x), -1))            # [r, B, C]
    return torch.cat(out)


def mc_probabilities(models: Sequence[nn.Module], source: TensorSource, idx: np.ndarray, K: int,
                     device: torch.device, batch_size: int, generator: torch.Generator, **kwargs) -> torch.Tensor:
    """Softmax probabilities ``[E*K, N, C]`` (CPU) of K MC-dropout passes of each of the E members over
    ``source[idx]``; keyword arguments as ``iter_mc_probabilities``. Holds the whole tensor: for small sets and
    tests; a query uses ``mc_scores``."""
    parts, where = [], []
    for pos, p in iter_mc_probabilities(models, source, idx, K, device, batch_size, generator, **kwargs):
        parts.append(p.cpu().transpose(0, 1))                                    # [B, E*K, C]
        where.append(pos)
    if not len(idx):
        return torch.empty(0)
    local = torch.cat(parts) if parts else torch.empty(0)
    gathered = D.gather_rows(local, np.concatenate(where) if where else np.zeros(0, dtype=np.int64), len(idx))
    return gathered.transpose(0, 1).contiguous()                                 # [E*K, N, C]


def mc_scores(metric: Metric, models: Sequence[nn.Module], source: TensorSource, idx: np.ndarray, K: int,
              device: torch.device, batch_size: int, generator: torch.Generator, **kwargs) -> torch.Tensor:
    """``metric`` of the E*K pooled passes, ``[N]`` (CPU), reduced batch by batch: memory ``E*K*batch_size*C``."""
    parts, where = [], []
    for pos, p in iter_mc_probabilities(models, source, idx, K, device, batch_size, generator, **kwargs):
        parts.append(metric(p).cpu())
        where.append(pos)
    if not len(idx):
        return torch.empty(0)
    local = torch.cat(parts) if parts else torch.empty(0)
    return D.gather_rows(local, np.concatenate(where) if where else np.zeros(0, dtype=np.int64), len(idx))


def top_scores(scores: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Positions of the ``budget`` largest scores ``[N]``, largest first; ties (frequent for varR, whose values
    are multiples of 1/K) are broken at random with ``generator``."""
    perm = torch.randperm(len(scores), generator=generator)                     # [N]
    order = torch.argsort(scores[perm], descending=True, stable=True)[:budget]
    return perm[order]


# ----------------------------------------------------------------------------------------------------------------
# Acquisitions
# ----------------------------------------------------------------------------------------------------------------
# The options (argparse dests) that shape these acquisitions' picks: part of every record's settings.
OPTIONS = ("uncertainty_first_random",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uncertainty-first-random", type=int, choices=(0, 1), default=1,
                        help="MC-dropout uncertainty (varR, entropy, bald, std): 1 selects the first iteration's "
                             "images at random, as the paper's code does, since the initial model's classifier "
                             "layer is untrained; 0 ranks them by the initial model's uncertainty too")



def uncertainty_query(ctx: QueryContext) -> QueryResult:
    """Top P unlabeled images by the MC-dropout metric named by the configuration (varR, entropy, bald, std).

    K = ``ctx.config.K`` passes (default 128) of each of the E members in ``ctx.models``, pooled into one
    ``[E*K, N, C]`` sample per image, one query list for all members. Iteration 1 is random unless
    ``--uncertainty-first-random 0``.
    """
    cfg, data = ctx.config, ctx.data
    if ctx.iteration == 1 and int(ctx.options.get("uncertainty_first_random", 1)):
        return random_query(ctx)
    K = cfg.K or DEFAULT_K
    unlabeled = np.asarray(ctx.unlabeled)
    desc = ctx.describe(f"{len(ctx.models)}x{K} MC-dropout passes")
    scores = mc_scores(METRICS[cfg.acquisition], ctx.models, data.pool_source, data.split.pool[unlabeled], K,
                       ctx.device, ctx.batch_size, ctx.generator, model_name=data.spec.model,
                       num_classes=data.spec.num_classes, desc=desc)                      # [N_u]
    pick = top_scores(scores, ctx.budget, ctx.generator).numpy()
    return QueryResult(unlabeled[pick], scores[pick].numpy())


SPECS = tuple(
    AcquisitionSpec(name, uncertainty_query, title=title, options=OPTIONS, add_arguments=add_arguments,
                    needs=frozenset({"dropout"}), batch_seeded=always,
                    example=Example(example, bars=(bar,)))
    for name, title, example, bar in (("varR", "varR", "varR-E2-K3", "2x3 MC-dropout passes"),
                                      ("entropy", "max entropy", "entropy-K4", "1x4 MC-dropout passes"),
                                      ("bald", "BALD", "bald-E2-K3", "2x3 MC-dropout passes"),
                                      ("std", "mean std", "std-K4", "1x4 MC-dropout passes")))
