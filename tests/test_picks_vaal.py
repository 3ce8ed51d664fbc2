"""VAAL, TA-VAAL and learning loss recomputed by brute force on a small pool, with task models trained a few
steps and wrapped as the loop wraps them (the ranker of TA-VAAL and learning loss trained with its loss).

The VAE and discriminator are trained inside the query; a spy on ``train_adversary`` keeps them and the two
image feeds. The reference then converts every image to the VAE's input by hand, evaluates the discriminator
image by image (running statistics) or batch by batch in the feed's order (batch statistics, the references'
scoring), computes the ranker's r and the predicted loss image by image from the loss module's weights, maps the
feeds back to pool positions, and takes the P lowest D (VAAL, TA-VAAL) or the P highest predicted losses
(learning loss) within the candidates.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vaal.acquisitions as vaal_acq
from acquisition_cases import TINY_VAAL, check_contract, trained_context
from fkal.acquisitions.registry import ACQUISITIONS


class TrainSpy:
    """Wraps ``train_adversary`` and keeps (vae, disc, labeled feed, unlabeled feed) of each call."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, vae, disc, labeled, unlabeled, *args, **kwargs):
        out = self.real(vae, disc, labeled, unlabeled, *args, **kwargs)
        self.calls.append((vae, disc, labeled, unlabeled))
        return out


def vae_input_by_hand(ctx, pool_index: np.ndarray) -> torch.Tensor:
    """Pool images ``[B, 1, 28, 28]`` back to [0, 1], zero-padded by 2 on every side: ``[B, 1, 32, 32]``."""
    src = ctx.data.pool_source
    x = src.images[torch.as_tensor(pool_index)].float().view(len(pool_index), 1, 28, 28) / 255.0
    return F.pad(x, (2, 2, 2, 2))


def predicted_loss_by_hand(model, x: torch.Tensor) -> float:
    """The loss module on one image ``[1, 1, 28, 28]``: per tap (conv1, conv2, fc1) global average pool, its
    Linear, ReLU; the concatenation through the output Linear."""
    _, taps = model.backbone(x)
    lm = model.loss_module
    hs = [F.relu(F.linear(taps[t].flatten(2).mean(2) if taps[t].dim() > 2 else taps[t], fc.weight, fc.bias))
          for t, fc in zip(("conv1", "conv2", "fc1"), lm.fcs)]
    return float(F.linear(torch.cat(hs, 1), lm.out.weight, lm.out.bias)[0])


def discriminator_by_hand(ctx, vae, disc, feed, ranks, batch: int, batch_statistics: bool) -> np.ndarray:
    """D(mu(x) [, r]) of the feed's images: one image at a time with running statistics, or in consecutive
    batches of ``batch`` with batch statistics."""
    x = vae_input_by_hand(ctx, feed.idx)
    step = batch if batch_statistics else 1
    vae.train(batch_statistics)
    out = []
    with torch.no_grad():
        for s in range(0, len(x), step):
            mu = vae.encode(x[s:s + step])[0]
            if ranks is not None:
                mu = torch.cat([mu, ranks[s:s + step].view(-1, 1)], 1)
            out.append(torch.sigmoid(disc.net(mu)[:, 0]))
    vae.eval()
    return torch.cat(out).double().numpy()


def positions_of(ctx, pool_index: np.ndarray) -> np.ndarray:
    where = {int(p): i for i, p in enumerate(ctx.data.split.pool)}
    return np.array([where[int(p)] for p in pool_index])


def assert_extreme_p(picked, scores, candidates, brute, lowest: bool):
    """picked are the P lowest (highest) brute scores among ``candidates`` and ``scores`` theirs."""
    score_of = dict(zip(candidates.tolist(), brute.tolist()))
    assert set(picked.tolist()) <= set(candidates.tolist())
    got = np.array([score_of[int(p)] for p in picked])
    np.testing.assert_allclose(scores, got, rtol=1e-4, atol=1e-6)
    rest = np.array([score_of[int(c)] for c in candidates if c not in set(picked.tolist())])
    if lowest:
        assert got.max() <= rest.min() + 1e-6
    else:
        assert got.min() >= rest.max() - 1e-6


@pytest.mark.parametrize("joint", [1, 0])
def test_vaal_picks_the_lowest_discriminator_outputs_recomputed(tiny_mnist, monkeypatch, joint):
    spy = TrainSpy(vaal_acq.train_adversary)
    monkeypatch.setattr(vaal_acq, "train_adversary", spy)
    ctx = trained_context(tiny_mnist, "vaal", options={**TINY_VAAL, "vaal_joint_bn": joint})
    ctx.unlabeled = ctx.unlabeled[::2]
    result = ACQUISITIONS["vaal"](ctx)
    picked = check_contract(ctx, result)
    (vae, disc, lab, unl), = spy.calls
    np.testing.assert_array_equal(positions_of(ctx, lab.idx), ctx.labeled)
    np.testing.assert_array_equal(positions_of(ctx, unl.idx), ctx.unlabeled)   # the whole unlabeled pool
    brute = discriminator_by_hand(ctx, vae, disc, unl, None, TINY_VAAL["vaal_batch"], batch_statistics=not joint)
    assert_extreme_p(picked, result.scores, positions_of(ctx, unl.idx), brute, lowest=True)


@pytest.mark.parametrize("joint", [1, 0])
def test_tavaal_picks_the_lowest_d_of_mu_and_rank_within_its_subset(tiny_mnist, monkeypatch, joint):
    spy = TrainSpy(vaal_acq.train_adversary)
    monkeypatch.setattr(vaal_acq, "train_adversary", spy)
    options = {**TINY_VAAL, "tavaal_subset_factor": 3, "vaal_joint_bn": joint}
    ctx = trained_context(tiny_mnist, "tavaal", options=options, budget=10)
    result = ACQUISITIONS["tavaal"](ctx)
    picked = check_contract(ctx, result)
    (vae, disc, lab, unl), = spy.calls
    subset = positions_of(ctx, unl.idx)
    assert len(subset) == 30 and len(set(subset.tolist())) == 30 and np.isin(subset, ctx.unlabeled).all()
    np.testing.assert_array_equal(positions_of(ctx, lab.idx), ctx.labeled)
    model = ctx.models[0]
    with torch.no_grad():                                                    # r = sigmoid(ranker), image by image
        for feed in (lab, unl):
            r = [torch.sigmoid(torch.tensor(predicted_loss_by_hand(model, ctx.data.pool_source.get(np.array([i])))))
                 for i in feed.idx]
            torch.testing.assert_close(feed.ranks, torch.stack(r), rtol=1e-5, atol=1e-6)
    brute = discriminator_by_hand(ctx, vae, disc, unl, unl.ranks, TINY_VAAL["vaal_batch"],
                                  batch_statistics=not joint)
    assert_extreme_p(picked, result.scores, subset, brute, lowest=True)


def test_lloss_picks_the_highest_predicted_losses_within_its_random_subset(tiny_mnist, monkeypatch):
    ctx = trained_context(tiny_mnist, "lloss", options={"lloss_subset": 60})
    result = ACQUISITIONS["lloss"](ctx)
    picked = check_contract(ctx, result)
    # the subset by its definition: 60 of the unlabeled positions drawn with the query's generator
    perm = torch.randperm(len(ctx.unlabeled), generator=torch.Generator().manual_seed(0)).numpy()
    subset = ctx.unlabeled[np.sort(perm[:60])]
    model = ctx.models[0]
    with torch.no_grad():
        brute = np.array([predicted_loss_by_hand(model, ctx.data.pool_source.get(ctx.data.split.pool[[p]]))
                          for p in subset])
    assert np.ptp(brute) > 0
    assert_extreme_p(picked, result.scores, subset, brute, lowest=False)
    everywhere = ACQUISITIONS["lloss"](trained_context(tiny_mnist, "lloss", options={"lloss_subset": 10_000}))
    assert not np.array_equal(np.sort(everywhere.indices), np.sort(picked))   # the subset matters
    # 0: the whole unlabeled pool; a subset smaller than P grows to P
    seen = []
    real = vaal_acq.predicted_losses
    monkeypatch.setattr(vaal_acq, "predicted_losses",
                        lambda ranker, src, idx, *a: (seen.append(len(idx)), real(ranker, src, idx, *a))[1])
    for size, scored in ((0, len(ctx.unlabeled)), (5, ctx.budget)):
        seen.clear()
        ACQUISITIONS["lloss"](trained_context(tiny_mnist, "lloss", options={"lloss_subset": size}))
        assert seen == [scored], (size, seen)


def test_lloss_with_a_single_labeled_image_already_ranks(tiny_mnist):
    ctx = trained_context(tiny_mnist, "lloss", options={"lloss_subset": 10_000}, n_labeled=1)
    result = ACQUISITIONS["lloss"](ctx)
    model = ctx.models[0]
    with torch.no_grad():
        brute = np.array([predicted_loss_by_hand(model, ctx.data.pool_source.get(ctx.data.split.pool[[p]]))
                          for p in ctx.unlabeled])
    assert_extreme_p(check_contract(ctx, result), result.scores, ctx.unlabeled, brute, lowest=False)
