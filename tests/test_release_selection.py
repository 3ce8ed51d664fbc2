"""The release's selection as options: taps after the ReLU (--taps post) and scales weighed L_j - 1
(--standardize release), checked against hand computations; both reach the query, the settings and the records."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acquisition_cases import plant_copies_of_misclassified
from fkal import settings as st
from fkal.acquisitions.fisher_kernel import fisher_kernel_query
from fkal.acquisitions.registry import ACQUISITIONS
from fkal.cli import main
from fkal.config import parse_config
from fkal.data import TensorSource
from fkal.descriptors import extract, fisher_scores, pool
from fkal.io import read_jsonl
from fkal.kernels import Features, pcc, pfk, pfk_sum, standardize_release
from fkal.models import build_model, lenet, taps_at

LENET_TAPS = ("conv1", "conv2", "fc1")


# ------------------------------------------------------------------------------------------------ taps

def test_lenet_post_taps_are_relu_of_pre_taps_and_leave_the_logits_alone():
    torch.manual_seed(0)
    model, x = lenet().eval(), torch.randn(4, 1, 28, 28)
    logits_pre, pre = model(x)
    with taps_at(model, "post"):
        logits_post, post = model(x)
    assert model.tap_point == "pre"                                     # restored after the block
    torch.testing.assert_close(logits_post, logits_pre)
    for name in LENET_TAPS:
        assert (pre[name] < 0).any()                                    # the ReLU changes something here
        torch.testing.assert_close(post[name], F.relu(pre[name]))
    assert post["fc2"] is logits_post                                   # the logits have no ReLU after them


@pytest.mark.parametrize("name", ["resnet10-small", "resnet18-small"])
def test_resnet_post_taps_are_relu_of_pre_taps_which_they_already_are(name):
    torch.manual_seed(0)
    model, x = build_model(name, 10).eval(), torch.randn(2, 3, 32, 32)
    logits_pre, pre = model(x)
    with taps_at(model, "post"):
        logits_post, post = model(x)
    torch.testing.assert_close(logits_post, logits_pre)
    for tap in ("layer1", "layer2", "layer3", "layer4", "pool"):
        torch.testing.assert_close(post[tap], F.relu(pre[tap]))
        torch.testing.assert_close(pre[tap], F.relu(pre[tap]))          # block outputs end in a ReLU


def test_resnet_fisher_score_at_the_pooled_feature_is_hw_times_the_pooled_layer4_score():
    """The release's ResNet tap x5 = avgpool(layer4): z is the pooled layer4 descriptor, and its Fisher score is
    H*W times phi(dL/d layer4), a per-image constant that the standardization removes."""
    torch.manual_seed(5)
    model, x, y = build_model("resnet10-small", 10).eval(), torch.randn(3, 3, 32, 32), torch.randint(0, 10, (3,))
    logits, taps = model(x)
    g_layer4, g_pool = fisher_scores(logits, [taps["layer4"], taps["pool"]], y)
    hw = taps["layer4"].shape[2] * taps["layer4"].shape[3]
    torch.testing.assert_close(g_pool, hw * g_layer4, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(standardize_release(g_pool), standardize_release(g_layer4), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(pool(taps["layer4"]), taps["pool"])


def test_unknown_tap_point_is_refused():
    with pytest.raises(ValueError, match="pre"):
        with taps_at(lenet(), "middle"):
            pass
    model = lenet()
    model.tap_point = "middle"
    with pytest.raises(ValueError, match="tap_point"):
        model(torch.randn(1, 1, 28, 28))


def _post_forward_from(tap, model):
    """One image's logits as a function of its post-ReLU activation at ``tap`` (LeNet's layers written out)."""
    def from_conv1(a):                                                   # a: [10, 12, 12]
        return from_conv2(F.relu(F.max_pool2d(model.conv2(a.unsqueeze(0)), 2))[0])

    def from_conv2(a):                                                   # a: [20, 4, 4]
        return from_fc1(F.relu(model.fc1(a.flatten())))

    def from_fc1(a):                                                     # a: [50]
        return model.fc2(a)
    return {"conv1": from_conv1, "conv2": from_conv2, "fc1": from_fc1}[tap]


def test_fisher_scores_at_post_taps_are_each_images_own_gradient():
    """phi(dL_i / d relu(Z_i)) from one batched backward equals the per-image gradient of the loss written as a
    function of the post-ReLU activation (torch.func), tap by tap; at fc1 the pre-ReLU score is that gradient
    masked where the pre-activation is not positive."""
    from torch.func import grad, vmap
    torch.manual_seed(1)
    model, x, y = lenet().eval(), torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    with taps_at(model, "post"):
        logits, post = model(x)
        g_post = fisher_scores(logits, [post[t] for t in LENET_TAPS], y)
    for j, tap in enumerate(LENET_TAPS):
        forward = _post_forward_from(tap, model)

        def loss(a, t):
            return F.cross_entropy(forward(a).unsqueeze(0), t.unsqueeze(0))
        reference = pool(vmap(grad(loss))(post[tap].detach(), y))       # [6, L_j]
        torch.testing.assert_close(g_post[j], reference, rtol=1e-4, atol=1e-7)
    logits, pre = model(x)
    g_pre_fc1 = fisher_scores(logits, [pre["fc1"]], y)[0]
    torch.testing.assert_close(g_pre_fc1, g_post[2] * (pre["fc1"] > 0), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(g_pre_fc1, g_post[2])


def test_extract_at_post_taps_pools_the_relu():
    torch.manual_seed(2)
    model = lenet().eval()
    images = torch.randint(0, 255, (9, 1, 28, 28), dtype=torch.uint8)
    src = TensorSource(images, np.arange(9), (0.1307,), (0.3081,))
    with taps_at(model, "post"):
        feats, _, _ = extract(model, src, np.arange(9), LENET_TAPS, torch.device("cpu"), labels=np.arange(9))
    _, pre = model(src.get(np.arange(9)))
    for j, tap in enumerate(LENET_TAPS):
        torch.testing.assert_close(feats.z[j], pool(F.relu(pre[tap])).detach())


# ------------------------------------------------------------------------------------------------ standardization

def _by_hand(row):
    """(v - mean) / (std + 1e-10) with the unbiased std, element by element in float64."""
    values = [float(v) for v in row]
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return [(v - mean) / (std + 1e-10) for v in values]


def _pearson(a, b):
    return float(np.corrcoef(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))[0, 1])


def test_release_standardization_recomputed_by_hand():
    v = torch.randn(4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    got = standardize_release(v)
    expected = torch.tensor([_by_hand(row) for row in v], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close((got ** 2).sum(1), torch.full((4,), 6.0, dtype=torch.float64))   # L - 1
    with pytest.raises(ValueError, match="at least 2"):
        standardize_release(torch.ones(3, 1))


def test_release_weighs_scale_j_by_L_j_minus_1_in_the_kernels():
    """At LeNet's L=80 (scales of 10, 20, 50): R_z = sum_j (L_j - 1) r_j under the release's standardization,
    sum_j r_j under the default, with r_j the Pearson correlation of scale j; likewise for R_z + R_g and R_zg."""
    gen = torch.Generator().manual_seed(3)
    dims = (10, 20, 50)
    a = Features([torch.randn(3, d, generator=gen) for d in dims], [torch.randn(3, d, generator=gen) for d in dims])
    b = Features([torch.randn(5, d, generator=gen) for d in dims], [torch.randn(5, d, generator=gen) for d in dims])
    rel_a, rel_b = a.standardized("release"), b.standardized("release")
    unit_a, unit_b = a.standardized("unit"), b.standardized("unit")
    expected = {name: torch.zeros(3, 5, dtype=torch.float64) for name in ("pcc", "sum", "pfk", "unit")}
    for m in range(3):
        for n in range(5):
            for j, d in enumerate(dims):
                rz, rg = _pearson(a.z[j][m], b.z[j][n]), _pearson(a.g[j][m], b.g[j][n])
                expected["pcc"][m, n] += (d - 1) * rz
                expected["sum"][m, n] += (d - 1) * (rz + rg)
                expected["pfk"][m, n] += (d - 1) ** 2 * rz * rg
                expected["unit"][m, n] += rz
    torch.testing.assert_close(pcc(rel_a, rel_b).double(), expected["pcc"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pfk_sum(rel_a, rel_b).double(), expected["sum"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pfk(rel_a, rel_b).double(), expected["pfk"], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(pcc(unit_a, unit_b).double(), expected["unit"], rtol=1e-5, atol=1e-5)
    # a row with itself: the share of fc1 in R_z is 49 / (9 + 19 + 49), about 64%
    self_terms = [float(rel_a.z[j][0] @ rel_a.z[j][0]) for j in range(3)]
    assert self_terms == pytest.approx([9.0, 19.0, 49.0], rel=1e-5)
    assert self_terms[2] / sum(self_terms) == pytest.approx(49 / 77, rel=1e-5)
    with pytest.raises(ValueError, match="unit, release"):
        a.standardized("l2")


# ------------------------------------------------------------------------------------------------ the query

@pytest.mark.parametrize("cfg, how, score", [
    ("pfk-sum-y-L80", "unit", 6.0),               # three scales, r_z = r_g = 1: 3 x (1 + 1)
    ("pfk-sum-y-L80", "release", 154.0),          # (9 + 19 + 49) x (1 + 1)
    ("pfk-y-L80", "release", 81.0 + 361 + 2401),  # sum_j (L_j - 1)^2
    ("pcc-L80", "release", 77.0),
])
def test_query_uses_the_chosen_taps_and_standardization(query_ctx, cfg, how, score):
    """Pool copies of the misclassified validation images are found with taps after the ReLU, and their
    similarity is the kernel's value for identical images under the chosen standardization; every forward pass
    of the query sees the chosen tap point, and the model gets its own back afterwards."""
    ctx = query_ctx(parse_config(cfg, ACQUISITIONS), budget=5, options={"taps": "post", "standardize": how})
    targets = plant_copies_of_misclassified(ctx)
    model = ctx.models[0]
    seen = []
    forward = model.forward
    model.forward = lambda x: (seen.append(model.tap_point), forward(x))[1]
    result = fisher_kernel_query(ctx)
    assert set(seen) == {"post"} and model.tap_point == "pre"
    assert set(result.indices.tolist()) == set(targets.tolist())
    np.testing.assert_allclose(result.scores, score, rtol=1e-4)


def test_phat_is_the_nearest_validation_image_under_the_chosen_standardization():
    """p^(y,z) standardizes the pool image as D_v was standardized: brute force over hand-made scales of 3 and 40
    values, where the release's weights (2 and 39) and the default's (1 and 1) pick other nearest images."""
    from fkal.pseudo_labels import NearestValidation, build_estimator
    gen = torch.Generator().manual_seed(4)
    val = Features([torch.randn(30, 3, generator=gen), torch.randn(30, 40, generator=gen)])
    pool_z = [torch.randn(60, 3, generator=gen), torch.randn(60, 40, generator=gen)]
    val_labels = torch.arange(30) % 10
    picked = {}
    for how, weights in (("unit", (1, 1)), ("release", (2, 39))):
        est = NearestValidation(val.standardized(how), val_labels, num_classes=10, chunk=7, standardization=how)
        labels, g = est(None, None, torch.zeros(60, 10), None, pool_z)
        assert g is None
        expected = [int(val_labels[max(range(30), key=lambda v: sum(
            w * _pearson(pool_z[j][u], val.z[j][v]) for j, w in enumerate(weights)))]) for u in range(60)]
        assert labels.tolist() == expected
        picked[how] = labels
    assert (picked["unit"] != picked["release"]).any()
    estimator = build_estimator("phat", val.standardized("release"), val_labels, 10, ("a", "b"), 4, gen,
                                standardization="release")
    assert estimator.standardize is standardize_release


# ------------------------------------------------------------------------------------------------ settings

def test_standardize_is_a_setting_added_later():
    old = {"seed": 0, "taps": "pre", "query_size": 125}
    assert st.differences(old, {**old, "standardize": "unit"}) == []
    assert st.settings_id(old) == st.settings_id({**old, "standardize": "unit"})
    diffs = st.differences(old, {**old, "standardize": "release"})
    assert diffs == [("standardize", "unit", "release")]
    assert st.describe(diffs) == "--standardize: unit there, release now"


def _common(root, out, *extra):
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "1", "--iterations", "2",
            "--pool-size", "10", "--no-progress", "--eval-batch", "128", *extra]


def test_release_options_run_end_to_end_and_are_recorded(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_common(tiny_mnist, out, "--only", "pfk-sum-phat-L80", "--taps", "post",
                        "--standardize", "release")) == 0
    records, warnings = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert not warnings and [r["iteration"] for r in records] == [1, 2]
    for r in records:
        assert (r["settings"]["taps"], r["settings"]["standardize"]) == ("post", "release")
        assert 0 <= r["test_accuracy"] <= 100 and r["pseudo_label_accuracy"] is not None
    folder = out / "MNIST" / "run0" / "ir4" / "rotation" / "pfk-sum-phat-L80"
    stored = json.loads((folder / "settings.json").read_text())["settings"]
    assert (stored["taps"], stored["standardize"]) == ("post", "release")
    # the same folder resumed with the defaults is refused, naming both flags
    capsys.readouterr()
    assert main(_common(tiny_mnist, out, "--only", "pfk-sum-phat-L80")) == 2
    err = capsys.readouterr().err
    assert "--taps: post there, pre now" in err and "--standardize: release there, unit now" in err


@pytest.mark.parametrize("argv, message", [(["--taps", "after"], "--taps"),
                                           (["--standardize", "l2"], "--standardize")])
def test_option_values_are_checked_at_parse_time(tiny_mnist, tmp_path, capsys, argv, message):
    assert main(_common(tiny_mnist, tmp_path / "out", "--only", "pcc-L20", *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument " + message) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
