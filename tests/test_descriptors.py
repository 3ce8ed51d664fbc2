"""Exactness of the descriptors and Fisher scores of one forward and one backward per batch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fkal.data import TensorSource
from fkal.descriptors import extract, extract_shard, fisher_scores, per_class_fisher_scores, pool
from fkal.models import lenet, taps_for

TAPS = taps_for(lenet(), 90)


def per_sample_reference(model, x, y):
    """Descriptors and Fisher scores one image at a time: d CE(x_i, y_i) / d Z_i, pooled."""
    zs, gs = [], []
    for i in range(len(x)):
        logits, taps = model(x[i:i + 1])
        acts = [taps[t] for t in TAPS]
        for a in acts:
            a.retain_grad()
        F.cross_entropy(logits, y[i:i + 1]).backward()
        zs.append(torch.cat([pool(a).detach() for a in acts], 1))
        gs.append(torch.cat([pool(a.grad) for a in acts], 1))
        model.zero_grad()
    return torch.cat(zs), torch.cat(gs)


def test_batched_fisher_scores_equal_per_sample_gradients():
    torch.manual_seed(0)
    model = lenet().eval()
    x, y = torch.randn(7, 1, 28, 28), torch.randint(0, 10, (7,))
    logits, taps = model(x)
    g = torch.cat(fisher_scores(logits, [taps[t] for t in TAPS], y), 1)
    z = torch.cat([pool(taps[t]).detach() for t in TAPS], 1)
    z_ref, g_ref = per_sample_reference(model, x, y)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_fisher_scores_match_torch_func_per_sample_grad():
    from torch.func import grad, vmap
    torch.manual_seed(1)
    model = lenet().eval()
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,))
    logits, taps = model(x)
    g = fisher_scores(logits, [taps["fc1"]], y)[0]                      # [5, 50]
    h = F.relu(F.max_pool2d(model.conv2(F.relu(F.max_pool2d(model.conv1(x), 2))), 2)).flatten(1)
    fc1 = model.fc1(h)

    def loss_of_fc1(a, t):                                               # one sample's loss as a function of its fc1
        return F.cross_entropy(model.fc2(F.relu(a)).unsqueeze(0), t.unsqueeze(0))
    torch.testing.assert_close(g, vmap(grad(loss_of_fc1))(fc1.detach(), y), rtol=1e-5, atol=1e-7)


def test_per_class_fisher_scores_equal_fisher_scores_with_that_label():
    torch.manual_seed(2)
    model = lenet().eval()
    x = torch.randn(4, 1, 28, 28)
    logits, taps = model(x)
    acts = [taps[t] for t in TAPS]
    per_class = per_class_fisher_scores(logits, acts)                   # per tap [D, B, L_j]
    for d in (0, 3, 9):
        ref = fisher_scores(logits, acts, torch.full((4,), d), retain_graph=True)
        for j in range(len(acts)):
            torch.testing.assert_close(per_class[j][d], ref[j], rtol=1e-5, atol=1e-7)


def test_fisher_scores_free_the_graph_unless_asked_to_keep_it():
    """By default the backward frees the batch's graph (on a large pool the saved activations are most of the
    memory); retain_graph=True keeps it for a second backward, as per_class_fisher_scores needs."""
    torch.manual_seed(4)
    model = lenet().eval()
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    logits, taps = model(x)
    acts = [taps[t] for t in TAPS]
    fisher_scores(logits, acts, y, retain_graph=True)
    fisher_scores(logits, acts, y)                                      # the graph is still there once
    with pytest.raises(RuntimeError, match="second time"):
        fisher_scores(logits, acts, y)


def test_extract_shows_its_progress_under_its_name_and_only_when_named(capsys):
    model = lenet().eval()
    src = TensorSource(torch.zeros(6, 1, 28, 28, dtype=torch.uint8), np.zeros(6), (0.1307,), (0.3081,))
    extract(model, src, np.arange(6), TAPS, torch.device("cpu"), batch_size=2, labels=np.zeros(6, int),
            desc="pool descriptors")
    err = capsys.readouterr().err
    assert "pool descriptors" in err and "/3 " in err                  # one bar over the three batches
    assert "\n" not in err                                             # and it clears itself when done
    extract(model, src, np.arange(6), TAPS, torch.device("cpu"), batch_size=2, labels=np.zeros(6, int))
    assert capsys.readouterr().err == ""                                # no name, no bar (library use)


def test_extract_shard_takes_fisher_scores_by_default_and_labels_of_any_integer_dtype():
    """Labels as a dataset stores them (uint8, int32) give the scores of int64 labels; extract_shard, like
    extract, takes the Fisher scores unless told not to."""
    torch.manual_seed(6)
    model = lenet().eval()
    src = TensorSource(torch.randint(0, 255, (5, 1, 28, 28), dtype=torch.uint8), np.zeros(5), (0.1307,), (0.3081,))
    idx, labels = np.arange(5), np.array([3, 0, 9, 3, 1])
    ref, _, _ = extract(model, src, idx, TAPS, torch.device("cpu"), batch_size=2, labels=labels)
    for dtype in (np.uint8, np.int32):
        feats, _, used, where = extract_shard(model, src, idx, TAPS, torch.device("cpu"), 2, labels.astype(dtype))
        assert where.tolist() == list(range(5)) and used.tolist() == labels.tolist()
        for a, b in zip(feats.z + feats.g, ref.z + ref.g):
            torch.testing.assert_close(a, b)
        assert len(feats.g) == len(TAPS)


def test_extract_shard_of_no_images_and_of_images_without_labels():
    """An empty set (a rank with no batch) gives no rows and int64 positions, which index arrays; a pass without
    labels, estimator or Fisher scores marks every used label -1."""
    model = lenet().eval()
    src = TensorSource(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), np.zeros(4), (0.1307,), (0.3081,))
    feats, probs, used, where = extract_shard(model, src, np.zeros(0, int), TAPS, torch.device("cpu"), 2)
    assert where.dtype == np.int64 and where.shape == (0,) and len(used) == 0
    assert [t.shape for t in feats.z + feats.g] == [(0, 0)] * (2 * len(TAPS)) and probs.shape == (0, 0)
    feats, probs, used, where = extract_shard(model, src, np.arange(4), TAPS, torch.device("cpu"), 2, fisher=False)
    assert used.tolist() == [-1, -1, -1, -1] and where.tolist() == [0, 1, 2, 3] and probs.shape == (4, 10)


def test_extract_batches_agree_with_one_big_batch(devices):
    torch.manual_seed(3)
    model = lenet().eval()
    images = torch.randint(0, 255, (23, 1, 28, 28), dtype=torch.uint8)
    src = TensorSource(images, np.arange(23) % 10, (0.1307,), (0.3081,))
    idx, labels = np.arange(23)[::-1].copy(), (np.arange(23) % 10)[::-1].copy()
    small, probs, used = extract(model.to(devices), src, idx, TAPS, devices, batch_size=5, labels=labels)
    big, _, _ = extract(model, src, idx, TAPS, devices, batch_size=100, labels=labels)
    model.cpu()                                                         # the reference below runs on the CPU
    for a, b in zip(small.z + small.g, big.z + big.g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert used.tolist() == labels.tolist() and probs.shape == (23, 10)
    z_ref, g_ref = per_sample_reference(model, src.get(idx), torch.as_tensor(labels))
    torch.testing.assert_close(torch.cat(small.z, 1), z_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat(small.g, 1), g_ref, rtol=1e-4, atol=1e-6)
