"""One contract for every registered acquisition: exactly P distinct unlabeled positions."""
import functools

import numpy as np
import pytest

from fkal.acquisitions.fisher_kernel import fisher_kernel_query
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.config import Config, parse_config

# one example configuration per acquisition (acquisitions registered later get a plain Config)
EXAMPLES = {"pcc": "pcc-L20", "pfk": "pfk-phat-L80", "pfk-sum": "pfk-sum-yhat-L20", "similar": "similar-phat-L80"}
# tiny settings for the acquisitions that train their own networks (VAAL, TA-VAAL)
SMALL = {"vaal_iterations": 3, "tavaal_iterations": 3, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4,
         "vaal_disc_hidden": 8, "vaal_disc_layers": 1}


@pytest.fixture
def query_ctx(query_ctx):
    """Every query here with the tiny VAE settings."""
    return functools.partial(query_ctx, options=SMALL)


def example(name):
    if name in EXAMPLES:
        return parse_config(EXAMPLES[name], ACQUISITIONS)
    return Config(name, K=3) if name not in ("random", "coreset", "typiclust", "vaal", "tavaal", "lloss") \
        else Config(name)


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_returns_budget_distinct_unlabeled(query_ctx, name, devices):
    ctx = query_ctx(example(name), device=devices)
    result = ACQUISITIONS[name](ctx)
    picked = np.asarray(result.indices)
    assert len(picked) == ctx.budget and len(np.unique(picked)) == ctx.budget
    assert np.isin(picked, ctx.unlabeled).all() and not np.isin(picked, ctx.labeled).any()
    if result.scores is not None:
        assert len(result.scores) == ctx.budget


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
    data, model = ctx.data, ctx.models[0]
    # relabel D_v so that exactly its first five images are misclassified by the model
    pred = model(data.val_source.get(data.split.val))[0].argmax(1).numpy()
    labels_v = pred.copy()
    labels_v[:5] = (pred[:5] + 1) % 10
    data.val_source.labels[data.split.val] = labels_v
    # five unlabeled pool images become copies of those five validation images
    targets = ctx.unlabeled[:5]
    data.pool_source.images[data.split.pool[targets]] = data.val_source.images[data.split.val[:5]]
    data.pool_source.labels[data.split.pool[targets]] = labels_v[:5]
    data.split.pool_labels[targets] = labels_v[:5]
    result = fisher_kernel_query(ctx)
    assert set(result.indices.tolist()) == set(targets.tolist())
    np.testing.assert_allclose(result.scores, 3.0, rtol=1e-4)             # three scales, r_z = r_g = 1 each


def test_config_names_roundtrip():
    for name in ["random", "pcc-L20", "pfk-y-L20", "pfk-phat-L80", "pfk-phat-g-L80", "pfk-sum-yhat-L20",
                 "pfk-mi-diag-L80-K32", "pfk-trC-L20-K16"]:
        assert parse_config(name, ["random", "pcc", "pfk", "pfk-sum"]).name == name
    c = parse_config("pfk-mi-diag-L80-K32", ["pfk", "pfk-sum"])
    assert (c.acquisition, c.pseudo_label, c.L, c.K) == ("pfk", "mi-diag", 80, 32)


def test_fisher_kernel_query_returns_the_pseudo_labels_it_used(query_ctx):
    from fkal.training import predict

    ctx = query_ctx(parse_config("pfk-yhat-L20", ACQUISITIONS), budget=6)
    result = fisher_kernel_query(ctx)
    data = ctx.data
    yhat = predict(ctx.models[0], data.pool_source, data.split.pool[ctx.unlabeled], ctx.device).argmax(1).numpy()
    assert result.pseudo_labels.tolist() == yhat.tolist()
    true = data.pool_source.labels[data.split.pool[ctx.unlabeled]]
    assert result.pseudo_label_accuracy == pytest.approx(100.0 * (yhat == true).mean())
