"""Runs on each device at hand (the ``devices`` fixture: the CPU, and CUDA where present): the gen_descr stage with
the ``phat-g`` estimator, and a resumed run against an uninterrupted one, bit for bit. On the CPU these run here;
the CUDA variants are skipped without a GPU."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import torch

from fkal.acquisitions import fisher_kernel
from fkal.cli import main
from fkal.data import DATASETS, ALData, Split
from fkal.data.mnist import load_mnist
from fkal.descriptors import extract
from fkal.io import read_jsonl
from fkal.kernels import Features, pfk
from fkal.models import lenet, taps_for

TIMING = {"query_seconds", "train_seconds", "code_version"}


def common(root, out, device: torch.device, iterations: int = 2) -> list[str]:
    gpu = ["--gpu", str(device.index)] if device.type == "cuda" else []
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "200", "--val-size", "60", "--unsup-epochs", "1", "--epochs", "1",
            "--iterations", str(iterations), "--pool-size", "10", "--no-progress", "--eval-batch", "64"] + gpu


def test_pool_descriptors_hands_the_estimator_its_features_on_the_device(monkeypatch):
    """The gen_descr stage passes CPU validation features; the phat-g estimator indexes them with class members
    found on the device of its labels, so both must be on the run's device ("meta" stands in for CUDA)."""
    seen = {}

    def estimator(name, val, labels, num_classes, taps, k, generator, standardization="unit", rare=()):
        seen["devices"] = {t.device.type for t in val.z + val.g} | {labels.device.type}
        return "estimator"
    monkeypatch.setattr(fisher_kernel, "build_estimator", estimator)
    monkeypatch.setattr(fisher_kernel, "extract", lambda *a, **k: (None, None, torch.zeros(3, dtype=torch.long)))
    val = Features([torch.rand(5, 4)], [torch.rand(5, 4)])
    data = SimpleNamespace(val_labels=np.arange(5) % 2, spec=SimpleNamespace(num_classes=2),
                           split=SimpleNamespace(pool=np.arange(3), pool_labels=np.zeros(3, dtype=np.int64),
                                               imbalance_ratio=1.0, rare_classes=()),
                           pool_source=None)
    fisher_kernel.pool_descriptors(None, data, np.arange(3), ("t",), "phat-g", val, True, torch.device("meta"), 8,
                                   32, torch.Generator())
    assert seen["devices"] == {"meta"}


def test_gen_descr_with_phat_g(tiny_mnist, tmp_path, devices):
    """The stage's pseudo-labels are those of their definition, recomputed on the CPU by brute force: per class d,
    the best R_zg (eq. 12) between the pool image with Fisher scores for label d and the validation images of
    class d; the argmax over d. Its Fisher scores are those of the chosen labels."""
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out, devices)) == 0
    argv = common(tiny_mnist, out, devices) + ["--only", "pfk-phat-g-L20", "--iteration", "0"]
    assert main(argv, dataset="mnist", stage="gen_descr") == 0
    ir = out / "MNIST" / "run0" / "ir4"
    written = ir / "rotation" / "pfk-phat-g-L20" / "descr_b00"
    labels, unlabeled = np.load(written / "pool_pseudo_labels.npy"), np.load(written / "pool_positions.npy")

    spec, cpu = DATASETS["mnist"], torch.device("cpu")
    data = ALData(spec, load_mnist(str(tiny_mnist), download=False), Split.load(ir / "split.npz"))
    model = lenet()
    model.load_state_dict(torch.load(ir / "init_rotation.pt")["model"])
    taps = taps_for(model, 20)
    val, _, _ = extract(model, data.val_source, data.split.val, taps, cpu, labels=data.val_labels)
    val_std = val.standardized()
    images = data.split.pool[unlabeled]
    assert np.array_equal(unlabeled, np.arange(len(data.split.pool)))   # iteration 0: the whole pool
    scores = torch.full((len(images), 10), -float("inf"))
    for d in range(10):
        members = np.flatnonzero(data.val_labels == d)
        if len(members):
            feats, _, _ = extract(model, data.pool_source, images, taps, cpu, labels=np.full(len(images), d))
            scores[:, d] = pfk(feats.standardized(), val_std.rows(members)).max(1).values
    top2 = scores.topk(2, 1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4                           # leave out near ties
    assert clear.float().mean() > 0.9
    assert np.array_equal(labels[clear.numpy()], scores.argmax(1).numpy()[clear.numpy()])
    chosen, _, _ = extract(model, data.pool_source, images, taps, cpu, labels=labels)
    for j, tap in enumerate(taps):
        np.testing.assert_allclose(np.load(written / f"pool_g_{tap}.npy"), chosen.g[j].numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.load(written / f"val_z_{tap}.npy"), val.z[j].numpy(), rtol=1e-4, atol=1e-6)


def test_a_resumed_run_equals_an_uninterrupted_one(tiny_mnist, tmp_path, devices):
    """One run of three configurations (the Fisher-kernel query, MC dropout, VAAL's VAE) straight through two
    iterations, and the same run stopped after the first iteration and resumed: the same records and the same
    models, bit for bit (on CUDA with determinism on, the default)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    configs = ["--only", "pfk-phat-L80", "varR-K4", "vaal", "--vaal-iterations", "3", "--vaal-width", "4",
               "--vaal-batch", "8", "--vaal-latent", "4", "--vaal-disc-hidden", "8", "--vaal-disc-layers", "1"]
    assert main(["--initial"] + common(tiny_mnist, straight, devices)) == 0
    shutil.copytree(straight, resumed)                                  # the same initial models
    assert main(common(tiny_mnist, straight, devices) + configs) == 0
    assert main(common(tiny_mnist, resumed, devices, iterations=1) + configs) == 0
    assert main(common(tiny_mnist, resumed, devices) + configs) == 0

    def records(out):
        rows = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")[0]
        return {(r["config"], r["iteration"]): {k: v for k, v in r.items() if k not in TIMING} for r in rows}
    a, b = records(straight), records(resumed)
    assert len(a) == 6 and a == b
    assert all(r["settings"]["device"] == devices.type for r in a.values())
    if devices.type == "cuda":
        assert all(r["settings"]["cuda"]["deterministic_algorithms"] for r in a.values())
    for config in ("pfk-phat-L80", "varR-K4", "vaal"):
        path = ("MNIST", "run0", "ir4", "rotation", config, "state_b02.pt")
        sa, sb = (torch.load(root.joinpath(*path)) for root in (straight, resumed))
        assert torch.equal(sa["labeled_at"], sb["labeled_at"])
        for ma, mb in zip(sa["models"], sb["models"]):
            assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma), config
