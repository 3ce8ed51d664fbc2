"""One contract for every registered acquisition: exactly P distinct unlabeled positions."""
import numpy as np
import pytest
import torch

from fkal.acquisitions import ACQUISITIONS, QueryContext, fisher_kernel_query
from fkal.config import Config, parse_config
from fkal.datasets import DATASETS, ALData, load_mnist, make_split
from fkal.models import lenet

# one example configuration per acquisition (acquisitions registered later get a plain Config)
EXAMPLES = {"pcc": "pcc-L20", "pfk": "pfk-phat-L80", "pfk-sum": "pfk-sum-yhat-L20"}
SPEC = DATASETS["mnist"]
# tiny settings for the acquisitions that train their own networks (VAAL, TA-VAAL)
SMALL = {"vaal_iterations": 3, "tavaal_iterations": 3, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4,
         "vaal_disc_hidden": 8, "vaal_disc_layers": 1}


def make_ctx(root, cfg, budget=12, n_labeled=20, models=None, seed=0):
    raw = load_mnist(str(root), download=False)
    split = make_split(SPEC, raw, seed=0, imbalance_ratio=1, pool_size=300, val_size=100)
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(len(split.pool), n_labeled, replace=False))
    torch.manual_seed(seed)
    models = models or [lenet().eval() for _ in range(cfg.E)]
    return QueryContext(models=models, data=ALData(SPEC, raw, split), labeled=labeled,
                        unlabeled=np.setdiff1d(np.arange(len(split.pool)), labeled), budget=budget,
                        generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), config=cfg,
                        iteration=2, batch_size=64, progress=False, options=dict(SMALL))


def example(name):
    if name in EXAMPLES:
        return parse_config(EXAMPLES[name], ACQUISITIONS)
    return Config(name, K=3) if name not in ("random", "coreset", "vaal", "tavaal", "lloss") else Config(name)


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_returns_budget_distinct_unlabeled(tiny_mnist, name):
    ctx = make_ctx(tiny_mnist, example(name))
    result = ACQUISITIONS[name](ctx)
    picked = np.asarray(result.indices)
    assert len(picked) == ctx.budget and len(np.unique(picked)) == ctx.budget
    assert np.isin(picked, ctx.unlabeled).all() and not np.isin(picked, ctx.labeled).any()
    if result.scores is not None:
        assert len(result.scores) == ctx.budget


@pytest.mark.parametrize("cfg", ["pfk-y-L20", "pfk-phat-g-L30", "pfk-trC-L20-K4", "pcc-L80", "pfk-sum-phat-L20"])
def test_fisher_kernel_variants_keep_the_contract(tiny_mnist, cfg):
    ctx = make_ctx(tiny_mnist, parse_config(cfg, ACQUISITIONS), budget=7)
    result = fisher_kernel_query(ctx)
    assert len(set(result.indices.tolist())) == 7 and np.isin(result.indices, ctx.unlabeled).all()


def test_true_labels_give_full_pseudo_label_accuracy(tiny_mnist):
    result = fisher_kernel_query(make_ctx(tiny_mnist, parse_config("pfk-y-L20", ACQUISITIONS)))
    assert result.pseudo_label_accuracy == 100.0


def test_pool_copies_of_misclassified_validation_images_are_found(tiny_mnist):
    """The method's point: the pool images that match the misclassified validation images are selected."""
    ctx = make_ctx(tiny_mnist, parse_config("pfk-y-L80", ACQUISITIONS), budget=5)
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
