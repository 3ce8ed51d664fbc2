"""End to end on tiny IDX data: run.py --initial, AL iterations, records, resume, stages."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fkal.acquisitions import registry
from fkal.cli import main
from fkal.io import read_jsonl
from fkal.record import ALL_FIELDS

FIELDS = set(ALL_FIELDS)          # fkal.record: the schema in one place


def common(root, out):
    return ["--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "2", "--iterations", "2",
            "--pool-size", "10", "--no-progress", "--eval-batch", "128"]


@pytest.mark.e2e
def test_initial_then_iterations_write_records(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    ir = out / "MNIST" / "run0" / "ir4"
    assert {p.name for p in ir.iterdir()} >= {"split.npz", "init_random.pt", "init_rotation.pt", "initial.json"}
    info = json.loads((ir / "initial.json").read_text())
    assert 0 <= info["rotation_e0"]["rotation_test_accuracy"] <= 100
    rnd, rot = (torch.load(ir / f"init_{k}.pt")["model"] for k in ("random", "rotation"))
    torch.testing.assert_close(rnd["fc2.weight"], rot["fc2.weight"])          # same random classifier
    assert not torch.equal(rnd["conv1.weight"], rot["conv1.weight"])           # pretrained features

    assert main(common(tiny_mnist, out) + ["--only", "random", "pfk-phat-L80", "pcc-L20"]) == 0
    records, warnings = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert not warnings and len(records) == 6
    for r in records:
        assert FIELDS <= set(r)
        assert r["labeled"] == 10 * r["iteration"] and sum(r["selected_class_counts"]) == 10
        assert r["imbalance_ratio"] == 4.0 and r["unsupervised"] == 1 and r["seed"] == 0
    pfk = [r for r in records if r["config"] == "pfk-phat-L80"]
    assert all(r["pseudo_label_accuracy"] is not None for r in pfk)
    assert all(r["pseudo_label_accuracy"] is None for r in records if r["config"] == "random")
    state = torch.load(ir / "rotation" / "pfk-phat-L80" / "state_b02.pt")
    assert (state["labeled_at"] == 1).sum() == 10 and (state["labeled_at"] == 2).sum() == 10


@pytest.mark.e2e
def test_resume_redoes_only_missing_iterations(tiny_mnist, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = common(tiny_mnist, out) + ["--only", "random"]
    calls = []
    original = registry.ACQUISITIONS["random"]

    def interrupted(ctx):
        calls.append(ctx.iteration)
        if ctx.iteration == 2:
            raise KeyboardInterrupt
        return original(ctx)
    monkeypatch.setitem(registry.ACQUISITIONS, "random", interrupted)
    assert main(argv) == 130
    results = out / "MNIST" / "run0" / "results.jsonl"
    first = read_jsonl(results)[0]
    assert [r["iteration"] for r in first] == [1]
    monkeypatch.setitem(registry.ACQUISITIONS, "random", lambda ctx: (calls.append(ctx.iteration), original(ctx))[1])
    assert main(argv) == 0
    records = read_jsonl(results)[0]
    assert [r["iteration"] for r in records] == [1, 2] and records[0] == first[0]
    assert calls == [1, 2, 2]
    assert main(argv) == 0 and calls == [1, 2, 2]                              # complete: nothing redone


@pytest.mark.e2e
def test_ensemble_members_and_full_train(tiny_mnist, tmp_path):
    from fkal.acquisitions.random_sampling import random_query
    out = tmp_path / "out"
    registry.ACQUISITIONS["ensrandom"] = random_query
    try:
        assert main(common(tiny_mnist, out) + ["--only", "ensrandom-E2"]) == 0
        assert main(common(tiny_mnist, out) + ["--full-train"]) == 0
    finally:
        registry.ACQUISITIONS.pop("ensrandom")
    records = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")[0]
    ens = [r for r in records if r["config"] == "ensrandom-E2"]
    assert len(ens) == 2 and all(r["ensemble_test_accuracy"] is not None for r in ens)
    assert (out / "MNIST" / "run0" / "ir4" / "init_rotation_e1.pt").exists()
    full = [r for r in records if r["config"] == "full-train"]
    assert len(full) == 1 and full[0]["iteration"] == 0 and full[0]["labeled"] == full[0]["pool_size"]


@pytest.mark.e2e
def test_stage_scripts_run_on_their_own(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    args = common(tiny_mnist, out)
    for stage in ("unsup", "main_descr"):
        extra = ["--only", "pfk-yhat-L20"] if stage == "main_descr" else []
        proc = subprocess.run([sys.executable, f"mnist/{stage}.py"] + args + extra, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "mnist/gen_descr.py"] + args + ["--only", "pfk-yhat-L20", "--iteration", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    folder = out / "MNIST" / "run0" / "ir4" / "rotation" / "pfk-yhat-L20" / "descr_b02"
    z = np.load(folder / "pool_z_conv2.npy", mmap_mode="r")
    g = np.load(folder / "pool_g_conv2.npy", mmap_mode="r")
    positions = np.load(folder / "pool_positions.npy")
    assert z.shape == g.shape == (len(positions), 20) and z.dtype == np.float32
    assert np.load(folder / "val_z_conv2.npy").shape == (100, 20)


@pytest.mark.e2e
def test_help_of_every_entry_point():
    for script in ("run.py", "mnist/unsup.py", "mnist/gen_descr.py", "mnist/main_descr.py"):
        proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and "--data-root" in proc.stdout


def test_list_prints_the_cfg_list(capsys):
    assert main(["--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names[:2] == ["random", "pcc-L20"] and "pfk-phat-L80" in names


def test_unknown_configuration_is_a_clear_error(tiny_mnist, tmp_path, capsys):
    assert main(common(tiny_mnist, tmp_path) + ["--only", "pfk-xyz-L20"]) == 2
    err = capsys.readouterr().err
    assert "pfk-xyz-L20" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_visualize_tsne_draws_confusion_and_tsne(tiny_mnist, tmp_path, capsys):
    import importlib.util
    from PIL import Image
    out = tmp_path / "out"
    assert main(common(tiny_mnist, out) + ["--only", "random", "pcc-L20"]) == 0
    spec = importlib.util.spec_from_file_location("visualize_tsne", "visualize_tsne.py")
    vis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vis)
    rc = vis.main(["--data-root", str(tiny_mnist), "--out", str(out), "--imbalance-ratio", "4", "--iteration", "2",
                   "--configs", "random", "pcc-L20", "--samples", "60"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "random: test accuracy" in printed and "under-represented classes 5:" in printed
    png = out / "MNIST" / "figures" / "tsne_ir4_b2.png"
    assert png.with_suffix(".pdf").exists()
    w, h = Image.open(png).size
    assert (w, h) == (int(4.2 * 2 * 110), int(8.4 * 110))
    assert vis.main(["--data-root", str(tiny_mnist), "--out", str(out), "--imbalance-ratio", "4",
                     "--iteration", "5", "--configs", "random"]) == 2


def test_confusion_matrix_counts():
    from fkal.diagnostics import confusion_matrix
    m = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_successors_in_the_loop(tiny_mnist, tmp_path, monkeypatch):
    """TypiClust gets the run's rotation-pretrained model from the loop (also in random-init runs); the new
    pseudo-label estimators run inside pfk and similar, and their rare-class scores reach the records."""
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    seen, pseudo = [], {}
    original, pfk = registry.ACQUISITIONS["typiclust"], registry.ACQUISITIONS["pfk"]

    def spy(ctx):
        seen.append({k: v.clone() for k, v in ctx.pretrained().state_dict().items()})
        return original(ctx)

    def pfk_spy(ctx):                            # each query's pseudo-labels and the true labels of its images
        result = pfk(ctx)
        true = ctx.data.pool_source.labels[ctx.data.split.pool[ctx.unlabeled]]
        pseudo[ctx.config.name, ctx.iteration] = (result.pseudo_labels, true, ctx.data.split.rare_classes)
        return result
    monkeypatch.setitem(registry.ACQUISITIONS, "typiclust", spy)
    monkeypatch.setitem(registry.ACQUISITIONS, "pfk", pfk_spy)
    argv = common(tiny_mnist, out) + ["--unsupervised", "0", "--only", "typiclust", "similar-phat-em-L80",
                                      "pfk-efs-em-L20", "pfk-phat-agree-L80"]
    assert main(argv) == 0
    rotation = torch.load(out / "MNIST" / "run0" / "ir4" / "init_rotation.pt")["model"]
    assert len(seen) == 2 and all(torch.equal(s["conv1.weight"], rotation["conv1.weight"]) for s in seen)
    records, warnings = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    assert not warnings and len(records) == 8
    for r in records:
        if r["config"] == "typiclust":
            assert r["pseudo_label_accuracy"] is None and r["pseudo_label_rare_count"] is None
        else:
            assert r["pseudo_label_accuracy"] is not None and r["pseudo_label_rare_count"] >= 0
        if r["config"].startswith("pfk"):                          # recomputed from what the query returned
            labels, true, rare = pseudo[r["config"], r["iteration"]]
            assert len(rare) > 0 and np.isin(true, rare).any()
            said = np.isin(labels, rare)
            hits = (said & (labels == true)).sum()
            assert r["pseudo_label_accuracy"] == pytest.approx(100 * (labels == true).mean())
            assert r["pseudo_label_rare_count"] == said.sum()
            assert r["pseudo_label_rare_recall"] == pytest.approx(100 * hits / np.isin(true, rare).sum())
            assert r["pseudo_label_rare_precision"] == (pytest.approx(100 * hits / said.sum()) if said.any() else None)


@pytest.mark.parametrize("broken, message", [
    (lambda ctx: np.r_[ctx.unlabeled[:9], ctx.unlabeled[0]], r"returned 10 positions \(9 distinct, 0 already"),
    (lambda ctx: ctx.unlabeled[:9], r"returned 9 positions \(9 distinct, 0 already"),
    (lambda ctx: np.r_[ctx.unlabeled[:9], ctx.labeled[0]], r"returned 10 positions \(10 distinct, 1 already"),
], ids=["a-pick-twice", "one-short", "a-labeled-one"])
def test_the_loop_refuses_picks_that_break_the_contract(tiny_mnist, tmp_path, monkeypatch, broken, message):
    """An acquisition's picks are checked before anything is labeled: P distinct, unlabeled, offered."""
    from fkal.acquisitions.contract import QueryResult
    out = tmp_path / "out"
    assert main(["--initial"] + common(tiny_mnist, out)) == 0
    monkeypatch.setitem(registry.ACQUISITIONS, "random",
                        lambda ctx: QueryResult(np.asarray(broken(ctx)) if ctx.iteration == 2 else ctx.unlabeled[:10]))
    with pytest.raises(RuntimeError, match="^random " + message):
        main(common(tiny_mnist, out) + ["--unsupervised", "0", "--only", "random"])


@pytest.mark.parametrize("progress", [True, False])
def test_the_iterations_bar_names_the_run_and_configuration_and_stays(tiny_mnist, tmp_path, monkeypatch, progress):
    """One bar per configuration over its iterations, named by run, IR, start (rnd / rot) and configuration; it
    stays on the screen when done (the inner bars of training go), and ``--no-progress`` hides it."""
    from dataclasses import replace
    from tqdm.auto import tqdm

    import fkal.loop
    from fkal.config import parse_config
    from fkal.data.mnist import load_mnist
    from fkal.loop import run_config
    from test_resume import settings
    bars = []

    class Seen(tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(kwargs)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(fkal.loop, "tqdm", Seen)
    s = replace(settings(tmp_path, 2), progress=progress)
    run_config(s, load_mnist(str(tiny_mnist), download=False), parse_config("random", registry.ACQUISITIONS),
               0, 4.0, 0)
    assert [(k["desc"], k.get("leave", True), k["disable"]) for k in bars] == [("run0 IR=4 rnd random", True,
                                                                                  not progress)]
