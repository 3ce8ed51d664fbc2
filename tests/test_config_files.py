"""Experiment files: ``run.py --config FILE`` runs each job with the file's options then the command line's
(which win); records carry the file's name and hash without changing what resume compares; ``run_plot.py
--config`` makes the file's plots; every file under configs/ reads."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fkal import config_files
from fkal.cli import main
from fkal.errors import UserError
from fkal.reporting.cli import main as plot_main

ROOT = Path(__file__).resolve().parents[1]

FILE = """\
name: tiny
description: two jobs on a tiny MNIST
options:
  data-root: {data}
  out: {out}
  imbalance-ratios: [4]
  train-size: 400
  val-size: 100
  unsup-epochs: 1
  epochs: 1
  iterations: 3
  pool-size: 10
  no-progress: true
jobs:
  - {{only: [random]}}
  - {{only: [coreset], iterations: 2}}
plots:
  - {{imbalance-ratios: [4]}}
"""


def write(tmp_path, tiny_mnist) -> tuple[Path, Path]:
    out = tmp_path / "out"
    path = tmp_path / "tiny.yaml"
    path.write_text(FILE.format(data=tiny_mnist, out=out))
    return path, out


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "MNIST" / "run0" / "results.jsonl").read_text().splitlines()]


def test_run_py_runs_each_job_and_the_command_line_wins(tiny_mnist, tmp_path, capsys):
    path, out = write(tmp_path, tiny_mnist)
    assert main(["--config", str(path), "--run-stop", "1", "--iterations", "2"]) == 0
    printed = capsys.readouterr().out
    assert "tiny job 1/2: run.py --data-root" in printed and "--only random" in printed
    got = records(out)
    assert sorted((r["config"], r["iteration"]) for r in got) == [("coreset", 1), ("coreset", 2), ("random", 1),
                                                                 ("random", 2)]     # --iterations 2 won over 3
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(r["settings"]["config_file"] == {"name": "tiny", "file": "tiny.yaml", "sha256": digest} for r in got)
    # the same options by hand: the same settings id, and the run goes on from the file's records
    by_hand = config_files.job_argvs(config_files.load(path), ["--run-stop", "1", "--iterations", "3"])[0]
    assert main(by_hand) == 0
    again = [r for r in records(out) if r["config"] == "random"]
    assert [r["iteration"] for r in again] == [1, 2, 3] and len({r["settings_id"] for r in again}) == 1
    assert "config_file" not in again[-1]["settings"]
    assert plot_main(["--config", str(path)]) == 0
    assert "tiny plot 1/1: run_plot.py --out" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("name: x\nrunz: []\n", "unknown key 'runz'"),
    ("- a\n- b\n", "expected a mapping"),
    ("options: [1, 2]\n", "options must be a mapping"),
    ("options: {only: []}\n", "only is an empty list"),
    ("options: {a: [\n", "not valid YAML"),
])
def test_a_bad_file_is_one_error_line(tmp_path, text, message, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert message in err


def test_a_missing_file_names_itself(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read it" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_file_parses_into_command_lines_run_py_accepts(path):
    """Each job's command line parses with run.py's parser (no unknown flag, no bad value) and each plot's with
    run_plot.py's."""
    from fkal import protocols
    from fkal.cli import build_parser
    from fkal.reporting.cli import build_parser as plot_parser

    experiment = config_files.load(path)
    assert experiment.description and experiment.jobs
    for argv in config_files.job_argvs(experiment, []):
        protocols.parse(build_parser(), argv, None)
    for argv in config_files.plot_argvs(experiment, []):
        plot_parser().parse_args(argv)


def test_argv_of_writes_flags_as_the_command_line_takes_them():
    assert config_files.argv_of({"run-stop": 3, "only": ["a", "b"], "no_progress": True, "seed": None,
                                 "fresh": False}) == ["--run-stop", "3", "--only", "a", "b", "--no-progress"]
    with pytest.raises(UserError, match="holds a mapping"):
        config_files.argv_of({"only": {"a": 1}})
