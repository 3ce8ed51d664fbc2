"""The ``vaal``, ``tavaal`` and ``lloss`` acquisitions, their task-model hooks and their command-line options.

  vaal    Sinha et al. 2019. A fresh VAE and discriminator are trained inside the query on the labeled images and
          the whole unlabeled pool (so ``query_seconds`` holds their training, the query cost of the FK paper's
          Table 1); the P unlabeled images with the LOWEST discriminator score D(mu) are selected.
  tavaal  Kim et al. 2021. The task model carries a ranker (loss prediction module) trained with the RankNet loss
          (eq. 1, weight eta) during the loop's task training; the query draws a random subset of 10 x P unlabeled
          images, trains a fresh rank-conditioned VAE and discriminator on the labeled images and that subset,
          r = sigmoid(ranker output) of the frozen ranker, and selects the P lowest D(mu, r) of the subset.
  lloss   Yoo and Kweon 2019. The task model carries a loss prediction module trained with the margin ranking
          loss; the query selects the P highest predicted losses within a random subset of the unlabeled pool.
  lloss-v2  TA-VAAL's "learning loss_v2" (its section 5.1): learning loss whose module is trained with TA-VAAL's
          RankNet loss (eq. 1) instead of the margin loss; the TA-VAAL code's "lloss" is this one.

``--loss-module-all 1`` (fkal.protocols; the TA-VAAL code, whose test ``method == 'lloss' or 'TA-VAAL'`` is
always true) attaches the module to every other acquisition's task model too, trained with the RankNet loss at
weight ``--lloss-weight``: ``ATTACHED_HOOKS``.

With nothing labeled yet (the first iteration of this protocol, whose initial model saw no labels) all three
select uniformly at random: the discriminator has no labeled images to learn from and the ranker has never
seen a loss (the reference codes start from a random initial labeled set for the same reason).

Batch norm: like the reference codes, the VAE sees the labeled and the unlabeled batch in separate passes and
the pool is scored with batch statistics; ``--vaal-joint-bn 1`` shares the statistics instead (see
``vaal.train.train_adversary``).

Everything is deterministic given ``ctx.generator``: a seed drawn from it seeds the model initialisation, the
reparameterization noise (inside ``torch.random.fork_rng``, so the caller's RNG state is left as it was) and
the data order. On CUDA that needs the run's determinism settings (``fkal.device``, on unless
``--nondeterministic``): the VAE's transposed convolutions have nondeterministic CUDA kernels otherwise.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from typing import Iterator, Optional

import numpy as np
import torch

from fkal.acquisitions.contract import AcquisitionSpec, Example, QueryContext, QueryResult, TaskHooks
from fkal.acquisitions.random_sampling import random_query
from fkal.arguments import integer, number
from fkal.errors import UserError
from fkal.training import ExtraLoss

from .models import VAE, Discriminator, LossPredictionModel, with_loss_module
from .train import (AdversarySchedule, ImageFeed, discriminator_scores, highest, iterations_for, lloss_extra_loss,
                    lowest, predicted_losses, tavaal_extra_loss, train_adversary)


# ----------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------
# Architecture and batch by dataset, where the command line leaves them unset: the FK paper's MNIST adaptation
# of VAAL (every VAE width halved, discriminator 4 x 256, batch 25 as its task training), else the VAAL reference
# (widths 128-256-512-1024, discriminator 2 x 512, batch 64).
PRESETS = {
    "mnist": {"width": 64, "disc_hidden": 256, "disc_layers": 4, "batch_size": 25},
    None: {"width": 128, "disc_hidden": 512, "disc_layers": 2, "batch_size": 64},
}


@dataclass(frozen=True)
class Options:
    """The numbers of the three baselines; ``from_ctx`` reads them from ``ctx.options`` (under the argparse
    dests of ``DESTS``); a missing or None value takes the dataset's preset, else the default here."""

    vaal_iterations: int = 150          # VAAL reference: 100 epochs over the pool; FK MNIST adaptation: 10,000
    tavaal_iterations: int = 300        # TA-VAAL reference: 100 epochs over labeled + subset at batch 128
    batch_size: Optional[int] = None    # 25 MNIST adaptation, 64 VAAL reference (TA-VAAL: 128)
    latent: int = 32
    width: Optional[int] = None         # first encoder width w (w, 2w, 4w, 8w): 64 MNIST adaptation, 128 reference
    disc_hidden: Optional[int] = None
    disc_layers: Optional[int] = None
    image_size: int = 32
    lr: float = 5e-4
    beta: float = 1.0
    adversary: float = 1.0              # lambda
    vae_steps: int = 2
    disc_steps: int = 1
    tavaal_eta: float = 1.0
    tavaal_subset_factor: int = 10      # 0: no subset of its own (the loop's --subset-size serves)
    lloss_subset: int = 10_000          # 0: no subset of its own
    vaal_epochs: Optional[float] = None     # given: iterations = int((N_l + N_u) x epochs / batch)
    tavaal_epochs: Optional[float] = None   # (the TA-VAAL code: 100 epochs over labeled + subset)
    tavaal_disc_rank: str = "sigmoid"   # what the discriminator sees: sigmoid(r) (the paper) or raw r (the code)
    tavaal_first_uniform: int = 0       # 1: r ~ uniform(0, 1) in the first VAE iteration (the code)
    lloss_weight: float = 1.0
    lloss_margin: float = 1.0
    ranker_cutoff: float = 0.6
    joint_batch_norm: int = 0           # 0: the references' separate labeled / unlabeled VAE passes

    @classmethod
    def from_ctx(cls, ctx: QueryContext) -> "Options":
        return cls.from_options(ctx.options, ctx.data.spec)

    @classmethod
    def from_options(cls, options: dict, spec) -> "Options":
        given = {f.name: options.get(DESTS[f.name]) for f in fields(cls)}
        preset = PRESETS.get(spec.name, PRESETS[None])
        values = {k: (v if v is not None else preset.get(k, getattr(cls, k))) for k, v in given.items()}
        return cls(**values).checked()

    def checked(self) -> "Options":
        flag = {f: "--" + d.replace("_", "-") for f, d in DESTS.items()}
        for f in ("batch_size", "latent", "width", "disc_hidden", "vae_steps", "disc_steps"):
            if getattr(self, f) < 1:
                raise UserError(f"{flag[f]} must be at least 1 (got {getattr(self, f)})")
        for f in ("vaal_iterations", "tavaal_iterations", "disc_layers", "tavaal_subset_factor", "lloss_subset"):
            if getattr(self, f) < 0:
                raise UserError(f"{flag[f]} must not be negative (got {getattr(self, f)})")
        if self.image_size < 16 or self.image_size % 16:
            raise UserError(f"--vaal-image-size must be a multiple of 16 (the VAE halves it four times), "
                            f"got {self.image_size}; use 32 for MNIST, SVHN and CIFAR")
        for f in ("vaal_epochs", "tavaal_epochs"):
            if getattr(self, f) is not None and getattr(self, f) <= 0:
                raise UserError(f"{flag[f]} must be above 0 (got {getattr(self, f)})")
        if self.tavaal_disc_rank not in ("sigmoid", "raw"):
            raise UserError(f"--tavaal-disc-rank is sigmoid or raw (got {self.tavaal_disc_rank!r})")
        if not 0.0 <= self.ranker_cutoff <= 1.0:
            raise UserError(f"--lloss-cutoff is a share of the epochs in [0, 1] (got {self.ranker_cutoff})")
        return self


# field -> argparse dest (the command line's names)
DESTS = {"vaal_iterations": "vaal_iterations", "tavaal_iterations": "tavaal_iterations",
         "batch_size": "vaal_batch", "latent": "vaal_latent", "width": "vaal_width",
         "disc_hidden": "vaal_disc_hidden", "disc_layers": "vaal_disc_layers", "image_size": "vaal_image_size",
         "lr": "vaal_lr", "beta": "vaal_beta", "adversary": "vaal_lambda", "vae_steps": "vaal_vae_steps",
         "disc_steps": "vaal_disc_steps", "tavaal_eta": "tavaal_eta", "tavaal_subset_factor": "tavaal_subset_factor",
         "lloss_subset": "lloss_subset", "lloss_weight": "lloss_weight", "lloss_margin": "lloss_margin",
         "ranker_cutoff": "lloss_cutoff", "joint_batch_norm": "vaal_joint_bn", "vaal_epochs": "vaal_epochs",
         "tavaal_epochs": "tavaal_epochs", "tavaal_disc_rank": "tavaal_disc_rank",
         "tavaal_first_uniform": "tavaal_first_uniform"}


# The options (argparse dests) that shape each acquisition's picks and training: part of every record's settings.
_SHARED = ("batch_size", "latent", "width", "disc_hidden", "disc_layers", "image_size", "lr", "beta", "adversary",
           "joint_batch_norm")
OPTIONS = {
    "vaal": tuple(DESTS[f] for f in ("vaal_iterations", *_SHARED, "vae_steps", "disc_steps", "vaal_epochs")),
    "tavaal": tuple(DESTS[f] for f in ("tavaal_iterations", *_SHARED, "tavaal_eta", "tavaal_subset_factor",
                                       "ranker_cutoff", "tavaal_epochs", "tavaal_disc_rank", "tavaal_first_uniform")),
    "lloss": tuple(DESTS[f] for f in ("lloss_subset", "lloss_weight", "lloss_margin", "ranker_cutoff")),
    "lloss-v2": tuple(DESTS[f] for f in ("lloss_subset", "lloss_weight", "ranker_cutoff")),
}
# --loss-module-all: the options that shape the attached module's training (recorded for every acquisition)
ATTACHED_OPTIONS = tuple(DESTS[f] for f in ("lloss_weight", "ranker_cutoff"))


def image_side(text: str) -> int:
    """``--vaal-image-size``: a multiple of 16 (the VAE halves its input four times)."""
    value = integer(16)(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16, the VAE halves it four times (got {value}; "
                                         "use 32 for MNIST, SVHN and CIFAR)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Options()
    g = parser.add_argument_group(
        "VAAL / TA-VAAL / learning loss",
        "Baselines of vaal/ (configurations vaal, tavaal, lloss, lloss-v2). Architecture, Adam 5e-4, beta, lambda, eta, "
        "latent size, subset sizes and the ranker's cut-off are the references'; unset widths and batch follow "
        "the dataset (MNIST: the FK paper's adaptation, widths halved). The training lengths are sized for MNIST "
        "on a CPU: on the 25,000-image IR=100 pool one VAAL iteration of the VAE and discriminator takes about "
        "1 s and one TA-VAAL iteration 0.5-0.8 s on one busy core, scoring the pool 20 s, so a query takes "
        "about 3 min (vaal), 3-4 min (tavaal) or seconds (lloss). The references train far longer: e.g. --vaal-iterations "
        "10000 (the FK paper's MNIST adaptation) and --tavaal-iterations 2000, on a GPU.")
    g.add_argument("--vaal-iterations", type=integer(0), default=d.vaal_iterations,
                   help="VAAL: training iterations of the VAE and discriminator per query (each: --vaal-vae-steps "
                        "VAE steps and --vaal-disc-steps discriminator steps); reference: 100 epochs over the pool, "
                        "10,000 at batch 25 in the FK paper's MNIST adaptation")
    g.add_argument("--tavaal-iterations", type=integer(0), default=d.tavaal_iterations,
                   help="TA-VAAL: training iterations (1 VAE and 1 discriminator step each) per query; reference: "
                        "100 epochs over labeled + subset at batch 128 (about 1,000-2,000 for MNIST's budgets)")
    g.add_argument("--vaal-batch", type=integer(1), default=None,
                   help="VAE / discriminator batch (labeled and unlabeled batches of this size); None (unset): 25 for "
                        "MNIST (the FK paper's adaptation), else 64 (VAAL reference)")
    g.add_argument("--vaal-latent", type=integer(1), default=d.latent, help="latent size z")
    g.add_argument("--vaal-width", type=integer(1), default=None,
                   help="first VAE width w (encoder w, 2w, 4w, 8w); None (unset): 64 for MNIST (every width halved, "
                        "as the FK paper's MNIST adaptation), else 128 (VAAL reference)")
    g.add_argument("--vaal-disc-hidden", type=integer(1), default=None,
                   help="discriminator hidden width; None (unset): 256 for MNIST, else 512")
    g.add_argument("--vaal-disc-layers", type=integer(0), default=None,
                   help="discriminator hidden layers; None (unset): 4 for MNIST, else 2")
    g.add_argument("--vaal-image-size", type=image_side, default=d.image_size,
                   help="VAE input side S (a multiple of 16): smaller images are zero-padded (MNIST 28 -> 32), "
                        "larger ones resized (e.g. 32 or 64 for ImageNet)")
    g.add_argument("--vaal-lr", type=number(0, above=True), default=d.lr, help="Adam learning rate of VAE and discriminator")
    g.add_argument("--vaal-beta", type=number(0), default=d.beta, help="weight beta of the KL term")
    g.add_argument("--vaal-lambda", type=number(0), default=d.adversary,
                   help="weight lambda of the VAE's adversarial term")
    g.add_argument("--vaal-vae-steps", type=integer(1), default=d.vae_steps,
                   help="VAAL: VAE steps per iteration (TA-VAAL: 1)")
    g.add_argument("--vaal-disc-steps", type=integer(1), default=d.disc_steps,
                   help="VAAL: discriminator steps per iteration (TA-VAAL: 1)")
    g.add_argument("--vaal-joint-bn", type=int, choices=(0, 1), default=d.joint_batch_norm,
                   help="VAAL and TA-VAAL: 0 passes the labeled and the unlabeled batch through the VAE separately "
                        "and scores with batch statistics, as the reference codes do (each batch's batch norm then "
                        "hides what sets it apart on average); 1 passes them together (shared statistics) and "
                        "scores with the running statistics")
    g.add_argument("--tavaal-eta", type=number(0), default=d.tavaal_eta,
                   help="TA-VAAL: weight eta of the ranker's RankNet loss in the task loss (eq. 2)")
    g.add_argument("--tavaal-subset-factor", type=integer(0), default=d.tavaal_subset_factor,
                   help="TA-VAAL: the random unlabeled subset it trains on and selects from is this times P (0: no "
                        "subset of its own: all the unlabeled images the loop offers, see --subset-size)")
    g.add_argument("--lloss-subset", type=integer(0), default=d.lloss_subset,
                   help="learning loss (lloss, lloss-v2): size of the random unlabeled subset it selects from (0: "
                        "no subset of its own, see --subset-size)")
    g.add_argument("--vaal-epochs", type=number(0, above=True), default=None,
                   help="VAAL: train the VAE and discriminator for int((labeled + unlabeled) x this / batch) "
                        "iterations instead of --vaal-iterations (VAAL reference: 100)")
    g.add_argument("--tavaal-epochs", type=number(0, above=True), default=None,
                   help="TA-VAAL: int((labeled + subset) x this / batch) iterations instead of --tavaal-iterations "
                        "(the TA-VAAL code: 100)")
    g.add_argument("--tavaal-disc-rank", choices=("sigmoid", "raw"), default=d.tavaal_disc_rank,
                   help="TA-VAAL: the ranker score the discriminator sees next to mu: sigmoid (the paper's "
                        "normalized r, section 3.2) or raw (the TA-VAAL code); the decoder always gets sigmoid(r)")
    g.add_argument("--tavaal-first-uniform", type=int, choices=(0, 1), default=d.tavaal_first_uniform,
                   help="TA-VAAL: 1 gives decoder and discriminator r ~ uniform(0, 1) in the first VAE iteration of "
                        "each query, as the TA-VAAL code (its Algorithm 1: during the first epoch); 0 the ranker's "
                        "score throughout")
    g.add_argument("--lloss-weight", type=number(0), default=d.lloss_weight,
                   help="learning loss: weight lambda of the ranking loss in the task loss (lloss: margin loss; "
                        "lloss-v2 and --loss-module-all: RankNet loss)")
    g.add_argument("--lloss-margin", type=number(0), default=d.lloss_margin,
                   help="learning loss: margin of the ranking loss")
    g.add_argument("--lloss-cutoff", type=number(0, 1), default=d.ranker_cutoff,
                   help="learning loss and TA-VAAL: share of the training epochs after which the loss module's "
                        "gradient into the task model is cut (120 of 200 epochs in the references)")



def lloss_training_loss(options: dict, spec) -> ExtraLoss:
    """``TaskHooks.extra_loss`` of learning loss: the margin ranking loss with ``--lloss-weight``,
    ``--lloss-margin`` and ``--lloss-cutoff``."""
    o = Options.from_options(options, spec)
    return partial(lloss_extra_loss, weight=o.lloss_weight, margin=o.lloss_margin, cutoff=o.ranker_cutoff)


def tavaal_training_loss(options: dict, spec) -> ExtraLoss:
    """``TaskHooks.extra_loss`` of TA-VAAL: the RankNet loss with ``--tavaal-eta`` and ``--lloss-cutoff``."""
    o = Options.from_options(options, spec)
    return partial(tavaal_extra_loss, eta=o.tavaal_eta, cutoff=o.ranker_cutoff)


def ranknet_training_loss(options: dict, spec) -> ExtraLoss:
    """``TaskHooks.extra_loss`` of lloss-v2 and of the module ``--loss-module-all`` attaches: the RankNet loss
    (TA-VAAL eq. 1) at weight ``--lloss-weight``, cut after ``--lloss-cutoff`` (the TA-VAAL code's
    ``LossPredLoss`` at ``WEIGHT`` 1, for every method)."""
    o = Options.from_options(options, spec)
    return partial(tavaal_extra_loss, eta=o.lloss_weight, cutoff=o.ranker_cutoff)


LLOSS_HOOKS = TaskHooks(wrap=with_loss_module, extra_loss=lloss_training_loss)
LLOSS_V2_HOOKS = TaskHooks(wrap=with_loss_module, extra_loss=ranknet_training_loss)
TAVAAL_HOOKS = TaskHooks(wrap=with_loss_module, extra_loss=tavaal_training_loss)
ATTACHED_HOOKS = TaskHooks(wrap=with_loss_module, extra_loss=ranknet_training_loss)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------
@contextmanager
def seeded(ctx: QueryContext) -> Iterator[torch.Generator]:
    """Seed torch from ``ctx.generator`` for the duration (RNG state restored after); yields a data-order
    generator."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=ctx.generator))
    devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed + 1)


def random_subset(ctx: QueryContext, size: int) -> np.ndarray:
    """``size`` positions of ``ctx.unlabeled`` drawn without replacement (all of them, in order, if fewer or if
    ``size`` is 0)."""
    unlabeled = np.asarray(ctx.unlabeled)
    if size == 0 or size >= len(unlabeled):
        return unlabeled
    return unlabeled[np.sort(torch.randperm(len(unlabeled), generator=ctx.generator)[:size].numpy())]


def ranker_of(ctx: QueryContext) -> LossPredictionModel:
    """The task model's loss prediction module. A plain model (not wrapped through the task hooks, e.g. in the
    acquisition contract test) gets a fresh module: an untrained ranker."""
    model = ctx.models[0]
    if isinstance(model, LossPredictionModel):
        return model
    with seeded(ctx):
        return with_loss_module(model).eval()


def _adversary_models(ctx: QueryContext, opts: Options, rank_dim: int) -> tuple[VAE, Discriminator]:
    channels = ctx.data.pool_source.image_shape[0]
    vae = VAE(channels, opts.latent, opts.width, opts.image_size, rank_dim=rank_dim).to(ctx.device)
    disc = Discriminator(opts.latent, opts.disc_hidden, opts.disc_layers, rank_dim=rank_dim).to(ctx.device)
    return vae, disc


def _scores(ctx: QueryContext, opts: Options, vae: VAE, disc: Discriminator, feed: ImageFeed,
            desc: Optional[str] = None) -> torch.Tensor:
    """D of every image of the feed: with batch statistics in batches of the training size (the references),
    or with the running statistics after joint training."""
    if opts.joint_batch_norm:
        return discriminator_scores(vae, disc, feed, ctx.device, ctx.batch_size, desc, batch_statistics=False)
    return discriminator_scores(vae, disc, feed, ctx.device, opts.batch_size, desc, batch_statistics=True)


# ----------------------------------------------------------------------------------------------------------------
# Acquisitions
# ----------------------------------------------------------------------------------------------------------------
def vaal_query(ctx: QueryContext) -> QueryResult:
    """VAAL: train a VAE and a discriminator on labeled vs the whole unlabeled pool, select the P lowest
    D(mu) (the reference sampler's ``topk(-D(mu))``); scores are D of the selected. Random while nothing
    is labeled."""
    opts = Options.from_ctx(ctx)
    if len(ctx.labeled) == 0:
        return random_query(ctx)
    src, pool = ctx.data.pool_source, ctx.data.split.pool
    unlabeled = np.asarray(ctx.unlabeled)
    with seeded(ctx) as order:
        vae, disc = _adversary_models(ctx, opts, rank_dim=0)
        lab = ImageFeed(src, pool[ctx.labeled], opts.image_size)
        unl = ImageFeed(src, pool[unlabeled], opts.image_size)
        iterations = iterations_for(opts.vaal_iterations, opts.vaal_epochs, len(ctx.labeled), len(unlabeled),
                                    opts.batch_size)
        schedule = AdversarySchedule(iterations, opts.batch_size, opts.lr, opts.beta, opts.adversary,
                                     opts.vae_steps, opts.disc_steps, kl="sum",
                                     joint_batch_norm=bool(opts.joint_batch_norm))
        train_adversary(vae, disc, lab, unl, schedule, ctx.device, order, ctx.describe("VAE + discriminator"),
                        ctx.progress)
        scores = _scores(ctx, opts, vae, disc, unl, ctx.describe("pool scores"))
    pick = lowest(scores, ctx.budget)
    return QueryResult(unlabeled[pick], scores[pick].numpy())


def tavaal_query(ctx: QueryContext) -> QueryResult:
    """TA-VAAL: a random subset of ``tavaal_subset_factor`` x P unlabeled images (0: every unlabeled image the
    loop offers); the frozen ranker's score r of the labeled images and the subset (uniform(0, 1) where the
    ranker was never trained: a model without one); a fresh rank-conditioned VAE (sigmoid(r) concatenated to z
    before the decoder) and discriminator (r concatenated to mu: sigmoid(r) as the paper, or the raw r as the
    TA-VAAL code, ``--tavaal-disc-rank``) trained with 1 + 1 steps per iteration and a mean KL (``--tavaal-first-
    uniform``: r uniform at the first iteration, as the code); the P lowest D(mu, r) of the subset (eq. 7).
    Random while nothing is labeled.
    """
    opts = Options.from_ctx(ctx)
    trained = isinstance(ctx.models[0], LossPredictionModel)
    if len(ctx.labeled) == 0:
        return random_query(ctx)
    src, pool = ctx.data.pool_source, ctx.data.split.pool
    subset = random_subset(ctx, opts.tavaal_subset_factor * ctx.budget)
    with seeded(ctx) as order:
        if trained:
            ranker = ctx.models[0]
            raw_l = predicted_losses(ranker, src, pool[ctx.labeled], ctx.device, ctx.batch_size)
            raw_u = predicted_losses(ranker, src, pool[subset], ctx.device, ctx.batch_size, ctx.describe("ranker"))
            r_l, r_u = torch.sigmoid(raw_l), torch.sigmoid(raw_u)
            d_l, d_u = (raw_l, raw_u) if opts.tavaal_disc_rank == "raw" else (r_l, r_u)
        else:
            r_l, r_u = torch.rand(len(ctx.labeled)), torch.rand(len(subset))
            d_l, d_u = r_l, r_u
        vae, disc = _adversary_models(ctx, opts, rank_dim=1)
        lab = ImageFeed(src, pool[ctx.labeled], opts.image_size, r_l, d_l)
        unl = ImageFeed(src, pool[subset], opts.image_size, r_u, d_u)
        iterations = iterations_for(opts.tavaal_iterations, opts.tavaal_epochs, len(ctx.labeled), len(subset),
                                    opts.batch_size)
        schedule = AdversarySchedule(iterations, opts.batch_size, opts.lr, opts.beta, opts.adversary,
                                     vae_steps=1, disc_steps=1, kl="mean",
                                     joint_batch_norm=bool(opts.joint_batch_norm),
                                     first_uniform=bool(opts.tavaal_first_uniform))
        train_adversary(vae, disc, lab, unl, schedule, ctx.device, order, ctx.describe("VAE + discriminator"),
                        ctx.progress)
        scores = _scores(ctx, opts, vae, disc, unl, ctx.describe("pool scores"))
    pick = lowest(scores, ctx.budget)
    return QueryResult(subset[pick], scores[pick].numpy())


def lloss_query(ctx: QueryContext) -> QueryResult:
    """Learning loss (``lloss``, and ``lloss-v2`` whose module trains with the RankNet loss): the P highest
    predicted losses within a random subset of ``lloss_subset`` unlabeled images (10,000 in the paper; 0: all
    the loop offers); scores are the predicted losses. Random while nothing is labeled."""
    opts = Options.from_ctx(ctx)
    if len(ctx.labeled) == 0:
        return random_query(ctx)
    ranker = ranker_of(ctx)
    subset = random_subset(ctx, opts.lloss_subset and max(opts.lloss_subset, ctx.budget))
    pred = predicted_losses(ranker, ctx.data.pool_source, ctx.data.split.pool[subset], ctx.device, ctx.batch_size,
                            ctx.describe("predicted losses"))
    pick = highest(pred, ctx.budget)
    return QueryResult(subset[pick], pred[pick].numpy())


# tiny VAE / discriminator settings for the contract tests' examples (a query takes a fraction of a second)
TINY_VAAL = {"vaal_iterations": 3, "tavaal_iterations": 3, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4,
             "vaal_disc_hidden": 8, "vaal_disc_layers": 1}
SPECS = (
    AcquisitionSpec("vaal", vaal_query, title="VAAL", options=OPTIONS["vaal"], add_arguments=add_arguments,
                    example=Example("vaal", TINY_VAAL, bars=("VAE + discriminator", "pool scores"))),
    AcquisitionSpec("tavaal", tavaal_query, title="TA-VAAL", options=OPTIONS["tavaal"], add_arguments=add_arguments,
                    hooks=TAVAAL_HOOKS,
                    example=Example("tavaal", {**TINY_VAAL, "tavaal_subset_factor": 3},
                                    subset_option="tavaal_subset_factor",
                                    bars=("ranker", "VAE + discriminator", "pool scores"))),
    AcquisitionSpec("lloss", lloss_query, title="learning loss", options=OPTIONS["lloss"],
                    add_arguments=add_arguments, hooks=LLOSS_HOOKS,
                    example=Example("lloss", {"lloss_subset": 60}, subset_option="lloss_subset",
                                    bars=("predicted losses",))),
    # TA-VAAL's "learning loss_v2": the module trained with its RankNet loss
    AcquisitionSpec("lloss-v2", lloss_query, title="learning loss v2", options=OPTIONS["lloss-v2"],
                    add_arguments=add_arguments, hooks=LLOSS_V2_HOOKS,
                    example=Example("lloss-v2", bars=("predicted losses",))),
)

