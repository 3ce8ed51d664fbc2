"""An acquisition declared in one place: a toy acquisition defined in this file alone (its query, its option, its
spec), registered, is accepted by ``run.py --only``, written in a run's records with its option in the settings,
tabulated by ``run_plot.py`` under its title, picked by ``fkal.select`` and by a labeling round."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

import fkal
from fkal.acquisitions.contract import AcquisitionSpec, Example, QueryContext, QueryResult
from fkal.acquisitions.registry import register, unregister
from fkal.cli import main as run_main
from fkal.labeling.cli import main as label_next
from fkal.reporting.cli import main as plot_main


def last_positions_query(ctx: QueryContext) -> QueryResult:
    """The P unlabeled positions farthest along the pool, skipping every ``toy_stride``-th; scores: the positions."""
    stride = int(ctx.options.get("toy_stride") or 1)
    order = np.asarray(ctx.unlabeled)[::-1]
    order = np.concatenate([order[::stride], np.setdiff1d(order, order[::stride])[::-1]])
    picks = order[:ctx.budget]
    return QueryResult(picks, picks.astype(np.float64), extras={"toy_note": "farthest"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--toy-stride", type=int, default=1, help="take every k-th unlabeled image from the end")


TOY = AcquisitionSpec("toy", last_positions_query, title="TOY", options=("toy_stride",),
                      add_arguments=add_arguments, example=Example("toy"))


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister("toy")


def test_the_toy_runs_in_the_loop_and_is_tabulated(toy, tiny_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
            "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "1", "--iterations", "2",
            "--pool-size", "10", "--no-progress", "--only", "toy", "--toy-stride", "2"]
    assert run_main(argv) == 0
    records = [json.loads(line) for line in (out / "MNIST" / "run0" / "results.jsonl").read_text().splitlines()]
    assert [(r["config"], r["iteration"], r["labeled"]) for r in records] == [("toy", 1, 10), ("toy", 2, 20)]
    assert all(r["settings"]["options"] == {"toy_stride": 2} and r["toy_note"] == "farthest" for r in records)
    state = torch.load(out / "MNIST" / "run0" / "ir4" / "rotation" / "toy" / "state_b01.pt")
    pool = len(state["labeled_at"])
    want = np.arange(pool)[::-1]
    want = np.concatenate([want[::2], np.setdiff1d(want, want[::2])[::-1]])[:10]
    assert sorted(np.flatnonzero(state["labeled_at"].numpy() == 1)) == sorted(want)
    capsys.readouterr()
    assert run_main([*argv[:-4], "--only", "toy", "--toy-stride", "3"]) == 2          # its option is compared
    assert "--toy-stride: 2 there, 3 now" in capsys.readouterr().err
    assert plot_main(["--out", str(out)]) == 0
    assert "toy  (TOY)" in capsys.readouterr().out


def test_the_toy_is_selectable_and_makes_a_labeling_round(toy, tiny_mnist, tmp_path):
    assert "toy" in fkal.available()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    got = fkal.select("toy", net, torch.randn(20, 1, 28, 28), 4, toy_stride=1)
    assert got.indices.tolist() == [19, 18, 17, 16] and got.extras["toy_note"] == "farthest"

    from tools.mnist_folders import write_folders
    folders = tmp_path / "png"
    write_folders(tiny_mnist, folders, pool_size=300, ir=1, labeled_per_class=2, val_per_class=3, seed=0)
    state = tmp_path / "state"
    assert label_next(["select", "--state", str(state), "--pool", str(folders / "pool"), "--labeled",
                       str(folders / "labeled"), "--val", str(folders / "val"), "--acquisition", "toy", "--budget",
                       "5", "--epochs", "1", "--unsup-epochs", "1", "--no-progress"]) == 0
    rows = (state / "round1" / "to_label.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("rank,path,score")
    assert json.loads((state / "round1" / "round.json").read_text())["acquisition"] == "toy"
