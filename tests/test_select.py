"""``fkal.select``: the loop's picks for the same model, data and generator, on any classifier; bad input is one
ValueError that names the argument and the fix; the caller's model is left as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import fkal
from acquisition_cases import case_of
from fkal.acquisitions import registry
from fkal.api import acquisition_options
from fkal.data import DATASETS, ALData, make_split
from fkal.data.mnist import load_mnist
from fkal.loop import _select
from fkal.models import lenet
from fkal.run_state import Settings, generator
from fkal.training import train

N_LABELED, BUDGET, SEED, ITERATION = 20, 12, 3, 2


def loop_side(root, name, options):
    """A 300-image pool whose last N_LABELED positions are labeled, a 100-image D_v, LeNets trained on the labeled
    images, and the loop's own query step (``fkal.loop._select``) for iteration ITERATION of run seed SEED."""
    spec = DATASETS["mnist"]
    cfg = registry.config(name)
    raw = load_mnist(str(root), download=False)
    # images in [0, 1] (mean 0, std 1): fkal.select takes images as the model takes them and hands them to VAAL's
    # VAE as they are, where the loop first undoes the source's normalization
    raw.train.mean, raw.train.std = torch.zeros_like(raw.train.mean), torch.ones_like(raw.train.std)
    split = make_split(spec, raw, seed=0, imbalance_ratio=1, train_size=300, val_size=100)
    data = ALData(spec, raw, split)
    labeled_at = np.full(len(split.pool), -1, dtype=np.int64)
    labeled_at[-N_LABELED:] = 1
    models = []
    for e in range(cfg.E):
        torch.manual_seed(100 + e)
        m = lenet()
        train(m, data.pool_source, split.pool[-N_LABELED:], split.pool_labels[-N_LABELED:],
              spec.train.with_epochs(2), torch.device("cpu"), torch.Generator().manual_seed(e), progress=False)
        models.append(m.eval())
    torch.manual_seed(7)
    pretrained = lenet().eval()
    s = Settings(out=root, spec=spec, train=spec.train, unsup=spec.unsup, query_size=BUDGET, iterations=3,
                 device=torch.device("cpu"), progress=False, eval_batch=64,
                 options=tuple(sorted(acquisition_options(cfg.acquisition, options).items())))
    picked, result, _, unlabeled = _select(s, data, cfg, models, labeled_at, ITERATION, SEED, lambda: pretrained)
    return data, models, pretrained, picked, unlabeled


SELECTABLE = [s.name for s in registry.specs() if s.hooks is None]


@pytest.mark.parametrize("name", SELECTABLE)
def test_select_picks_what_the_loop_picks(tiny_mnist, name):
    """Every registered acquisition without training hooks: the loop's query step and ``fkal.select`` on the same
    models, images (as tensors) and generator pick the same images in the same order."""
    case = case_of(name)
    data, models, pretrained, picked, unlabeled = loop_side(tiny_mnist, case.config, case.options)
    split, src = data.split, data.pool_source
    labeled = np.flatnonzero(np.isin(np.arange(len(split.pool)), unlabeled, invert=True))
    pool = src.get(split.pool[unlabeled])
    if registry.spec_of(name).reveals_labels:
        pool = (pool, torch.as_tensor(split.pool_labels[unlabeled]))
    chosen = fkal.select(case.config, models if len(models) > 1 else models[0], pool, BUDGET,
                         labeled=(src.get(split.pool[labeled]), torch.as_tensor(split.pool_labels[labeled])),
                         val=(data.val_source.get(split.val), torch.as_tensor(data.val_labels)),
                         generator=generator(SEED, "query", ITERATION), batch_size=64, pretrained=pretrained,
                         iteration=ITERATION, **case.options)
    assert chosen.indices.dtype == torch.int64 and len(chosen.indices.unique()) == BUDGET
    np.testing.assert_array_equal(unlabeled[chosen.indices.numpy()], picked)


def small_resnet(num_classes=10, dropout=False):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=num_classes)
    if dropout:
        net.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, num_classes))
    return net


def images(n, seed, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_torchvision_classifier_with_layer_taps_gets_the_fisher_kernel_picks_of_eq_12_by_hand():
    """pfk-yhat on a torchvision ResNet-18 (taps layer3 + layer4, L = 768), D_v of 4 images all misclassified by
    construction and a budget of 4: every validation image is a center (no k-center step), each center's best
    pool image comes first (Algorithm 1's merge by rank), and the scores are each pick's best R_zg (eq. 12), all
    recomputed here by hand from forward hooks and autograd."""
    from fkal.kernels import standardize
    net = small_resnet().eval()
    pool, val = images(40, 1), images(4, 2)
    with torch.no_grad():
        pred = net(val).argmax(1)
    wrong = (pred + 1) % 10                                          # every validation image misclassified
    got = fkal.select("pfk-yhat", net, pool, 4, val=(val, wrong), generator=torch.Generator().manual_seed(0))

    def feats(x, labels):
        acts = {}
        hooks = [getattr(net, n).register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o))
                 for n in ("layer3", "layer4")]
        logits = net(x)
        for h in hooks:
            h.remove()
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        grads = torch.autograd.grad(loss, [acts["layer3"], acts["layer4"]])
        z = [standardize(acts[n].mean((2, 3)).detach()) for n in ("layer3", "layer4")]
        g = [standardize(gr.mean((2, 3))) for gr in grads]
        return z, g
    zv, gv = feats(val, wrong)
    with torch.no_grad():
        yhat = net(pool).argmax(1)
    zp, gp = feats(pool, yhat)
    rzg = sum((a @ b.T) * (c @ d.T) for a, b, c, d in zip(zv, zp, gv, gp))      # [4, 40], eq. 12
    best = rzg.max(0).values                                                   # [40] each image's best center
    picks = got.indices.numpy()
    assert int(picks[0]) == int(best.argmax())
    np.testing.assert_allclose(got.scores.numpy(), best[picks].double().numpy(), rtol=1e-4, atol=1e-6)
    firsts = set(rzg.argmax(1).tolist())                                       # each center's rank-0 image
    assert set(picks[:len(firsts)].tolist()) == firsts
    assert got.extras["config"] == "pfk-yhat-L768"
    np.testing.assert_array_equal(got.extras["pseudo_labels"].numpy(), yhat.numpy())


def test_select_leaves_the_callers_model_as_it_was():
    net = small_resnet()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fkal.select("badge", net, images(30, 3), 5, labeled=(images(6, 4), torch.arange(6)))
    assert net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked"))


def test_a_dataset_of_pairs_serves_as_well_as_tensors():
    net = small_resnet().eval()
    x, y = images(30, 5), torch.arange(30) % 10
    vx, vy = images(8, 6), torch.arange(8) % 10
    as_pairs = fkal.select("pfk-phat", net, x, 4, val=(vx, vy), generator=torch.Generator().manual_seed(1))
    as_sets = fkal.select("pfk-phat", net, torch.utils.data.TensorDataset(x, y), 4,
                          val=torch.utils.data.TensorDataset(vx, vy), generator=torch.Generator().manual_seed(1))
    assert torch.equal(as_pairs.indices, as_sets.indices)


def test_an_ensemble_is_a_list_of_members():
    members = [small_resnet(dropout=True) for _ in range(2)]
    got = fkal.select("varR-E2-K4", members, images(20, 7), 3, labeled=(images(4, 8), torch.arange(4)))
    assert len(got.indices) == 3
    with pytest.raises(ValueError, match=r"model: varR-E2-K4 pools 2 ensemble members, and 1 was given"):
        fkal.select("varR-E2-K4", members[0], images(20, 7), 3)


@pytest.mark.parametrize("call, message", [
    (dict(name="pfk-phat"), r"^val: pfk needs a labeled validation set D_v \(val=\.\.\.\)"),
    (dict(name="pfk-phat", val="bad-labels"), r"^val: label 12 is outside the model's 10 classes \(0\.\.9\)"),
    (dict(name="pfk-phat", val="empty"), r"^val is empty: give at least one image"),
    (dict(name="pfk-phat", val="other-shape"), r"^val: images of shape \(3, 28, 28\) where the pool's are "
                                               r"\(3, 32, 32\); give them the pool's shape"),
    (dict(name="random", budget=41), r"^budget 41: pick between 1 and the pool's 40 images"),
    (dict(name="random", budget=0), r"^budget 0: pick between 1 and the pool's 40 images"),
    (dict(name="pfk-phat", val="ok", layers=["layer9"]), r"^layers: ResNet has no module named layer9; its top-level "
                                                         r"modules are conv1, .*layer4, avgpool, fc"),
    (dict(name="galaxy", labeled="ok"), r"^pool: galaxy needs the pool's labels as its oracle \(pool=\(images, "
                                        r"labels\)\)"),
    (dict(name="varR-K4"), r"^model: varR draws MC-dropout masks, and ResNet has no nn\.Dropout layer"),
    (dict(name="lloss"), r"^name: lloss trains its loss-prediction module with the task model"),
    (dict(name="tavaal"), r"^name: tavaal trains its loss-prediction module"),
    (dict(name="typiclust"), r"^pretrained: typiclust clusters the features of a self-supervised model: pass "
                             r"pretrained=MODEL, or typiclust_features='current'"),
    (dict(name="nope"), r"^name: unknown configuration 'nope'"),
    (dict(name="badge", similar_kernel="rbf"), r"^option similar_kernel='rbf': choose one of pfk, cosine"),
    (dict(name="similar-phat", val="ok", colour="red"), r"^unknown option 'colour' for similar: its options are "
                                                        r"similar_kernel, similar_eta, similar_query"),
    (dict(name="pfk-phat-L80", val="ok"), r"^name: pfk-phat-L80 asks for descriptors of length L=80, and this "
                                          r"model's taps make L = 768"),
])
def test_bad_input_is_one_value_error_naming_the_argument_and_the_fix(call, message):
    net = small_resnet().eval()
    pool = images(40, 9)
    vals = {"ok": (images(5, 10), torch.arange(5)), "bad-labels": (images(5, 10), torch.tensor([0, 1, 12, 3, 4])),
            "empty": (images(0, 10), torch.zeros(0, dtype=torch.long)),
            "other-shape": (images(5, 10, size=28), torch.arange(5))}
    kwargs = {k: v for k, v in call.items() if k not in ("name", "budget", "val", "labeled")}
    if "val" in call:
        kwargs["val"] = vals[call["val"]]
    if "labeled" in call:
        kwargs["labeled"] = vals[call["labeled"]]
    with pytest.raises(ValueError, match=message):
        fkal.select(call["name"], net, pool, call.get("budget", 3), **kwargs)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_available_lists_the_registered_acquisitions():
    assert fkal.available() == registry.names()
    assert {"pfk", "badge", "coreset", "random", "typiclust"} <= set(fkal.available())
