"""One contract for every registered acquisition, strict: run on models trained a few steps and wrapped as the
loop wraps them, with the example settings of ``acquisition_cases.CASES``.

Every acquisition returns P distinct unlabeled positions (within its random subset where it selects within one),
the same picks twice under the same generator, leaves the global random states alone, and copes with no labeled
images and with a budget equal to the unlabeled count (or refuses with one clear error). That its picks are the
right ones, and its scores those of its picks, is checked by brute force in ``test_picks_<family>.py``.
"""
import random

import numpy as np
import pytest
import torch

from acquisition_cases import case_context, case_of, check_contract, plant_copies_of_misclassified
from fkal.acquisitions.fisher_kernel import fisher_kernel_query
from fkal.acquisitions.registry import ACQUISITIONS, REVEALS_LABELS
from fkal.config import parse_config
from fkal.errors import UserError


def _rng_states():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _same_rng_states(a, b) -> bool:
    return (torch.equal(a[0], b[0]) and a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1])
            and a[1][2:] == b[1][2:] and a[2] == b[2])


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_keeps_the_strict_contract(tiny_mnist, name, devices):
    ctx = case_context(tiny_mnist, name, device=devices)
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    before = _rng_states()
    first = ACQUISITIONS[name](ctx)
    assert _same_rng_states(before, _rng_states()), f"{name} changed a global random state"
    picked = check_contract(ctx, first)
    again = ACQUISITIONS[name](case_context(tiny_mnist, name, device=devices))   # a fresh context, the same seed
    np.testing.assert_array_equal(np.asarray(again.indices), picked)
    if first.scores is not None:
        np.testing.assert_array_equal(np.asarray(again.scores), np.asarray(first.scores))


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_copes_with_no_labeled_images(tiny_mnist, name):
    ctx = case_context(tiny_mnist, name, n_labeled=0, iteration=1)
    before = _rng_states()
    try:
        result = ACQUISITIONS[name](ctx)
    except (UserError, ValueError) as e:                                    # allowed: one clear error
        assert str(e) and len(str(e).splitlines()) == 1
        return
    assert _same_rng_states(before, _rng_states()), f"{name} changed a global random state"
    check_contract(ctx, result)
    again = ACQUISITIONS[name](case_context(tiny_mnist, name, n_labeled=0, iteration=1))
    np.testing.assert_array_equal(np.asarray(again.indices), np.asarray(result.indices))


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_copes_with_a_budget_of_the_whole_unlabeled_pool(tiny_mnist, name):
    ctx = case_context(tiny_mnist, name, n_labeled=20, budget=280, epochs=1)
    assert len(ctx.unlabeled) == 280
    try:
        result = ACQUISITIONS[name](ctx)
    except (UserError, ValueError) as e:
        assert str(e) and len(str(e).splitlines()) == 1
        return
    picked = check_contract(ctx, result)
    assert sorted(picked.tolist()) == ctx.unlabeled.tolist()


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_subset_methods_select_within_a_subset_smaller_than_the_pool(tiny_mnist, name):
    """An acquisition that declares a random candidate subset is run with one smaller than the unlabeled pool:
    its picks stay in the unlabeled positions (not positions into the subset), and differ with the generator."""
    case = case_of(name)
    if case.subset_option is None:
        pytest.skip(f"{name} selects over the whole unlabeled pool")
    results = [ACQUISITIONS[name](case_context(tiny_mnist, name, seed=s)) for s in (0, 0, 3)]
    ctx = case_context(tiny_mnist, name, seed=0, epochs=0)
    for r in results[:2]:
        check_contract(ctx, r)
    np.testing.assert_array_equal(results[0].indices, results[1].indices)
    assert not np.array_equal(np.sort(results[0].indices), np.sort(results[2].indices))


def test_reveals_labels_names_registered_acquisitions():
    assert REVEALS_LABELS == {"galaxy", "direct"} and REVEALS_LABELS <= set(ACQUISITIONS)


@pytest.mark.parametrize("name", sorted(REVEALS_LABELS))
def test_acquisitions_that_reveal_labels_fail_where_none_is_known(tiny_mnist, name):
    """With the unlabeled images' labels unknown (-1, as on a user's own images) an acquisition that asks the
    annotator inside the batch cannot pick: it ends with an error instead of reading -1 as a class."""
    ctx = case_context(tiny_mnist, name)
    ctx.data.split.pool_labels[ctx.unlabeled] = -1
    with pytest.raises(ValueError, match="oracle returned -1"):
        ACQUISITIONS[name](ctx)


@pytest.mark.parametrize("cfg", ["pfk-y-L20", "pfk-phat-g-L30", "pfk-trC-L20-K4", "pcc-L80", "pfk-sum-phat-L20"])
def test_fisher_kernel_variants_keep_the_contract(query_ctx, cfg, devices):
    ctx = query_ctx(parse_config(cfg, ACQUISITIONS), budget=7, device=devices)
    result = fisher_kernel_query(ctx)
    assert len(set(result.indices.tolist())) == 7 and np.isin(result.indices, ctx.unlabeled).all()


def test_true_labels_give_full_pseudo_label_accuracy(query_ctx):
    result = fisher_kernel_query(query_ctx(parse_config("pfk-y-L20", ACQUISITIONS)))
    assert result.pseudo_label_accuracy == 100.0


def test_pool_copies_of_misclassified_validation_images_are_found(query_ctx):
    """The method's point: the pool images that match the misclassified validation images are selected."""
    ctx = query_ctx(parse_config("pfk-y-L80", ACQUISITIONS), budget=5)
    targets = plant_copies_of_misclassified(ctx)
    result = fisher_kernel_query(ctx)
    assert set(result.indices.tolist()) == set(targets.tolist())
    np.testing.assert_allclose(result.scores, 3.0, rtol=1e-4)             # three scales, r_z = r_g = 1 each


def test_config_names_roundtrip():
    for name in ["random", "pcc-L20", "pfk-y-L20", "pfk-phat-L80", "pfk-phat-g-L80", "pfk-sum-yhat-L20",
                 "pfk-mi-diag-L80-K32", "pfk-trC-L20-K16"]:
        assert parse_config(name, ["random", "pcc", "pfk", "pfk-sum"]).name == name
    c = parse_config("pfk-mi-diag-L80-K32", ["pfk", "pfk-sum"])
    assert (c.acquisition, c.pseudo_label, c.L, c.K) == ("pfk", "mi-diag", 80, 32)


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_picks_ignore_the_labels_of_unlabeled_images(tiny_mnist, name):
    """Unless it declares ``reveals_labels``, an acquisition picks the same images when every unlabeled image
    carries another label: it reads no annotation it has not paid for."""
    if case_of(name).reveals_labels:
        pytest.skip(f"{name} reveals labels while picking")
    honest = ACQUISITIONS[name](case_context(tiny_mnist, name))
    ctx = case_context(tiny_mnist, name)
    positions = ctx.unlabeled
    ctx.data.split.pool_labels[positions] = (ctx.data.split.pool_labels[positions] + 3) % 10
    source = ctx.data.pool_source
    source.labels[ctx.data.split.pool[positions]] = (source.labels[ctx.data.split.pool[positions]] + 3) % 10
    np.testing.assert_array_equal(ACQUISITIONS[name](ctx).indices, honest.indices)


def test_fisher_kernel_query_returns_the_pseudo_labels_it_used(query_ctx):
    from fkal.training import predict

    ctx = query_ctx(parse_config("pfk-yhat-L20", ACQUISITIONS), budget=6)
    result = fisher_kernel_query(ctx)
    data = ctx.data
    yhat = predict(ctx.models[0], data.pool_source, data.split.pool[ctx.unlabeled], ctx.device).argmax(1).numpy()
    assert result.pseudo_labels.tolist() == yhat.tolist()
    true = data.pool_source.labels[data.split.pool[ctx.unlabeled]]
    assert result.pseudo_label_accuracy == pytest.approx(100.0 * (yhat == true).mean())


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_names_each_progress_bar_and_shows_none_when_progress_is_off(tiny_mnist, name,
                                                                                        monkeypatch):
    """With ctx.progress every pass over the images shows a bar named "{config} b={iteration}: {what}", the
    passes of ``CASES[name].bars`` in that order and no bar without a name; without it no bar is shown. Every
    fkal and vaal module that imported tqdm gets a spy that records what each bar would show."""
    import sys
    from tqdm.auto import tqdm as real

    shown = []

    class Spy(real):
        def __init__(self, *args, **kwargs):
            if not kwargs.get("disable", False):
                shown.append(kwargs.get("desc"))
            super().__init__(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(("fkal", "vaal")) and getattr(module, "tqdm", None) is real:
            monkeypatch.setattr(module, "tqdm", Spy)
    quiet = case_context(tiny_mnist, name)
    ACQUISITIONS[name](quiet)
    assert shown == []
    ctx = case_context(tiny_mnist, name)
    ctx.progress = True
    ACQUISITIONS[name](ctx)
    assert shown == [f"{ctx.config.name} b={ctx.iteration}: {what}" for what in case_of(name).bars]
