"""benchmarks/gpu_check.py: the smoke run on the CPU reports every check (so that the GPU check does not rot), and the
pieces that decide things: the record and weight comparisons, the deadline planner, pytest's report, the usage
error without CUDA."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()


@pytest.mark.e2e
def test_smoke_run_reports_every_check_and_the_repeat_and_resume_are_bit_for_bit(tmp_path):
    out, scratch = tmp_path / "report", tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TMPDIR=str(scratch))
    env.pop("FKAL_DATA_ROOT", None)
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--deadline", "180"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads((out / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == list(gpu_check.CHECK_NAMES)
    for c in report["checks"]:
        assert c["status"] in ("passed", "skipped"), c
        assert isinstance(c["seconds"], (int, float)) and c["seconds"] >= 0, c
    assert checks["dali"]["status"] == "skipped" or checks["dali"]["figures"].get("dali_version")
    assert report["card"]["card"] == "cpu" and report["mode"] == "smoke" and report["exit_status"] == 0
    markdown = (out / "gpu_check.md").read_text()
    assert "card: cpu" in markdown and "| repeat-resume | passed |" in markdown

    resumed = checks["repeat-resume"]
    assert resumed["status"] == "passed" and resumed["figures"]["killed"] is True
    for field in ("repeat_records", "resume_records"):
        assert resumed["figures"][field] == "equal"
    for field in ("repeat_weights", "resume_weights"):
        assert resumed["figures"][field].startswith("equal (")

    cases = checks["matching"]["figures"]["cases"]
    assert len(cases) == 2
    for case in cases:
        assert case["picks"] == case["distinct"] == case["budget"] and case["in_range"], case
    for name in ("matching", "pool-pass-resnet10", "successors", "mnist-throughput"):
        assert checks[name]["figures"]["label"] == gpu_check.SMOKE_LABEL
        assert checks[name]["summary"].startswith(f"[{gpu_check.SMOKE_LABEL}]")
    assert checks["tests"]["figures"]["total"]["failed"] == 0


RECORD = {"config": "random", "run": 0, "imbalance_ratio": 4.0, "unsupervised": 1, "iteration": 1,
          "test_accuracy": 91.25, "query_seconds": 0.5, "train_seconds": 3.0, "code_version": "abc",
          "settings": {"device": "cuda", "cuda": {"deterministic_algorithms": True}}, "per_class_accuracy": [90.0, 1.5]}


def test_record_comparison_ignores_only_the_timings_and_code_version():
    other = dict(RECORD, query_seconds=9.0, train_seconds=1.0, code_version="def-dirty")
    assert gpu_check.record_difference(RECORD, other) is None
    assert gpu_check.record_difference(RECORD, dict(RECORD, test_accuracy=91.5)) == "test_accuracy: 91.25 != 91.5"
    assert gpu_check.record_difference(RECORD, dict(RECORD, epochs=1)) == "epochs: only in the second"
    nested = dict(RECORD, settings={"device": "cuda", "cuda": {"deterministic_algorithms": False}})
    assert gpu_check.record_difference(RECORD, nested) == "settings.cuda.deterministic_algorithms: true != false"
    listed = dict(RECORD, per_class_accuracy=[90.0, 1.25])
    assert gpu_check.record_difference(RECORD, listed) == "per_class_accuracy[1]: 1.5 != 1.25"
    assert gpu_check.first_difference({"a": 1, "b": 2}, {"a": 1.0, "b": 3}) == "a: 1 != 1.0"    # first field first
    assert gpu_check.first_difference({"x": float("nan")}, {"x": float("nan")}) is None


def test_record_lists_compare_by_iteration_and_name_the_first_difference():
    second = dict(RECORD, iteration=2)
    assert gpu_check.compare_records([RECORD, second], [dict(second, query_seconds=7.0), RECORD]) is None
    found = gpu_check.compare_records([RECORD, second], [RECORD, dict(second, labeled=20)])
    assert found == "record (random, run0, IR=4.0, unsupervised=1, b=2): labeled: only in the second"
    assert "only in the first" in gpu_check.compare_records([RECORD, second], [RECORD])
    assert "2 copies != 1" in gpu_check.compare_records([RECORD, RECORD], [RECORD])
    assert gpu_check.compare_records([], []) == "no records on either side"


def test_weights_compare_bit_for_bit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    state = {"models": [{"w": torch.tensor([1.0, -0.0]), "n": torch.tensor(3)}], "iteration": 1}
    for root in (a, b):
        (root / "x").mkdir(parents=True)
        torch.save(state, root / "x" / "state_b01.pt")
    assert gpu_check.compare_weights(a, b, ("state_b*.pt",)) == (1, None)
    torch.save({**state, "models": [{"w": torch.tensor([1.0, 0.0]), "n": torch.tensor(3)}]}, b / "x" / "state_b01.pt")
    count, found = gpu_check.compare_weights(a, b, ("state_b*.pt",))    # -0.0 == 0.0, but not bit for bit
    assert (count, found) == (1, "x/state_b01.pt: models[0].w: equal values in different bits (-0.0 against 0.0, "
                                 "or NaNs)")
    torch.save({**state, "models": [{"w": torch.tensor([1.0, 0.5]), "n": torch.tensor(3)}]}, b / "x" / "state_b01.pt")
    assert gpu_check.compare_weights(a, b, ("state_b*.pt",))[1] == ("x/state_b01.pt: models[0].w: 1 of 2 elements "
                                                                   "differ, largest |difference| 0.5")
    torch.save(state, b / "x" / "state_b02.pt")
    assert "only in the second folder" in gpu_check.compare_weights(a, b, ("state_b*.pt",))[1]


def test_the_planner_keeps_later_minima_back_and_skips_what_does_not_fit():
    plan = gpu_check.plan_allowance
    assert plan(remaining=100, need=30, minimum=10, reserve=20) == 30
    assert plan(remaining=100, need=90, minimum=10, reserve=20) == 80          # the later checks' minima kept
    assert plan(remaining=25, need=90, minimum=10, reserve=20) == 10           # never below its own minimum
    assert plan(remaining=9, need=90, minimum=10, reserve=0) is None           # skipped: deadline
    assert plan(remaining=50, need=float("inf"), minimum=10, reserve=0) == 50


def test_run_all_skips_a_check_that_no_longer_fits_and_goes_on_past_a_failure(tmp_path):
    checks = (gpu_check.Check("one", "first", (60, 60), (10, 10)),
              gpu_check.Check("two", "second", (60, 60), (30, 30)),
              gpu_check.Check("three", "third", (5, 5), (2, 2)))
    clock = {"now": 0.0}
    ran = []

    def runner(check, allowance):
        ran.append((check.name, allowance))
        clock["now"] += {"one": 40.0, "three": 1.0}[check.name]
        return gpu_check.failed("boom") if check.name == "one" else gpu_check.passed("fine")
    report = gpu_check.Report(tmp_path, "smoke", 70, {"card": "cpu"}, checks)
    gpu_check.run_all(checks, runner, lambda: clock["now"], 70, True, report, say=lambda line: None)
    # one: 70 - 3 (margin) = 67 left, 32 kept back for two and three: 35; two: 27 left < 30: skipped; three runs
    assert ran == [("one", 35), ("three", 5)]
    status = {c["name"]: (c["status"], c["reason"], c["seconds"]) for c in report.data["checks"]}
    assert status == {"one": ("failed", None, 40.0), "two": ("skipped", "deadline", 0.0),
                      "three": ("passed", None, 1.0)}
    assert report.exit_status() == 1
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["status"] for c in written["checks"]] == ["failed", "skipped", "passed"]
    assert "| two | skipped: deadline |" in (tmp_path / "gpu_check.md").read_text()


def test_pytest_report_is_counted_by_file_with_failures_and_skip_reasons():
    xml = """<testsuites><testsuite name="pytest">
      <testcase classname="tests.test_device" name="test_a[cuda]"/>
      <testcase classname="tests.test_device" name="test_a[cpu]"/>
      <testcase classname="tests.test_runs_on_devices" name="test_b[cuda]">
        <skipped type="pytest.skip" message="no CUDA device here">x</skipped></testcase>
      <testcase classname="tests.test_image_loaders" name="test_dali">
        <failure message="assert 3 == 4">long text</failure></testcase>
    </testsuite></testsuites>"""
    found = gpu_check.junit_summary(xml)
    assert found["total"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert found["by_file"]["test_device"]["passed"] == 2 and found["by_file"]["test_image_loaders"]["failed"] == 1
    assert found["failures"] == ["test_image_loaders::test_dali: assert 3 == 4"]
    assert found["skip_reasons"] == {"no CUDA device here": 1} and found["cuda_variants_passed"] == 1


def test_without_cuda_and_without_smoke_one_error_line_and_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out"), "--deadline", "60"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no CUDA device here") and "--smoke" in err[0]
    assert not (tmp_path / "out").exists()
