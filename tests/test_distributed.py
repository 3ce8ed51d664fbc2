"""One experiment on several processes, on the CPU with gloo, launched the way users launch it:
``python -m torch.distributed.run --nproc_per_node 2`` (torchrun) on tiny data.

- from the same model, 2 processes select exactly the images (and scores) 1 process selects;
- a whole tiny run under 2 processes completes, writes the record fields one process writes, and resumes after
  one rank is killed with SIGKILL;
- a bad input under torchrun ends every process with one error line, printed once;
- the pieces on their own: batch sharding, gathering, the merge of per-shard top-K candidates, k-center greedy
  over shards.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fkal import distributed as D
from fkal.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def env() -> dict:
    """The CPU and gloo on any machine: with a GPU visible, torchrun's processes would each take the GPU of their
    LOCAL_RANK (and a machine with one GPU has none for the second), while the one-process runs compared with them
    stay on the CPU."""
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    e.pop("WORLD_SIZE", None)
    return e


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# The pieces, in one process
# ----------------------------------------------------------------------------------------------------------------
def test_batches_are_dealt_round_robin(monkeypatch):
    monkeypatch.setattr(D, "world", lambda: 3)
    got = {}
    for r in range(3):
        monkeypatch.setattr(D, "rank", lambda r=r: r)
        got[r] = D.my_batches(10, 3)
    assert got == {0: [(0, 0, 3), (3, 9, 10)], 1: [(1, 3, 6)], 2: [(2, 6, 9)]}
    covered = sorted(p for r in got for _, a, b in got[r] for p in range(a, b))
    assert covered == list(range(10))
    monkeypatch.setattr(D, "rank", lambda: 1)
    assert D.split_batch(np.array([5, 6, 7, 8, 9])).tolist() == [6, 9]
    assert D.split_batch(np.array([5])).tolist() == [5]                 # an empty share takes the first image


def test_gather_rows_in_one_process_reorders():
    local = torch.tensor([[1.0], [2.0], [3.0]])
    assert D.gather_rows(local, np.array([2, 0, 1]), 3).flatten().tolist() == [2.0, 3.0, 1.0]


def test_a_process_without_a_gpu_of_its_own_is_told_how_many_there_are_and_how_to_use_the_cpu(monkeypatch):
    from fkal.errors import UserError
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError) as e:
        D.init()
    assert str(e.value) == ("LOCAL_RANK 1 but only 1 GPUs here: start torchrun with --nproc_per_node at most the "
                            "number of GPUs, or with CUDA_VISIBLE_DEVICES= (none) to run every process on the CPU")


def test_global_top_k_orders_by_similarity_then_position():
    from fkal.acquisitions.fisher_kernel import global_top_k
    values = torch.tensor([[0.5, 0.9, 0.9, 0.1]])
    positions = torch.tensor([[7, 4, 2, 9]])
    v, p = global_top_k(values, positions, 3)
    assert p.tolist() == [[2, 4, 7]] and torch.equal(v, torch.tensor([[0.9, 0.9, 0.5]]))


# ----------------------------------------------------------------------------------------------------------------
# Under torchrun
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_state(tmp_path_factory):
    """A tiny MNIST-format data root and a LeNet trained a few steps on it (saved state)."""
    from fkal.data.synthetic import write_mnist
    from fkal.data import DATASETS, make_split
    from fkal.data.mnist import load_mnist
    from fkal.models import lenet
    from fkal.training import train

    base = tmp_path_factory.mktemp("dist")
    root = write_mnist(base / "data")
    raw = load_mnist(str(root), download=False)
    spec = DATASETS["mnist"]
    split = make_split(spec, raw, seed=0, imbalance_ratio=1, train_size=300, val_size=100)
    torch.manual_seed(0)
    model = lenet()
    labeled = np.arange(60)
    train(model, raw.train, split.pool[labeled], split.pool_labels[labeled], spec.train.with_epochs(2),
          torch.device("cpu"), torch.Generator().manual_seed(0), progress=False)
    state = base / "model.pt"
    torch.save(model.state_dict(), state)
    return root, state


CONFIGS = ["random", "pfk-phat-L80", "pcc-L20", "pfk-trC-L20-K4", "coreset", "varR-K4", "bald-E2-K3", "lloss",
           "vaal", "similar-phat-L80", "typiclust", "badge", "base", "galaxy", "direct"]
# fewer unlabeled images than one batch: one of the two processes holds none of them
CONFIGS += ["small:" + name for name in ("random", "pfk-phat-L80", "coreset", "varR-K4", "bald-E2-K3", "vaal")]


@pytest.mark.e2e
def test_two_processes_pick_exactly_what_one_picks(trained_state, tmp_path):
    root, state = trained_state
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    script = str(ROOT / "tests" / "torchrun_picks.py")
    a = run([sys.executable, script, str(root), str(state), str(one), *CONFIGS])
    assert a.returncode == 0, a.stderr[-3000:]
    b = run(TORCHRUN + [script, str(root), str(state), str(two), *CONFIGS])
    assert b.returncode == 0, b.stderr[-3000:]
    ref, dist = json.loads(one.read_text()), json.loads(two.read_text())
    assert ref["world"] == 1 and dist["world"] == 2 and dist["ranks_agree"]
    for name in CONFIGS:
        assert dist["picks"][name]["indices"] == ref["picks"][name]["indices"], name
        if ref["picks"][name]["scores"] is not None:
            np.testing.assert_allclose(dist["picks"][name]["scores"], ref["picks"][name]["scores"], rtol=1e-6,
                                       err_msg=name)
        assert dist["picks"][name]["pseudo_label_accuracy"] == ref["picks"][name]["pseudo_label_accuracy"]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tiny_run(root, out, *extra) -> list[str]:
    return ["run.py", "--data-root", str(root), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "8", "--iterations",
            "5", "--pool-size", "10", "--no-progress", "--eval-batch", "64", *extra]


@pytest.mark.e2e
def test_a_whole_run_under_two_processes_completes_resumes_after_a_kill_and_writes_the_same_fields(
        trained_state, tmp_path):
    root, _ = trained_state
    one, two = tmp_path / "one", tmp_path / "two"
    configs = ["--only", "random", "pfk-phat-L80"]
    a = run([sys.executable] + tiny_run(root, one, *configs))
    assert a.returncode == 0, a.stderr[-3000:]
    # two processes, one of them killed with SIGKILL once a first record is written
    cmd = TORCHRUN + tiny_run(root, two, *configs)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    results = two / "MNIST" / "run0" / "results.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (results.exists() and results.read_text().strip()):
        time.sleep(0.05)
    killed = False
    if proc.poll() is None:
        workers = [p for p in descendants(proc.pid) if b"run.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if workers:
            os.kill(max(workers), signal.SIGKILL)                     # one rank dies
            killed = True
    output, _ = proc.communicate(timeout=600)
    assert killed and proc.returncode != 0, output[-3000:]            # torchrun ended the others: no hang
    done_before = len(read_jsonl(results)[0])
    assert done_before < 10
    again = run(TORCHRUN + tiny_run(root, two, *configs))
    assert again.returncode == 0, again.stderr[-3000:]
    records, warnings = read_jsonl(results)
    ref, _ = read_jsonl(one / "MNIST" / "run0" / "results.jsonl")
    key = lambda r: (r["config"], r["iteration"])                      # noqa: E731
    assert sorted(map(key, records)) == sorted(map(key, ref))          # every iteration once, none repeated
    fields = {r["config"]: set(r) for r in ref}
    for r in records:
        assert set(r) == fields[r["config"]] and r["world_size"] == 2 and r["settings"]["world_size"] == 2
    assert all(r["world_size"] == 1 for r in ref)
    # the 2-process folder is refused to a 1-process run, by name
    mixed = run([sys.executable] + tiny_run(root, two, *configs))
    assert mixed.returncode == 2 and "world_size (torchrun --nproc_per_node): 2 there, 1 now" in mixed.stderr, \
        mixed.stderr


@pytest.mark.e2e
def test_a_bad_input_under_torchrun_is_one_line_printed_once(trained_state, tmp_path):
    root, _ = trained_state
    p = run(TORCHRUN + tiny_run(root, tmp_path / "out", "--only", "random", "--pool-size", "1000"), timeout=300)
    errors = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert p.returncode != 0 and len(errors) == 1 and "--pool-size" in errors[0]
