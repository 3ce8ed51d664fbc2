"""MC-dropout uncertainty: the metrics on hand-made probabilities, the stochastic passes, the acquisitions."""
import numpy as np
import pytest
import torch

from fkal.acquisitions.random_sampling import random_query
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.cli import build_parser
from fkal.data import TensorSource
from fkal.models import lenet
from fkal.training import predict
from fkal.acquisitions.uncertainty import (METRICS, bald, max_entropy, mc_probabilities, mc_scores, mean_std, top_scores,
                              variation_ratio)

e0, e1, e2 = torch.eye(3)


def hand_probs() -> torch.Tensor:
    """[K=4, N=4, C=3]: image 0 all passes agree, 1 a 2-2 vote tie, 2 a 3-1 vote, 3 votes 1-1-2."""
    p = torch.tensor([.7, .2, .1])
    q, r = torch.tensor([.6, .4, 0.]), torch.tensor([0., .4, .6])
    images = [[p, p, p, p], [e0, e0, e1, e1], [q, q, q, r], [e0, e1, e2, e2]]
    return torch.stack([torch.stack(passes) for passes in images], 1)           # [K, N, C]


# By hand, H = Shannon entropy in nats:
#   image 0: mean = (.7, .2, .1), H = 0.8018186; every pass equal, so varR = BALD = std = 0
#   image 1: mean = (.5, .5, 0), H = ln 2; one-hot passes have H = 0; per-class std (.5, .5, 0)
#   image 2: mean = (.45, .4, .15), H = 1.0104128; each pass H(.6, .4) = 0.6730117;
#            std of (.6, .6, .6, 0) and of (0, 0, 0, .6) = sqrt(.0675), of (.4 x4) = 0
#   image 3: mean = (.25, .25, .5), H = 1.0397208; std (sqrt(.1875), sqrt(.1875), .5)
EXPECTED = {
    "varR": [0.0, 0.5, 0.25, 0.5],                       # 1 - (top vote count) / 4; image 1 is a 2-2 tie
    "entropy": [0.8018186, 0.6931472, 1.0104128, 1.0397208],
    "bald": [0.0, 0.6931472, 1.0104128 - 0.6730117, 1.0397208],
    "std": [0.0, 1 / 3, 2 * 0.0675 ** 0.5 / 3, 0.4553418],
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_by_hand(name):
    torch.testing.assert_close(METRICS[name](hand_probs()), torch.tensor(EXPECTED[name]), atol=1e-6, rtol=0)


def test_metric_names_are_the_functions():
    assert METRICS == {"varR": variation_ratio, "entropy": max_entropy, "bald": bald, "std": mean_std}


def test_variation_ratio_ties_and_agreement():
    # 6 passes, 3 classes: votes 2-2-2 (three-way tie), 3-3-0 (two-way tie), 6-0-0 (all agree)
    votes = [[0, 1, 2, 0, 1, 2], [1, 2, 1, 2, 1, 2], [2, 2, 2, 2, 2, 2]]
    probs = torch.nn.functional.one_hot(torch.tensor(votes).T, 3).float() * 0.8 + 0.2 / 3   # [6, 3, 3]
    torch.testing.assert_close(variation_ratio(probs), torch.tensor([1 - 2 / 6, 1 - 3 / 6, 0.0]))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_identical_members_give_the_single_member_metric(name):
    """Pooling the passes of E identical members (the tensor repeated along K) leaves every metric unchanged."""
    probs = hand_probs()
    torch.testing.assert_close(METRICS[name](probs.repeat(3, 1, 1)), METRICS[name](probs), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_are_zero_or_minimal_when_all_passes_agree(name):
    probs = torch.tensor([.5, .3, .2]).expand(5, 2, 3)                          # [K=5, N=2, C=3], all equal
    expected = max_entropy(probs) if name == "entropy" else torch.zeros(2)
    torch.testing.assert_close(METRICS[name](probs), expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Stochastic passes
# ----------------------------------------------------------------------------------------------------------------
def random_source(n=23, seed=0) -> TensorSource:
    g = torch.Generator().manual_seed(seed)
    return TensorSource(torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), np.zeros(n),
                        (0.1307,), (0.3081,))


def passes(models, K=5, seed=0, **kw):
    source = random_source()
    kw = {"batch_size": 10, "model_name": "lenet", "num_classes": 10, **kw}
    return mc_probabilities(models, source, np.arange(len(source)), K, torch.device("cpu"),
                            generator=torch.Generator().manual_seed(seed), **kw)


def test_mc_passes_differ_while_the_plain_model_is_deterministic():
    torch.manual_seed(0)
    model = lenet().eval()
    probs = passes([model], K=4)
    assert probs.shape == (4, 23, 10)
    torch.testing.assert_close(probs.sum(2), torch.ones(4, 23))
    assert not torch.allclose(probs[0], probs[1])                               # dropout is active
    source = random_source()
    a = predict(model, source, np.arange(23), torch.device("cpu"), 10)
    b = predict(model, source, np.arange(23), torch.device("cpu"), 10)
    torch.testing.assert_close(a, b)                                            # the model itself is untouched
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_mc_passes_are_seeded_by_the_generator_and_leave_the_global_rng_alone():
    torch.manual_seed(0)
    model = lenet().eval()
    state = torch.get_rng_state()
    torch.testing.assert_close(passes([model], seed=3), passes([model], seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.allclose(passes([model], seed=3), passes([model], seed=4))


def test_ensemble_passes_are_the_members_passes_concatenated():
    """E members x K passes -> [E*K, N, C]; member e's rows do not depend on the other members."""
    torch.manual_seed(0)
    a, b = lenet().eval(), lenet().eval()
    single = passes([a], K=3)
    both = passes([a, a], K=3)
    assert both.shape == (6, 23, 10)
    torch.testing.assert_close(both[:3], single)                                # first member, same seed
    assert not torch.allclose(both[3:], single)                                 # second member: its own masks
    mixed = passes([a, b], K=3)
    torch.testing.assert_close(mixed[:3], single)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_batchwise_scores_equal_the_metric_of_all_passes(name):
    torch.manual_seed(0)
    models = [lenet().eval(), lenet().eval()]
    source = random_source()
    args = (models, source, np.arange(23), 4, torch.device("cpu"), 10)
    kw = {"model_name": "lenet", "num_classes": 10, "forward_size": 25}         # 2 passes per forward
    scores = mc_scores(METRICS[name], *args, torch.Generator().manual_seed(1), **kw)
    probs = mc_probabilities(*args, torch.Generator().manual_seed(1), **kw)
    assert probs.shape == (8, 23, 10) and scores.shape == (23,)
    torch.testing.assert_close(scores, METRICS[name](probs))


def test_top_scores_largest_first_with_seeded_random_ties():
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.5, 0.0])
    pick = top_scores(scores, 3, torch.Generator().manual_seed(0))
    assert pick[0] == 3 and set(pick[1:].tolist()) < {1, 2, 4}
    torch.testing.assert_close(pick, top_scores(scores, 3, torch.Generator().manual_seed(0)))
    tied = {tuple(top_scores(scores, 2, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(tied) > 1                                                        # not always the lowest position


# ----------------------------------------------------------------------------------------------------------------
# Acquisitions
# ----------------------------------------------------------------------------------------------------------------
def test_first_iteration_is_random_unless_switched_off(query_ctx):
    ctx = query_ctx("varR-K4", iteration=1, n_labeled=0)
    got = ACQUISITIONS["varR"](ctx)
    want = random_query(query_ctx("varR-K4", iteration=1, n_labeled=0))
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.scores is None
    ranked = ACQUISITIONS["varR"](query_ctx("varR-K4", iteration=1, n_labeled=0,
                                          options={"uncertainty_first_random": 0}))
    assert ranked.scores is not None


def test_first_random_option_is_on_the_command_line():
    assert build_parser().parse_args([]).uncertainty_first_random == 1
    assert build_parser().parse_args(["--uncertainty-first-random", "0"]).uncertainty_first_random == 0
    assert "--uncertainty-first-random" in build_parser().format_help()


@pytest.mark.parametrize("name", ["varR-K4", "varR-E2-K3", "entropy-K4", "bald-K4", "std-K4"])
def test_query_takes_the_top_scores_deterministically(query_ctx, name):
    ctx = query_ctx(name)
    result = ACQUISITIONS[ctx.config.acquisition](ctx)
    again = ACQUISITIONS[ctx.config.acquisition](query_ctx(name))
    np.testing.assert_array_equal(result.indices, again.indices)
    assert len(np.unique(result.indices)) == ctx.budget and np.isin(result.indices, ctx.unlabeled).all()
    assert (np.diff(result.scores) <= 0).all()
    # the scores of all unlabeled images, with the generator in the same state as in the query
    gen = torch.Generator().manual_seed(0)
    data = ctx.data
    scores = mc_scores(METRICS[ctx.config.acquisition], ctx.models, data.pool_source,
                       data.split.pool[ctx.unlabeled], ctx.config.K, ctx.device, ctx.batch_size, gen,
                       model_name="lenet", num_classes=10)
    assert scores.shape == (len(ctx.unlabeled),)
    assert result.scores.min() >= scores.sort(descending=True).values[ctx.budget - 1].item() - 1e-7


def test_no_images_give_empty_passes_and_scores():
    torch.manual_seed(0)
    model, source = lenet().eval(), random_source()
    args = ([model], source, np.zeros(0, dtype=np.int64), 2, torch.device("cpu"), 10, torch.Generator())
    probs = mc_probabilities(*args, model_name="lenet", num_classes=10)
    scores = mc_scores(METRICS["bald"], *args, model_name="lenet", num_classes=10)
    assert probs.shape == (0,) and scores.shape == (0,)


def test_the_progress_bar_names_the_configuration_the_iteration_and_the_passes(query_ctx, capsys):
    ctx = query_ctx("varR-E2-K3", iteration=3)
    ctx.progress = True
    ACQUISITIONS["varR"](ctx)
    assert "varR-E2-K3 b=3: 2x3 MC-dropout passes" in capsys.readouterr().err
