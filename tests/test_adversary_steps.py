"""VAAL's and TA-VAAL's adversarial training steps against the losses written out by hand: which batches each step
sees, which terms each loss adds and with which targets, what is detached. One iteration of ``train_adversary``
is replayed here on copies of the same models with plain tensor arithmetic for every loss, then the weights of
both runs are compared."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fkal.data import TensorSource
from vaal.models import VAE, Discriminator, to_vae_input
from vaal.train import AdversarySchedule, ImageFeed, train_adversary


def source(n: int = 40) -> TensorSource:
    g = torch.Generator().manual_seed(3)
    return TensorSource(torch.randint(0, 256, (n, 1, 16, 16), generator=g).to(torch.uint8), np.zeros(n),
                        (0.5,), (0.25,))


def log_sigmoid(x):
    return -torch.log1p(torch.exp(-x))


def bce_to(logits, target: float):
    """-mean(t log s + (1 - t) log(1 - s)), s = sigmoid(logits), written out."""
    return -(target * log_sigmoid(logits) + (1 - target) * log_sigmoid(-logits)).mean()


def vae_terms(x, recon, mu, logvar, beta, kl):
    mse = ((recon - x) ** 2).sum() / x.numel()
    k = -0.5 * (1 + logvar - mu ** 2 - torch.exp(logvar))
    return mse + beta * (k.sum() if kl == "sum" else k.sum() / k.numel())


def by_hand(vae, disc, src, lab_idx, unl_idx, s: AdversarySchedule, seed: int, ranks=None):
    """One iteration as VAAL's ``Solver.train``: a labeled and an unlabeled batch, ``vae_steps`` VAE steps (a fresh
    pair after the first), ``disc_steps`` discriminator steps (a fresh pair after the first) on mu computed
    without gradient; separate Adam optimizers."""
    g = torch.Generator().manual_seed(seed)
    b = s.batch_size

    def draws(n):
        while True:
            perm = torch.randperm(n, generator=g).numpy()
            for start in range(0, n - b + 1, b):
                yield perm[start:start + b]
    lab, unl = draws(len(lab_idx)), draws(len(unl_idx))

    def pair():
        pl, pu = next(lab), next(unl)
        xl = to_vae_input(src.get(lab_idx[pl]), src.mean, src.std, 16)
        xu = to_vae_input(src.get(unl_idx[pu]), src.mean, src.std, 16)
        rl = None if ranks is None else ranks[0][torch.as_tensor(pl)]
        ru = None if ranks is None else ranks[1][torch.as_tensor(pu)]
        return xl, xu, rl, ru
    opt_v = torch.optim.Adam(vae.parameters(), lr=s.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=s.lr)
    vae.train()
    disc.train()
    xl, xu, rl, ru = pair()
    for step in range(s.vae_steps):
        if step:
            xl, xu, rl, ru = pair()
        recon_l, _, mu_l, logvar_l = vae(xl, rl)
        recon_u, _, mu_u, logvar_u = vae(xu, ru)
        loss = (vae_terms(xl, recon_l, mu_l, logvar_l, s.beta, s.kl) + vae_terms(xu, recon_u, mu_u, logvar_u, s.beta,
                                                                                  s.kl)
                + s.adversary * (bce_to(disc.logits(mu_l, rl), 1.0) + bce_to(disc.logits(mu_u, ru), 1.0)))
        opt_v.zero_grad()
        loss.backward()
        opt_v.step()
    for step in range(s.disc_steps):
        if step:
            xl, xu, rl, ru = pair()
        with torch.no_grad():
            mu_l, mu_u = vae.encode(xl)[0], vae.encode(xu)[0]
        d = bce_to(disc.logits(mu_l, rl), 1.0) + bce_to(disc.logits(mu_u, ru), 0.0)
        opt_d.zero_grad()
        d.backward()
        opt_d.step()


@pytest.mark.parametrize("vae_steps, disc_steps, kl, adversary", [(2, 1, "sum", 1.0), (1, 2, "mean", 15.0)])
def test_one_iteration_equals_the_losses_written_out(vae_steps, disc_steps, kl, adversary):
    torch.manual_seed(0)
    src = source()
    lab_idx, unl_idx = np.arange(12), np.arange(12, 40)
    vae, disc = VAE(1, latent=4, width=4, image_size=16), Discriminator(4, hidden=8, layers=2)
    vae2, disc2 = copy.deepcopy(vae), copy.deepcopy(disc)
    s = AdversarySchedule(iterations=1, batch_size=4, lr=1e-2, beta=0.5, adversary=adversary, vae_steps=vae_steps,
                          disc_steps=disc_steps, kl=kl)
    torch.manual_seed(11)                                  # the reparameterization's noise draws from it
    train_adversary(vae, disc, ImageFeed(src, lab_idx, 16), ImageFeed(src, unl_idx, 16), s, torch.device("cpu"),
                    torch.Generator().manual_seed(7), progress=False)
    torch.manual_seed(11)
    by_hand(vae2, disc2, src, lab_idx, unl_idx, s, seed=7)
    for a, b in ((vae, vae2), (disc, disc2)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    moved = [not torch.equal(p, q) for p, q in zip(vae.state_dict().values(),
                                                  VAE(1, latent=4, width=4, image_size=16).state_dict().values())]
    assert any(moved)                                      # the comparison is of trained weights


def test_tavaal_steps_feed_the_ranks_to_the_decoder_and_the_discriminator():
    """TA-VAAL (one VAE and one discriminator step, KL averaged): the ranks of each batch's images reach both
    the decoder and the discriminator, as written out by hand."""
    torch.manual_seed(1)
    src = source()
    lab_idx, unl_idx = np.arange(12), np.arange(12, 40)
    r_l, r_u = torch.rand(12), torch.rand(28)
    vae, disc = VAE(1, latent=4, width=4, image_size=16, rank_dim=1), Discriminator(4, hidden=8, layers=2,
                                                                                     rank_dim=1)
    vae2, disc2 = copy.deepcopy(vae), copy.deepcopy(disc)
    s = AdversarySchedule(iterations=1, batch_size=4, lr=1e-2, vae_steps=1, disc_steps=1, kl="mean")
    torch.manual_seed(12)
    train_adversary(vae, disc, ImageFeed(src, lab_idx, 16, ranks=r_l), ImageFeed(src, unl_idx, 16, ranks=r_u), s,
                    torch.device("cpu"), torch.Generator().manual_seed(9), progress=False)
    torch.manual_seed(12)
    by_hand(vae2, disc2, src, lab_idx, unl_idx, s, seed=9, ranks=(r_l, r_u))
    for a, b in ((vae, vae2), (disc, disc2)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
