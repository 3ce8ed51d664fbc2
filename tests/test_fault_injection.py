"""tools/fault_injection.py: a run killed with SIGKILL and resumed ends exactly as an uninterrupted one, and the
comparison it relies on sees every kind of difference."""
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "fault_injection.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.e2e
def test_four_kill_points_one_of_each_kind_are_survived(tool, tmp_path, capsys):
    """A write, an append, a timed kill and one inside a step (trials 0-3 cycle through the kinds), tiny data and
    two iterations (CI's small N; the note's figure comes from the script on MNIST with --trials 20 or more)."""
    assert tool.main(["--tiny", "--trials", "4", "--seed", "0", "--work", str(tmp_path / "work"),
                      "--", "--iterations", "2"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    trials = [line for line in out.splitlines() if line.startswith("trial")]
    assert len(trials) >= 4 and re.search(r"^survived 4/4", out, re.MULTILINE), out
    landed = [line for line in trials if "landed" in line]
    assert "killed: write" in landed[0] and "killed: append" in landed[1] and "landed during" in landed[2], out
    assert re.search(r"killed: [\d.]+ s into (query|train|pretraining)", landed[3]), out


def make_folder(root: Path) -> Path:
    """A run folder in miniature: two records, a state, a split and a settings file."""
    run = root / "MNIST" / "run0"
    folder = run / "ir4" / "rotation" / "random"
    folder.mkdir(parents=True)
    records = [{"config": "random", "dataset": "mnist", "imbalance_ratio": 4.0, "unsupervised": 1, "run": 0,
                "iteration": b, "test_accuracy": 50.0 + b, "query_seconds": 0.1, "train_seconds": 1.0,
                "code_version": "abc", "selected_class_counts": [1, 2]} for b in (1, 2)]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    torch.save({"models": [{"w": torch.linspace(-1, 1, 7)}], "labeled_at": torch.tensor([1, -1, 2]), "iteration": 2},
               folder / "state_b02.pt")
    np.savez(run / "ir4" / "split.npz", pool=np.arange(5), val=np.arange(3))
    (folder / "settings.json").write_text(json.dumps({"settings": {"seed": 0}}))
    return root


def rewrite_records(root: Path, change) -> None:
    path = root / "MNIST" / "run0" / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records = change(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def rewrite_state(root: Path, change) -> None:
    path = root / "MNIST" / "run0" / "ir4" / "rotation" / "random" / "state_b02.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def one_bit(state):
    w = state["models"][0]["w"]
    w.view(torch.int32)[3] ^= 1                      # the last bit of one weight's mantissa


@pytest.mark.parametrize("change, expected", [
    (lambda root: rewrite_state(root, one_bit), "state_b02.pt.models[0].w: values differ"),
    (lambda root: rewrite_state(root, lambda s: s["labeled_at"].__setitem__(1, 2)), "labeled_at: values differ"),
    (lambda root: rewrite_state(root, lambda s: s.__setitem__("labeled_at", s["labeled_at"].int())),
     "labeled_at: torch.int64[3] -> torch.int32[3]"),
    (lambda root: rewrite_records(root, lambda rs: [rs[0], {**rs[1], "test_accuracy": 52.5}]),
     "record random/2: test_accuracy differs (52.0 -> 52.5)"),
    (lambda root: rewrite_records(root, lambda rs: [rs[0], {**rs[1], "selected_class_counts": [2, 1]}]),
     "record random/2: selected_class_counts differs"),
    (lambda root: rewrite_records(root, lambda rs: rs + [rs[1]]), "record random/2: 2 copies"),
    (lambda root: rewrite_records(root, lambda rs: rs[:1]), "record random/2: missing"),
    (lambda root: np.savez(root / "MNIST" / "run0" / "ir4" / "split.npz", pool=np.arange(1, 6), val=np.arange(3)),
     "split.npz: pool differs"),
    (lambda root: (root / "MNIST" / "run0" / "ir4" / "rotation" / "random" / ".state_b03.pt.x1.tmp").write_bytes(b""),
     "a temporary file left behind"),
    (lambda root: (root / "MNIST" / "run0" / "ir4" / "rotation" / "random" / "settings.json").write_text(
        json.dumps({"settings": {"seed": 1}})), "settings.json: differs"),
])
def test_the_comparison_sees_each_difference(tool, tmp_path, change, expected):
    ref = make_folder(tmp_path / "ref")
    got = tmp_path / "got"
    shutil.copytree(ref, got)
    assert tool.compare_folders(ref, got) == []
    change(got)
    problems = tool.compare_folders(ref, got)
    assert any(expected in p for p in problems), problems


def test_the_comparison_leaves_out_timings_code_version_and_lock_files(tool, tmp_path):
    ref = make_folder(tmp_path / "ref")
    got = tmp_path / "got"
    shutil.copytree(ref, got)
    rewrite_records(got, lambda rs: [{**r, "query_seconds": 9.0, "train_seconds": 9.0, "code_version": "def"}
                                     for r in rs])
    (got / "MNIST" / "run0" / "ir4" / ".initial.lock").write_bytes(b"")
    assert tool.compare_folders(ref, got) == []


def test_a_torn_line_is_no_difference_but_its_lost_record_is(tool, tmp_path):
    ref = make_folder(tmp_path / "ref")
    got = tmp_path / "got"
    shutil.copytree(ref, got)
    results = got / "MNIST" / "run0" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text(lines[0] + lines[1][:20] + "\n" + lines[1])   # a fragment, then the record again
    assert tool.compare_folders(ref, got) == []
    results.write_text(lines[0] + lines[1][:20])                    # the fragment only
    assert any("record random/2: missing" in p for p in tool.compare_folders(ref, got))


def test_a_resumed_run_removes_the_temporary_files_of_killed_writes(tiny_mnist, tmp_path):
    """A process killed between writing a temporary file and renaming it leaves the file; the next run on that
    folder removes it (under the folder's lock) and ends as an uninterrupted run."""
    from fkal.cli import main
    common = ["--data-root", str(tiny_mnist), "--out", str(tmp_path / "out"), "--run-stop", "1",
              "--imbalance-ratios", "4", "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1",
              "--epochs", "1", "--pool-size", "10", "--no-progress", "--only", "random"]
    assert main(common + ["--iterations", "1"]) == 0
    ir = tmp_path / "out" / "MNIST" / "run0" / "ir4"
    left = [ir / "rotation" / "random" / ".state_b02.pt.k1ll3d.tmp", ir / ".init_random.pt.k1ll3d.tmp"]
    for p in left:
        p.write_bytes(b"half a checkpoint")
    assert main(common + ["--iterations", "2"]) == 0
    assert not [p for p in left if p.exists()]
    assert sorted(p.name for p in (ir / "rotation" / "random").iterdir()) == [
        "settings.json", "state_b01.pt", "state_b02.pt"]
