"""MC-dropout uncertainty (varR, entropy, bald, std; E members x K passes) recomputed by brute force.

The reference is an MC-dropout LeNet written out by hand from each trained member's weights (functional
convolutions and ``F.dropout(training=True)`` at the three places of the MC variant), driven with the dropout
seeds the query draws from its generator, and metrics computed per image in numpy from their definitions.
The picks must be the best P under these scores, and ``result.scores`` the scores of the picks.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.registry import ACQUISITIONS


def mc_lenet_by_hand(state: dict, x: torch.Tensor) -> torch.Tensor:
    """LeNet with dropout 0.25 after each conv block and 0.5 after fc1, active: logits ``[B, C]``."""
    h = F.relu(F.max_pool2d(F.conv2d(x, state["conv1.weight"], state["conv1.bias"]), 2))
    h = F.dropout(h, 0.25, training=True)
    h = F.relu(F.max_pool2d(F.conv2d(h, state["conv2.weight"], state["conv2.bias"]), 2))
    h = F.dropout(h, 0.25, training=True)
    h = F.relu(F.linear(h.flatten(1), state["fc1.weight"], state["fc1.bias"]))
    h = F.dropout(h, 0.5, training=True)
    return F.linear(h, state["fc2.weight"], state["fc2.bias"])


def brute_probs(ctx, K: int) -> np.ndarray:
    """Softmax of every pass: ``[N_u, E, K, C]`` float64, image-major (member e's dropout masks on the i-th batch
    come from the seed s_e + i, the s_e drawn from the query's generator; the K passes of a batch share one
    forward of the batch repeated K times, as the query makes them)."""
    gen = torch.Generator().manual_seed(0)                                   # the context's seed
    seeds = [int(s) for s in torch.randint(2 ** 62, (len(ctx.models),), generator=gen)]
    states = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in ctx.models]
    idx = ctx.data.split.pool[ctx.unlabeled]
    out = np.zeros((len(idx), len(states), K, 10))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for i, start in enumerate(range(0, len(idx), ctx.batch_size)):
            x = ctx.data.pool_source.get(idx[start:start + ctx.batch_size])     # [B, 1, 28, 28]
            B = len(x)
            for e, state in enumerate(states):
                torch.manual_seed(seeds[e] + i)
                logits = mc_lenet_by_hand(state, x.repeat(K, 1, 1, 1))        # row k * B + b: pass k of image b
                probs = logits.softmax(1).double().numpy()
                for k in range(K):
                    out[start:start + B, e, k] = probs[k * B:(k + 1) * B]
    return out


def entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def metric_by_definition(name: str, probs: np.ndarray) -> np.ndarray:
    """probs ``[N, S, C]`` (S = E * K pooled passes) -> ``[N]``."""
    N, S, C = probs.shape
    if name == "varR":                                                      # 1 - modal vote count / S
        votes = np.stack([np.bincount(p.argmax(1), minlength=C) for p in probs])
        return 1.0 - votes.max(1) / S
    if name == "entropy":
        return entropy(probs.mean(1))
    if name == "bald":
        return entropy(probs.mean(1)) - entropy(probs).mean(1)
    if name == "std":                                                       # population std over passes
        return np.sqrt(((probs - probs.mean(1, keepdims=True)) ** 2).mean(1)).mean(1)
    raise KeyError(name)


def assert_best_p(picked_pos: np.ndarray, scores: np.ndarray, brute: np.ndarray, atol: float = 1e-5):
    """``picked_pos`` (positions into the brute array) are the P highest brute scores (ties may go either way)
    and ``scores`` are theirs."""
    np.testing.assert_allclose(scores, brute[picked_pos], rtol=1e-4, atol=atol)
    rest = np.setdiff1d(np.arange(len(brute)), picked_pos)
    assert brute[picked_pos].min() >= brute[rest].max() - atol


@pytest.mark.parametrize("config", ["varR-E2-K3", "entropy-K4", "bald-E2-K3", "std-K4", "entropy-E2-K2"])
def test_uncertainty_picks_are_the_top_scores_of_a_hand_made_mc_dropout_model(tiny_mnist, config):
    name = config.split("-")[0]
    ctx = trained_context(tiny_mnist, config)                               # iteration 2: ranked, not random
    result = ACQUISITIONS[name](ctx)
    picked = check_contract(ctx, result)
    K = ctx.config.K
    probs = brute_probs(ctx, K)                                             # [N_u, E, K, C]
    brute = metric_by_definition(name, probs.reshape(len(probs), -1, probs.shape[-1]))
    position = {int(p): i for i, p in enumerate(ctx.unlabeled)}
    assert_best_p(np.array([position[int(p)] for p in picked]), np.asarray(result.scores), brute)
    assert np.ptp(brute) > 0                                                # not a degenerate pool


def test_each_member_keeps_its_trained_weights_and_its_own_passes(tiny_mnist):
    """E = 2 trained members: the pooled score differs from either member's alone (both members count)."""
    ctx = trained_context(tiny_mnist, "entropy-E2-K3")
    probs = brute_probs(ctx, 3)                                             # [N_u, 2, 3, C]
    both = metric_by_definition("entropy", probs.reshape(len(probs), -1, 10))
    for e in range(2):
        alone = metric_by_definition("entropy", probs[:, e])
        assert not np.allclose(both, alone)
    from fkal.acquisitions.uncertainty import max_entropy, mc_scores
    got = mc_scores(max_entropy, ctx.models, ctx.data.pool_source, ctx.data.split.pool[ctx.unlabeled], 3,
                    ctx.device, ctx.batch_size, torch.Generator().manual_seed(0), model_name="lenet",
                    num_classes=10)
    np.testing.assert_allclose(got.numpy(), both, rtol=1e-4, atol=1e-6)
