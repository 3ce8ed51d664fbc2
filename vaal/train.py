"""Losses, training and selection of VAAL, TA-VAAL and learning loss.

Pure functions on tensors first (tested on hand-made values), then the loops that own models and data:

  margin_ranking_loss   learning loss (Yoo and Kweon 2019): pairs (i, B-1-i) of a batch,
                        mean over the B/2 pairs of max(0, margin - I_ij (p_i - p_j)), I_ij = +1 if l_i > l_j else -1
  ranknet_loss          TA-VAAL eq. (1): mean over the pairs of BCE(sigmoid(p_i - p_j), 1[l_i > l_j])
  vae_loss              MSE reconstruction (mean) + beta KL; KL summed over batch and latent (VAAL) or averaged
                        (TA-VAAL)
  lowest / highest      the k positions of the lowest / highest scores (stable: ties go to the lower position)
  train_adversary       VAE + discriminator training on a labeled and an unlabeled image feed
  lloss_extra_loss /    the terms learning loss / TA-VAAL add to the task model's cross-entropy in
  tavaal_extra_loss     ``fkal.training.train`` (their weights bound from the options by the ``TaskHooks``)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from fkal import distributed as D

from .models import VAE, Discriminator, LossPredictionModel, to_vae_input


# ----------------------------------------------------------------------------------------------------------------
# Ranking losses (pure)
# ----------------------------------------------------------------------------------------------------------------
def pair_halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference pairing of a batch ``[B]``: (x_i, x_{B-1-i}) for i < B // 2, each ``[B // 2]``.
    An odd batch leaves its middle element unpaired (the reference asserts an even batch)."""
    h = len(x) // 2
    return x[:h], x.flip(0)[:h]


def margin_ranking_loss(pred: torch.Tensor, true: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Learning loss's ``LossPredLoss``: pred, true ``[B]`` -> scalar.

    I_ij = +1 where l_i > l_j and -1 otherwise (ties included, as ``2 sign(clamp(l_i - l_j, 0)) - 1`` in the
    reference); the true losses are detached. A batch with no pair gives 0.
    """
    p_i, p_j = pair_halves(pred)
    l_i, l_j = pair_halves(true.detach())
    if len(p_i) == 0:
        return pred.sum() * 0.0
    sign = torch.where(l_i > l_j, 1.0, -1.0).to(pred.dtype)
    return torch.clamp(margin - sign * (p_i - p_j), min=0).mean()


def ranknet_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """TA-VAAL's ranking loss, eq. (1): pred, true ``[B]`` -> scalar.

    -mean over pairs of I log sigmoid(p_i - p_j) + (1 - I) log(1 - sigmoid(p_i - p_j)), I = 1[l_i > l_j];
    the true losses are detached. A batch with no pair gives 0.
    """
    p_i, p_j = pair_halves(pred)
    l_i, l_j = pair_halves(true.detach())
    if len(p_i) == 0:
        return pred.sum() * 0.0
    return F.binary_cross_entropy_with_logits(p_i - p_j, (l_i > l_j).to(pred.dtype))


def gradient_cut(epoch: int, epochs: int, share: float) -> bool:
    """True when the ranker's gradient into the backbone is cut: 0-based ``epoch`` > share x epochs
    (the reference's ``if epoch > epoch_loss`` with epoch_loss = 120 of 200 epochs, share 0.6)."""
    return epoch > share * epochs


def _ranker(model: nn.Module) -> LossPredictionModel:
    if not isinstance(model, LossPredictionModel):
        raise TypeError(f"the ranking loss needs the task model wrapped with a loss prediction module "
                        f"(vaal.models.LossPredictionModel), got {type(model).__name__}")
    return model


def lloss_extra_loss(model: nn.Module, logits: torch.Tensor, taps: dict, targets: torch.Tensor,
                     epoch: int, epochs: int, *, weight: float = 1.0, margin: float = 1.0,
                     cutoff: float = 0.6) -> torch.Tensor:
    """Learning loss's term of the task loss: ``weight`` (lambda) x margin ranking loss between the predicted
    losses and the per-sample cross-entropy; the taps are detached after ``cutoff`` of the epochs."""
    m = _ranker(model)
    true = F.cross_entropy(logits.detach(), targets, reduction="none")              # [B]
    pred = m.predict_loss(taps, detach=gradient_cut(epoch, epochs, cutoff))         # [B]
    return weight * margin_ranking_loss(pred, true, margin)


def tavaal_extra_loss(model: nn.Module, logits: torch.Tensor, taps: dict, targets: torch.Tensor,
                      epoch: int, epochs: int, *, eta: float = 1.0, cutoff: float = 0.6) -> torch.Tensor:
    """TA-VAAL eq. (2): eta x RankNet loss (eq. 1) of the ranker, cut from the backbone like learning loss's
    module (TA-VAAL supplement: "after the 120th epoch, we did not back propagate the gradient of Ranker")."""
    m = _ranker(model)
    true = F.cross_entropy(logits.detach(), targets, reduction="none")
    pred = m.predict_loss(taps, detach=gradient_cut(epoch, epochs, cutoff))
    return eta * ranknet_loss(pred, true)


# ----------------------------------------------------------------------------------------------------------------
# VAE loss and selection (pure)
# ----------------------------------------------------------------------------------------------------------------
def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), mu / logvar ``[B, z]``: summed over batch and latent ("sum", VAAL)
    or averaged over both ("mean", TA-VAAL)."""
    terms = 1 + logvar - mu.pow(2) - logvar.exp()
    if reduction == "sum":
        return -0.5 * terms.sum()
    if reduction == "mean":
        return -0.5 * terms.mean()
    raise ValueError(f"unknown KL reduction {reduction!r}")


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0,
             kl: str = "sum") -> torch.Tensor:
    """The reference ``vae_loss``: ``MSELoss()(recon, x)`` (mean over all pixels) + beta x KL."""
    return F.mse_loss(recon, x) + beta * kl_divergence(mu, logvar, kl)


def lowest(scores, k: int) -> np.ndarray:
    """Positions of the k lowest scores ``[N]`` (ascending; ties to the lower position): VAAL's selection,
    ``topk(-D(mu), k)``."""
    s = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
    if not 0 <= k <= len(s):
        raise ValueError(f"cannot pick {k} of {len(s)} scores")
    return np.argsort(s, kind="stable")[:k]


def highest(scores, k: int) -> np.ndarray:
    """Positions of the k highest scores (descending; ties to the lower position): learning loss's selection."""
    s = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
    return lowest(-s, k)


# ----------------------------------------------------------------------------------------------------------------
# Data feeds
# ----------------------------------------------------------------------------------------------------------------
class ImageFeed:
    """VAE inputs from a shared source: ``source[idx]`` as ``[B, C, S, S]`` in [0, 1], with, for TA-VAAL, a rank
    per image for the decoder (``ranks`` [N]) and one for the discriminator (``disc_ranks`` [N]; default: the
    same). The paper feeds the normalized score sigmoid(r) to both; the TA-VAAL code gives the decoder sigmoid(r)
    and the discriminator the raw r. Images are converted per batch, so the pool is never held as floats."""

    def __init__(self, source, idx: np.ndarray, image_size: int = 32, ranks: Optional[torch.Tensor] = None,
                 disc_ranks: Optional[torch.Tensor] = None):
        self.source, self.idx, self.size = source, np.asarray(idx), image_size
        self.ranks = None if ranks is None else torch.as_tensor(ranks, dtype=torch.float32).reshape(-1)
        self.disc_ranks = self.ranks if disc_ranks is None else \
            torch.as_tensor(disc_ranks, dtype=torch.float32).reshape(-1)
        for r in (self.ranks, self.disc_ranks):
            if r is not None and len(r) != len(self.idx):
                raise ValueError(f"{len(r)} ranks for {len(self.idx)} images")

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, pos: np.ndarray, device: torch.device
              ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Positions into ``idx`` -> (images ``[b, C, S, S]``, decoder ranks ``[b]`` or None, discriminator
        ranks ``[b]`` or None) on ``device``."""
        x = to_vae_input(self.source.get(self.idx[pos]), self.source.mean, self.source.std, self.size)
        at = torch.as_tensor(pos, dtype=torch.long)
        r = None if self.ranks is None else self.ranks[at].to(device)
        rd = None if self.disc_ranks is None else self.disc_ranks[at].to(device)
        return x.to(device, non_blocking=True), r, rd

    def stream(self, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
        """Endless shuffled epochs of positions; full batches only (the reference's ``drop_last``), or the
        whole set reshuffled when it is smaller than a batch."""
        n = len(self.idx)
        if n == 0:
            raise ValueError("an empty image feed cannot be streamed")
        b = min(batch_size, n)
        while True:
            perm = torch.randperm(n, generator=generator).numpy()
            for start in range(0, n - b + 1, b):
                yield perm[start:start + b]


# ----------------------------------------------------------------------------------------------------------------
# VAE + discriminator training
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdversarySchedule:
    """The numbers of one VAE / discriminator training (VAAL: 2 VAE steps, 1 discriminator step, KL summed;
    TA-VAAL: 1 and 1, KL averaged; both Adam 5e-4, beta 1, lambda 1)."""

    iterations: int
    batch_size: int = 64
    lr: float = 5e-4
    beta: float = 1.0
    adversary: float = 1.0       # lambda: weight of the VAE's "fool the discriminator" BCE
    vae_steps: int = 2
    disc_steps: int = 1
    kl: str = "sum"
    joint_batch_norm: bool = False  # one VAE pass over labeled + unlabeled (shared batch-norm statistics)
    first_uniform: bool = False     # TA-VAAL: r ~ uniform(0, 1) for decoder and discriminator at iteration 0


def iterations_for(iterations: int, epochs: Optional[float], n_labeled: int, n_unlabeled: int,
                   batch_size: int) -> int:
    """Training iterations of the VAE and discriminator: ``iterations``, or with ``epochs`` given the TA-VAAL
    code's ``int((N_l + N_u) * epochs / batch)`` (its ``(ADDENDUM * cycle + SUBSET) * EPOCHV / BATCH``)."""
    if epochs is None:
        return iterations
    return int((n_labeled + n_unlabeled) * epochs / batch_size)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _vae_pair(vae: VAE, xl: torch.Tensor, rl: Optional[torch.Tensor], xu: torch.Tensor, ru: Optional[torch.Tensor],
              joint: bool):
    """VAE passes of a labeled and an unlabeled batch -> ((recon, mu, logvar) labeled, (...) unlabeled):
    two passes (the reference; each batch normalized with its own statistics) or one on their concatenation."""
    if not joint:
        recon_l, _, mu_l, logvar_l = vae(xl, rl)
        recon_u, _, mu_u, logvar_u = vae(xu, ru)
        return (recon_l, mu_l, logvar_l), (recon_u, mu_u, logvar_u)
    r = None if rl is None else torch.cat([rl, ru])
    recon, _, mu, logvar = vae(torch.cat([xl, xu]), r)
    sizes = [len(xl), len(xu)]
    return tuple(zip(recon.split(sizes), mu.split(sizes), logvar.split(sizes)))


def train_adversary(vae: VAE, disc: Discriminator, labeled: ImageFeed, unlabeled: ImageFeed,
                    schedule: AdversarySchedule, device: torch.device, generator: torch.Generator,
                    desc: Optional[str] = None, progress: bool = True) -> dict:
    """Train ``vae`` and ``disc`` as in VAAL's ``Solver.train`` (task-model part left to the loop).

    Each iteration draws a labeled and an unlabeled batch and does
      ``vae_steps`` VAE steps (a fresh batch pair after the first):
          vae_loss(labeled) + vae_loss(unlabeled) + lambda [BCE(D(mu_l), 1) + BCE(D(mu_u), 1)]
      ``disc_steps`` discriminator steps on mu computed without gradient (a fresh pair after the first):
          BCE(D(mu_l), 1) + BCE(D(mu_u), 0)
    with separate Adam optimizers. For TA-VAAL the feeds carry the ranks the decoder and the discriminator receive
    next to z / mu (``ImageFeed``); with ``first_uniform`` both get r ~ uniform(0, 1) in the first iteration (the
    TA-VAAL code; its Algorithm 1 draws them during the first epoch). Returns the last losses and the wall
    seconds.

    Batch norm: the references pass the labeled and the unlabeled batch through the VAE separately, so each is
    normalized with its own statistics, which removes whatever sets the two batches apart on average; they
    score in training mode accordingly (``discriminator_scores(batch_statistics=True)``). With
    ``joint_batch_norm`` one pass over the concatenation shares the statistics, and scoring uses the running
    ones (``batch_statistics=False``).
    """
    if len(labeled) == 0 or len(unlabeled) == 0:
        raise ValueError("VAAL training needs labeled and unlabeled images")
    start = time.perf_counter()
    s = schedule
    opt_vae = torch.optim.Adam(vae.parameters(), lr=s.lr)
    opt_disc = torch.optim.Adam(disc.parameters(), lr=s.lr)
    vae.train()
    disc.train()
    lab, unl = labeled.stream(s.batch_size, generator), unlabeled.stream(s.batch_size, generator)
    vae_l = disc_l = float("nan")
    loss = d_loss = None
    bar = tqdm(range(s.iterations), desc=desc or "VAE + discriminator", leave=False, disable=not progress)
    for it in bar:
        xl, rl, dl = labeled.batch(next(lab), device)              # [b, C, S, S], ranks [b] or None (x2)
        xu, ru, du = unlabeled.batch(next(unl), device)
        if it == 0 and s.first_uniform and rl is not None:         # the TA-VAAL code's r_l_0, r_u_0
            rl, ru = torch.rand_like(rl), torch.rand_like(ru)
            dl, du = rl, ru
        for step in range(s.vae_steps):
            if step > 0:
                xl, rl, dl = labeled.batch(next(lab), device)
                xu, ru, du = unlabeled.batch(next(unl), device)
            (recon_l, mu_l, logvar_l), (recon_u, mu_u, logvar_u) = _vae_pair(vae, xl, rl, xu, ru, s.joint_batch_norm)
            loss = (vae_loss(xl, recon_l, mu_l, logvar_l, s.beta, s.kl)
                    + vae_loss(xu, recon_u, mu_u, logvar_u, s.beta, s.kl)
                    + s.adversary * (_bce(disc.logits(mu_l, dl), 1.0) + _bce(disc.logits(mu_u, du), 1.0)))
            opt_vae.zero_grad(set_to_none=True)
            loss.backward()
            opt_vae.step()
        for step in range(s.disc_steps):
            if step > 0:
                xl, rl, dl = labeled.batch(next(lab), device)
                xu, ru, du = unlabeled.batch(next(unl), device)
            with torch.no_grad():
                if s.joint_batch_norm:
                    mu_l, mu_u = vae.encode(torch.cat([xl, xu]))[0].split([len(xl), len(xu)])
                else:
                    mu_l, mu_u = vae.encode(xl)[0], vae.encode(xu)[0]
            d_loss = _bce(disc.logits(mu_l, dl), 1.0) + _bce(disc.logits(mu_u, du), 0.0)
            opt_disc.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_disc.step()
        if (it % 10 == 0 or it == s.iterations - 1) and loss is not None and d_loss is not None:
            vae_l, disc_l = loss.item(), d_loss.item()
            bar.set_postfix(vae=f"{vae_l:.3f}", disc=f"{disc_l:.3f}")
    vae.eval()
    disc.eval()
    D.broadcast_module(vae)             # every rank trained the same models; on a GPU they may differ in the last
    D.broadcast_module(disc)            # bits: all ranks score with rank 0's
    return {"vae_loss": vae_l, "disc_loss": disc_l, "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def discriminator_scores(vae: VAE, disc: Discriminator, feed: ImageFeed, device: torch.device,
                         batch_size: int = 64, desc: Optional[str] = None,
                         batch_statistics: bool = True) -> torch.Tensor:
    """D(mu(x) [, r]) for every image of the feed, ``[N]`` on the CPU, in batches of ``batch_size``.

    ``batch_statistics`` (default, as the VAAL and TA-VAAL samplers, which never switch to eval mode): the
    VAE's batch norm normalizes each batch with its own statistics, as it did on the separate labeled and
    unlabeled batches the discriminator was trained on; pass the training batch size. False: eval mode
    (running statistics), which mixes labeled and unlabeled statistics the discriminator never saw.
    """
    vae.train(batch_statistics)
    disc.eval()
    out, where = [], []
    mine = D.my_batches(len(feed), batch_size)                       # whole batches per rank: same statistics
    for _, start, stop in tqdm(mine, desc=desc, leave=False, disable=desc is None or not D.is_main()):
        x, _, rd = feed.batch(np.arange(start, stop), device)          # rd: the rank the discriminator sees
        out.append(disc(vae.encode(x)[0], rd).float().cpu())
        where.append(np.arange(start, stop))
    vae.eval()
    if not len(feed):
        return torch.empty(0)
    return D.gather_rows(torch.cat(out) if out else torch.empty(0),
                         np.concatenate(where) if where else np.zeros(0, dtype=np.int64), len(feed))


@torch.no_grad()
def predicted_losses(model: LossPredictionModel, source, idx: np.ndarray, device: torch.device,
                     batch_size: int = 1000, desc: Optional[str] = None) -> torch.Tensor:
    """The loss prediction module's output for ``source[idx]``, ``[N]`` on the CPU (task model in eval mode)."""
    model.eval()
    out, where = [], []
    batches = D.sharded(source, np.asarray(idx), batch_size)
    for _, pos, x in tqdm(batches, total=len(D.my_batches(len(idx), batch_size)), desc=desc, leave=False,
                          disable=desc is None or not D.is_main()):
        _, taps = model(x.to(device, non_blocking=True))
        out.append(model.predict_loss(taps).float().cpu())
        where.append(pos)
    if not len(idx):
        return torch.empty(0)
    return D.gather_rows(torch.cat(out) if out else torch.empty(0),
                         np.concatenate(where) if where else np.zeros(0, dtype=np.int64), len(idx))
