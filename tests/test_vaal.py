"""vaal/: VAE and discriminator shapes, ranking losses on hand-made pairs, discriminator training on a toy
problem, selection, the ranker's gradient cut-off, the acquisition contract, and two iterations end to end."""
import dataclasses
import functools
import math

import numpy as np
import pytest
import torch

from fkal.acquisitions.registry import ACQUISITIONS, TASK_HOOKS
from fkal.cli import main
from fkal.data import DATASETS, TensorSource
from fkal.io import read_jsonl
from fkal.models import lenet
from vaal.models import (VAE, Discriminator, LossPredictionModel, loss_taps, tap_width, to_vae_input,
                         with_loss_module)
from vaal.train import (AdversarySchedule, ImageFeed, discriminator_scores, gradient_cut, highest,
                        lloss_extra_loss, lowest, margin_ranking_loss, ranknet_loss, tavaal_extra_loss,
                        train_adversary, vae_loss)

SPEC = DATASETS["mnist"]
# tiny VAE / discriminator settings (ctx.options dests) so a query takes well under a second
TINY = {"vaal_iterations": 3, "tavaal_iterations": 3, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4,
        "vaal_disc_hidden": 8, "vaal_disc_layers": 1, "lloss_subset": 50}
TINY_ARGS = ["--vaal-iterations", "2", "--tavaal-iterations", "2", "--vaal-width", "4", "--vaal-batch", "8",
             "--vaal-latent", "4", "--vaal-disc-hidden", "8", "--vaal-disc-layers", "1", "--lloss-subset", "50"]


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
def test_mnist_images_are_unnormalized_and_zero_padded_to_32():
    raw = torch.rand(3, 1, 28, 28)
    mean, std = torch.tensor([0.1307]).view(1, -1, 1, 1), torch.tensor([0.3081]).view(1, -1, 1, 1)
    x = to_vae_input((raw - mean) / std, mean, std, 32)                     # [3, 1, 32, 32]
    assert x.shape == (3, 1, 32, 32)
    torch.testing.assert_close(x[:, :, 2:30, 2:30], raw)
    assert x[:, :, :2].abs().sum() == 0 and x[:, :, :, 30:].abs().sum() == 0
    big = to_vae_input(torch.rand(2, 3, 80, 80), torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), 64)
    assert big.shape == (2, 3, 64, 64) and 0 <= big.min() and big.max() <= 1


@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32)])
def test_vae_and_discriminator_shapes(channels, side):
    torch.manual_seed(0)
    x = to_vae_input(torch.randn(5, channels, side, side), torch.zeros(1, channels, 1, 1),
                     torch.ones(1, channels, 1, 1), 32)
    vae = VAE(channels, latent=32, width=8, image_size=32)
    recon, z, mu, logvar = vae(x)
    assert recon.shape == (5, channels, 32, 32) and z.shape == mu.shape == logvar.shape == (5, 32)
    assert vae.encoder(x).shape == (5, 8 * 8 * 2 * 2)                         # 8w x 2 x 2, as the reference
    d = Discriminator(32, hidden=16, layers=4)
    p = d(mu)
    assert p.shape == (5,) and ((0 < p) & (p < 1)).all()
    # TA-VAAL: the rank r next to z (decoder) and mu (discriminator)
    r = torch.rand(5)
    cvae, cd = VAE(channels, 32, 8, 32, rank_dim=1), Discriminator(32, 16, 2, rank_dim=1)
    assert cvae(x, r)[0].shape == (5, channels, 32, 32) and cd(mu, r).shape == (5,)
    assert cvae.fc_dec.in_features == 33 and cd.net[0].in_features == 33
    with pytest.raises(ValueError):
        cd(mu)


def test_reference_widths_and_other_input_sizes():
    vae = VAE(3, 32, 128, 32)
    assert [m.out_channels for m in vae.encoder if isinstance(m, torch.nn.Conv2d)] == [128, 256, 512, 1024]
    assert vae.fc_mu.in_features == 1024 * 2 * 2 and vae.fc_dec.out_features == 1024 * 4 * 4
    assert VAE(3, 8, 4, 64)(torch.rand(2, 3, 64, 64))[0].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"the VAE input size must be a multiple of 16 \(got 28\)"):
        VAE(1, 8, 4, 28)
    with pytest.raises(ValueError, match="^this discriminator is conditioned on the rank r: pass r$"):
        Discriminator(8, 16, 1, rank_dim=1).logits(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="^this VAE is conditioned on the rank r: pass r$"):
        VAE(1, 8, 4, 32, rank_dim=1).decode(torch.zeros(2, 8))


def _copy(net):
    other = lenet()
    other.load_state_dict(net.state_dict())
    return other


def test_loss_module_reads_lenet_taps_and_keeps_the_forward():
    torch.manual_seed(0)
    net = lenet()
    assert loss_taps(net) == ("conv1", "conv2", "fc1")
    assert [tap_width(net, t) for t in loss_taps(net)] == [10, 20, 50]
    # the last layer of a tap sets its width: Linear, Conv or BatchNorm (a bare one too)
    taps = torch.nn.Module()
    taps.block = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU())
    taps.norm, taps.fc, taps.act = torch.nn.BatchNorm1d(5), torch.nn.Linear(3, 7), torch.nn.ReLU()
    assert [tap_width(taps, t) for t in ("block", "norm", "fc")] == [6, 5, 7]
    with pytest.raises(ValueError, match="^cannot tell the width of tap 'act' of Module: give the class a "
                                         "LOSS_TAP_WIDTHS attribute$"):
        tap_width(taps, "act")
    wrapped = with_loss_module(net)
    assert isinstance(wrapped, LossPredictionModel) and with_loss_module(wrapped) is wrapped
    x = torch.randn(4, 1, 28, 28)
    logits, taps = wrapped(x)
    torch.testing.assert_close(logits, net(x)[0])
    assert wrapped.predict_loss(taps).shape == (4,)
    # the module's initialisation depends on the backbone's weights only, not on the global RNG
    torch.manual_seed(99)
    same = with_loss_module(_copy(net))
    torch.testing.assert_close(same.loss_module.out.weight, wrapped.loss_module.out.weight)
    # the wrapped state dict (what the loop saves each iteration) loads into a fresh wrapped model
    again = with_loss_module(lenet())
    again.load_state_dict(wrapped.state_dict())
    torch.testing.assert_close(again.predict_loss(again(x)[1]), wrapped.predict_loss(taps))


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------
def test_margin_ranking_loss_on_hand_made_pairs():
    pred = torch.tensor([2.0, 0.5, 1.0, 0.0])
    true = torch.tensor([3.0, 1.0, 2.0, 0.0])
    # pairs (0, 3): l0 > l3, p0 - p3 = 2 -> max(0, 1 - 2) = 0;  (1, 2): l1 < l2, p1 - p2 = -0.5 -> 1 - 0.5 = 0.5
    assert margin_ranking_loss(pred, true).item() == pytest.approx(0.25)
    # a tie counts as "not greater" (I = -1): pair (0, 1) with p0 - p1 = 1 -> max(0, 1 + 1) = 2
    assert margin_ranking_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)
    # an odd batch leaves its middle element out; margin is a parameter
    pred5, true5 = torch.tensor([2.0, 0.5, 9.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, -5.0, 2.0, 0.0])
    assert margin_ranking_loss(pred5, true5).item() == pytest.approx(0.25)
    assert margin_ranking_loss(pred, true, margin=3.0).item() == pytest.approx((1.0 + 2.5) / 2)
    assert margin_ranking_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == 0.0


def test_ranknet_loss_on_hand_made_pairs():
    pred = torch.tensor([2.0, 0.5, 1.0, 0.0])
    true = torch.tensor([3.0, 1.0, 2.0, 0.0])
    # pair (0, 3): target 1, x = 2 -> -log sigmoid(2);  pair (1, 2): target 0, x = -0.5 -> -log(1 - sigmoid(-0.5))
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.5))) / 2
    assert ranknet_loss(pred, true).item() == pytest.approx(expected, rel=1e-6)


def test_vae_loss_sums_or_averages_the_kl():
    x, recon = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 2)
    # KL terms 0.5 * mu^2: total 0.5 + 2 = 2.5, mean 0.625; MSE 1
    assert vae_loss(x, recon, mu, logvar, beta=1.0, kl="sum").item() == pytest.approx(3.5)
    assert vae_loss(x, recon, mu, logvar, beta=2.0, kl="mean").item() == pytest.approx(2.25)


# ----------------------------------------------------------------------------------------------------------------
# Discriminator training and selection
# ----------------------------------------------------------------------------------------------------------------
def toy_source(n: int = 300) -> TensorSource:
    """Two clusters of 16 x 16 images: the first half dark with a bright top half (A), the second half bright
    with a dark top half (B)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 30, (n, 1, 16, 16), generator=g)
    images[: n // 2, :, :8] += 200
    images[n // 2:] += 200
    images[n // 2:, :, :8] -= 200
    return TensorSource(images.to(torch.uint8), np.zeros(n), (0.5,), (0.25,))


def test_discriminator_learns_to_separate_labeled_from_unlabeled():
    """Labeled: 60 images of A; unlabeled: the other 90 of A and all 150 of B. After training, the unlabeled
    B images score lower than the unlabeled A images (they are the ones unlike the labeled set)."""
    torch.manual_seed(0)
    src = toy_source(300)
    unl_idx = np.random.default_rng(0).permutation(np.arange(60, 300))
    labeled, unlabeled = ImageFeed(src, np.arange(60), 16), ImageFeed(src, unl_idx, 16)
    is_b = torch.as_tensor(unl_idx >= 150)
    vae, disc = VAE(1, latent=4, width=4, image_size=16), Discriminator(4, hidden=16, layers=2)

    def gap():
        s = discriminator_scores(vae, disc, unlabeled, torch.device("cpu"), 256, batch_statistics=False)
        return (s[~is_b].mean() - s[is_b].mean()).item()
    before = gap()
    schedule = AdversarySchedule(iterations=300, batch_size=16, beta=1e-3, vae_steps=1, disc_steps=1, kl="mean",
                                 joint_batch_norm=True)
    stats = train_adversary(vae, disc, labeled, unlabeled, schedule, torch.device("cpu"),
                            torch.Generator().manual_seed(1), progress=False)
    after = gap()
    assert after > 0.2 and after > before + 0.1, (before, after, stats)


def test_selection_takes_the_lowest_or_highest_scores():
    scores = np.array([0.9, 0.1, 0.5, 0.1, 0.3, 0.7])
    np.testing.assert_array_equal(lowest(scores, 3), [1, 3, 4])             # ties: the lower position first
    np.testing.assert_array_equal(highest(torch.tensor(scores), 2), [0, 5])
    assert len(set(lowest(scores, 6).tolist())) == 6 and len(lowest(scores, 0)) == 0
    with pytest.raises(ValueError, match=r"^cannot pick 7 of 6 scores$"):
        lowest(scores, 7)
    # a score tensor that still carries its graph is read without it
    np.testing.assert_array_equal(lowest(torch.tensor(scores, requires_grad=True) * 2, 3), [1, 3, 4])


@pytest.mark.parametrize("vae_steps,disc_steps", [(1, 1), (1, 3), (2, 1)])
def test_each_step_after_the_first_of_an_iteration_draws_a_fresh_pair(vae_steps, disc_steps, monkeypatch):
    """Per iteration: one labeled and one unlabeled batch, and one more of each for every VAE step and every
    discriminator step after the first (VAAL's ``Solver.train``)."""
    drawn = []
    real = ImageFeed.batch
    monkeypatch.setattr(ImageFeed, "batch", lambda self, pos, device: drawn.append(self) or real(self, pos, device))
    torch.manual_seed(0)
    src = toy_source(40)
    labeled, unlabeled = ImageFeed(src, np.arange(10), 16), ImageFeed(src, np.arange(10, 40), 16)
    schedule = AdversarySchedule(iterations=3, batch_size=4, beta=1e-3, vae_steps=vae_steps, disc_steps=disc_steps)
    stats = train_adversary(VAE(1, latent=4, width=4, image_size=16), Discriminator(4, hidden=8, layers=1),
                            labeled, unlabeled, schedule, torch.device("cpu"), torch.Generator().manual_seed(1),
                            progress=False)
    pairs = 3 * (1 + (vae_steps - 1) + (disc_steps - 1))
    assert drawn.count(labeled) == drawn.count(unlabeled) == pairs
    assert math.isfinite(stats["vae_loss"]) and math.isfinite(stats["disc_loss"])


def test_training_without_labeled_or_unlabeled_images_is_a_clear_error():
    src = toy_source(20)
    vae, disc = VAE(1, latent=4, width=4, image_size=16), Discriminator(4, hidden=8, layers=1)
    for lab, unl in ((np.arange(0), np.arange(20)), (np.arange(20), np.arange(0))):
        with pytest.raises(ValueError, match="^VAAL training needs labeled and unlabeled images$"):
            train_adversary(vae, disc, ImageFeed(src, lab, 16), ImageFeed(src, unl, 16),
                            AdversarySchedule(iterations=1), torch.device("cpu"), torch.Generator().manual_seed(0),
                            progress=False)


# ----------------------------------------------------------------------------------------------------------------
# The ranker's gradient into the backbone
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra_loss", [lloss_extra_loss, tavaal_extra_loss])
def test_ranker_gradient_stops_reaching_the_backbone_after_the_cutoff(extra_loss):
    torch.manual_seed(0)
    model = with_loss_module(lenet())                                       # default cut-off 0.6
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    assert not gradient_cut(6, 10, 0.6) and gradient_cut(7, 10, 0.6)
    assert not gradient_cut(120, 200, 0.6) and gradient_cut(121, 200, 0.6)   # the reference's epoch > 120
    for epoch, reaches in ((0, True), (6, True), (7, False), (9, False)):
        model.zero_grad(set_to_none=True)
        logits, taps = model(x)
        extra_loss(model, logits, taps, y, epoch, 10).backward()
        g = model.backbone.conv1.weight.grad
        assert (g is not None and g.abs().sum() > 0) == reaches, epoch
        assert model.loss_module.out.weight.grad.abs().sum() > 0              # the module itself keeps learning


def reaches_backbone(model, loss) -> bool:
    model.zero_grad(set_to_none=True)
    loss.backward()
    g = model.backbone.conv1.weight.grad
    return g is not None and bool(g.abs().sum() > 0)


@pytest.mark.parametrize("name,options,weight", [
    ("lloss", {"lloss_weight": 0.5, "lloss_margin": 2.0, "lloss_cutoff": 0.8}, 0.5),
    ("tavaal", {"tavaal_eta": 0.25, "lloss_cutoff": 0.8}, 0.25),
    ("lloss-v2", {"lloss_weight": 0.5, "lloss_margin": 2.0, "lloss_cutoff": 0.8}, 0.5)])
def test_task_hooks_train_with_the_command_line_numbers(name, options, weight):
    torch.manual_seed(0)
    model = TASK_HOOKS[name].wrap(lenet(), SPEC)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    term = TASK_HOOKS[name].extra_loss(options, SPEC)                      # the loop's ExtraLoss
    logits, taps = model(x)
    true = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    pred = model.predict_loss(taps)
    ranking = (margin_ranking_loss(pred, true, margin=2.0) if name == "lloss" else ranknet_loss(pred, true))
    torch.testing.assert_close(term(model, logits, taps, y, 0, 10), weight * ranking)
    assert reaches_backbone(model, term(model, *model(x), y, 8, 10))         # 8 of 10 epochs: not past 0.8
    assert not reaches_backbone(model, term(model, *model(x), y, 9, 10))
    default = TASK_HOOKS[name].extra_loss({}, SPEC)                         # unset options: the references'
    assert not reaches_backbone(model, default(model, *model(x), y, 7, 10))


def test_extra_loss_needs_the_wrapped_model():
    net = lenet()
    logits, taps = net(torch.randn(2, 1, 28, 28))
    with pytest.raises(TypeError):
        lloss_extra_loss(net, logits, taps, torch.tensor([0, 1]), 0, 10)


# ----------------------------------------------------------------------------------------------------------------
# Acquisitions
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def query_ctx(query_ctx):
    """Every query here with the tiny VAE settings unless a test gives its own options."""
    return functools.partial(query_ctx, options=TINY)


@pytest.mark.parametrize("name", ["vaal", "tavaal", "lloss"])
@pytest.mark.parametrize("n_labeled,wrap", [(20, False), (20, True), (0, True)])
def test_acquisitions_return_budget_distinct_unlabeled_deterministically(query_ctx, name, n_labeled, wrap):
    wrap = wrap and name in TASK_HOOKS                                        # vaal leaves the task model alone
    results = []
    for _ in range(2):
        ctx = query_ctx(name, n_labeled=n_labeled, wrapped=wrap)
        result = ACQUISITIONS[name](ctx)
        picked = np.asarray(result.indices)
        assert len(picked) == ctx.budget and len(np.unique(picked)) == ctx.budget
        assert np.isin(picked, ctx.unlabeled).all()
        if result.scores is not None:
            assert len(result.scores) == ctx.budget
        results.append(picked)
    np.testing.assert_array_equal(*results)
    other = ACQUISITIONS[name](query_ctx(name, n_labeled=n_labeled, wrapped=wrap, seed=1)).indices
    assert not np.array_equal(other, results[0])


@pytest.mark.parametrize("name", ["vaal", "tavaal"])
def test_joint_batch_norm_keeps_the_contract(query_ctx, name):
    ctx = query_ctx(name, wrapped=name == "tavaal", options={**TINY, "vaal_joint_bn": 1})
    picked = ACQUISITIONS[name](ctx).indices
    assert len(set(picked.tolist())) == ctx.budget and np.isin(picked, ctx.unlabeled).all()


def test_bad_numbers_are_a_clear_error(query_ctx, tiny_mnist, tmp_path, capsys):
    from fkal.errors import UserError
    with pytest.raises(UserError, match="--vaal-image-size"):
        ACQUISITIONS["vaal"](query_ctx("vaal", options={**TINY, "vaal_image_size": 28}))
    assert main(common(tiny_mnist, tmp_path / "out") + ["--only", "vaal", "--vaal-batch", "0"]) == 2
    assert "--vaal-batch" in capsys.readouterr().err


@pytest.mark.parametrize("dest, value, message", [
    ("vaal_batch", 0, "--vaal-batch must be at least 1 (got 0)"),
    ("vaal_disc_steps", 0, "--vaal-disc-steps must be at least 1 (got 0)"),
    ("vaal_iterations", -1, "--vaal-iterations must not be negative (got -1)"),
    ("lloss_subset", -5, "--lloss-subset must not be negative (got -5)"),
    ("tavaal_epochs", 0.0, "--tavaal-epochs must be above 0 (got 0.0)"),
    ("tavaal_disc_rank", "logit", "--tavaal-disc-rank is sigmoid or raw (got 'logit')"),
    ("lloss_cutoff", 1.5, "--lloss-cutoff is a share of the epochs in [0, 1] (got 1.5)"),
])
def test_each_bad_option_names_its_own_flag(dest, value, message):
    """``Options.checked``, reached by any caller (the loop, own-images), not only the command line's parser."""
    import re

    from fkal.errors import UserError
    from vaal.acquisitions import Options
    with pytest.raises(UserError, match="^" + re.escape(message)):
        Options.from_options({dest: value}, SPEC)
    Options.from_options({}, SPEC)                                          # the presets pass


def test_a_feed_streams_full_batches_only_in_endless_reshuffled_epochs():
    stream = ImageFeed(None, np.arange(5)).stream(3, torch.Generator().manual_seed(0))     # positions only
    batches = [next(stream) for _ in range(4)]                 # n = 5, b = 3: one full batch an epoch, 2 dropped
    assert [len(b) for b in batches] == [3, 3, 3, 3] and all(len(set(b)) == 3 for b in batches)
    assert len({tuple(b) for b in batches}) > 1                                 # a fresh permutation each epoch
    small = ImageFeed(None, np.arange(2)).stream(4, torch.Generator().manual_seed(0))
    assert sorted(next(small)) == [0, 1]                       # smaller than a batch: the whole set


def test_a_feed_gives_32_pixel_images_unless_told_otherwise():
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    src = TensorSource(images, np.zeros(6), (0.5,), (0.25,))
    x, r, rd = ImageFeed(src, np.arange(6)).batch(np.array([4, 1]), torch.device("cpu"))
    assert x.shape == (2, 1, 32, 32) and r is None and rd is None
    torch.testing.assert_close(x[:, :, 2:30, 2:30], images[[4, 1]].float() / 255)
    assert ImageFeed(src, np.arange(6), 64).batch(np.array([0]), torch.device("cpu"))[0].shape == (1, 1, 64, 64)


def test_vaal_scores_are_the_lowest_discriminator_outputs(query_ctx):
    ctx = query_ctx("vaal")
    result = ACQUISITIONS["vaal"](ctx)
    assert np.all(np.diff(result.scores) >= 0) and ((0 < result.scores) & (result.scores < 1)).all()


def test_lloss_picks_the_highest_predicted_losses(query_ctx):
    ctx = query_ctx("lloss", wrapped=True, options={**TINY, "lloss_subset": 10_000})
    model = ctx.models[0]
    result = ACQUISITIONS["lloss"](ctx)
    with torch.no_grad():
        pool = ctx.data.split.pool
        pred = model.predict_loss(model(ctx.data.pool_source.get(pool[ctx.unlabeled]))[1]).numpy()
    np.testing.assert_array_equal(np.sort(result.indices), np.sort(ctx.unlabeled[np.argsort(-pred)[:ctx.budget]]))
    np.testing.assert_allclose(result.scores, np.sort(pred)[::-1][:ctx.budget], rtol=1e-5)


def test_query_leaves_the_global_rng_alone(query_ctx):
    ctx = query_ctx("vaal")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ACQUISITIONS["vaal"](ctx)
    torch.testing.assert_close(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------------
def common(root, out, iterations=2):
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "2",
            "--iterations", str(iterations), "--pool-size", "10", "--no-progress", "--eval-batch", "128"] + TINY_ARGS


@pytest.mark.e2e
def test_two_iterations_end_to_end_with_resume(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    configs = ["lloss", "tavaal", "vaal"]
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    assert main(common(tiny_mnist, out, iterations=1) + ["--only", *configs]) == 0
    assert main(common(tiny_mnist, out) + ["--only", *configs]) == 0          # resumes from the wrapped state
    records, warnings = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert not warnings and sorted((r["config"], r["iteration"]) for r in records) == sorted(
        (c, b) for c in configs for b in (1, 2))
    for r in records:
        assert r["labeled"] == 10 * r["iteration"] and r["query_seconds"] > 0
    ir = out / "MNIST" / "run0" / "ir4" / "rotation"
    for name in ("lloss", "tavaal"):
        state = torch.load(ir / name / "state_b02.pt")
        assert any(k.startswith("loss_module.") for k in state["models"][0])
        assert (state["labeled_at"] >= 0).sum() == 20
    assert not any(k.startswith("loss_module.") for k in torch.load(ir / "vaal" / "state_b02.pt")["models"][0])


def test_ranking_losses_on_more_hand_made_pairs():
    # margin: pair (0, 1) with l0 > l1, p0 - p1 = 0.25 -> 1 - 0.25 = 0.75 (a quotient would give 1 - 4 < 0)
    assert margin_ranking_loss(torch.tensor([0.5, 0.25]), torch.tensor([2.0, 1.0])).item() == pytest.approx(0.75)
    # RankNet: a tie is "not greater" (target 0): -log(1 - sigmoid(1)); one element: no pair, 0 with a gradient
    tie = ranknet_loss(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).item()
    assert tie == pytest.approx(math.log(1 + math.e))
    single = torch.tensor([3.0], requires_grad=True)
    loss = ranknet_loss(single, torch.tensor([1.0]))
    assert loss.item() == 0.0 and torch.isfinite(torch.autograd.grad(loss, single)[0]).all()


def test_extra_losses_default_to_unit_weights():
    torch.manual_seed(0)
    model = with_loss_module(lenet())
    x, y = torch.randn(6, 1, 28, 28), torch.arange(6) % 10
    logits, taps = model(x)
    true = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    pred = model.predict_loss(taps)
    torch.testing.assert_close(lloss_extra_loss(model, logits, taps, y, 0, 10), margin_ranking_loss(pred, true, 1.0))
    torch.testing.assert_close(tavaal_extra_loss(model, logits, taps, y, 0, 10), ranknet_loss(pred, true))


def test_extra_loss_on_a_plain_model_names_what_is_missing():
    net = lenet()
    logits, taps = net(torch.randn(2, 1, 28, 28))
    with pytest.raises(TypeError, match=r"LossPredictionModel\), got LeNet"):
        tavaal_extra_loss(net, logits, taps, torch.tensor([0, 1]), 0, 10)


def test_highest_takes_lists_arrays_and_tensors():
    for scores in ([0.2, 0.9, 0.5], np.array([0.2, 0.9, 0.5]), torch.tensor([0.2, 0.9, 0.5]),
                   torch.tensor([0.2, 0.9, 0.5], requires_grad=True) * 2):          # one that carries its graph
        assert highest(scores, 2).tolist() == [1, 2]


# every VAAL / TA-VAAL / learning-loss flag, a value other than its default, and what Options holds then
FLAG_VALUES = [
    ("--vaal-iterations", "7", "vaal_iterations", 7), ("--tavaal-iterations", "9", "tavaal_iterations", 9),
    ("--vaal-batch", "6", "batch_size", 6), ("--vaal-latent", "5", "latent", 5), ("--vaal-width", "3", "width", 3),
    ("--vaal-disc-hidden", "11", "disc_hidden", 11), ("--vaal-disc-layers", "2", "disc_layers", 2),
    ("--vaal-image-size", "48", "image_size", 48), ("--vaal-lr", "0.002", "lr", 0.002),
    ("--vaal-beta", "0.5", "beta", 0.5), ("--vaal-lambda", "0.25", "adversary", 0.25),
    ("--vaal-vae-steps", "3", "vae_steps", 3), ("--vaal-disc-steps", "4", "disc_steps", 4),
    ("--vaal-joint-bn", "1", "joint_batch_norm", 1), ("--tavaal-eta", "0.75", "tavaal_eta", 0.75),
    ("--tavaal-subset-factor", "3", "tavaal_subset_factor", 3), ("--lloss-subset", "70", "lloss_subset", 70),
    ("--vaal-epochs", "2.5", "vaal_epochs", 2.5), ("--tavaal-epochs", "1.5", "tavaal_epochs", 1.5),
    ("--tavaal-disc-rank", "raw", "tavaal_disc_rank", "raw"),
    ("--tavaal-first-uniform", "1", "tavaal_first_uniform", 1), ("--lloss-weight", "0.125", "lloss_weight", 0.125),
    ("--lloss-margin", "1.5", "lloss_margin", 1.5), ("--lloss-cutoff", "0.3", "ranker_cutoff", 0.3)]


def test_every_flag_reaches_its_option_with_its_type():
    from fkal.cli import build_parser
    from vaal.acquisitions import Options
    args = build_parser().parse_args([a for flag, text, _, _ in FLAG_VALUES for a in (flag, text)])
    opts = Options.from_options(vars(args), SPEC)
    for flag, _, field, value in FLAG_VALUES:
        got = getattr(opts, field)
        assert got == value and type(got) is type(value), (flag, got)
    assert {f for _, _, f, _ in FLAG_VALUES} == {f.name for f in dataclasses.fields(Options)}


@pytest.mark.parametrize("name", ["vaal", "tavaal"])
def test_the_vae_and_discriminator_train_with_the_options_numbers(query_ctx, monkeypatch, name):
    import vaal.acquisitions as A
    seen = {}
    monkeypatch.setattr(A, "train_adversary",
                        lambda vae, disc, lab, unl, schedule, device, *rest: seen.update(s=schedule, device=device))
    options = dict(TINY, vaal_batch=6, vaal_lr=0.002, vaal_beta=0.5, vaal_lambda=0.25, vaal_vae_steps=3,
                   vaal_disc_steps=4, vaal_joint_bn=1, tavaal_first_uniform=1)
    ctx = query_ctx(name, options=options)
    ACQUISITIONS[name](ctx)
    s = seen["s"]
    assert (s.iterations, s.batch_size, s.lr, s.beta, s.adversary) == (3, 6, 0.002, 0.5, 0.25)
    assert s.joint_batch_norm is True and seen["device"] == ctx.device
    if name == "vaal":                                 # VAAL's steps and summed KL; TA-VAAL's 1 + 1, mean KL
        assert (s.vae_steps, s.disc_steps, s.kl, s.first_uniform) == (3, 4, "sum", False)
    else:
        assert (s.vae_steps, s.disc_steps, s.kl, s.first_uniform) == (1, 1, "mean", True)



def test_without_flags_the_options_are_the_numbers_options_defines():
    """The command line's defaults are the numbers themselves (recorded with the results), not None filled in
    later: --vaal-iterations and --tavaal-iterations give Options' own, and --tavaal-epochs, when given, must be
    above 0."""
    from fkal.cli import build_parser
    from vaal.acquisitions import Options
    args = build_parser().parse_args([])
    assert (args.vaal_iterations, args.tavaal_iterations) == (Options.vaal_iterations, Options.tavaal_iterations)
    assert isinstance(args.vaal_iterations, int) and isinstance(args.tavaal_iterations, int)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--tavaal-epochs", "0"])


def test_an_image_size_the_vae_cannot_halve_four_times_is_refused_with_the_size_to_use(capsys):
    from fkal.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--vaal-image-size", "40"])
    assert ("must be a multiple of 16, the VAE halves it four times (got 40; use 32 for MNIST, SVHN and CIFAR)"
            in capsys.readouterr().err)
