"""benchmarks/query_cost.py runs end to end on tiny data and prints one row per timed query."""
import importlib.util
import re
from pathlib import Path

import pytest

from fkal.errors import UserError

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "query_cost.py"


def load_script():
    spec = importlib.util.spec_from_file_location("query_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# a timed row: name, seconds, x the Fisher-kernel query, x the plain forward
ROW = r"^(\S+(?: \S+)*?)\s{2,}.*?([\d.]+)\s+([\d.]+)x\s+([\d.]+)x$"


def test_query_cost_times_every_named_query(tiny_mnist, capsys):
    bench = load_script()
    args = ["--data-root", str(tiny_mnist), "--imbalance-ratio", "4", "--train-size", "400", "--val-size", "100",
            "--labeled", "30", "--uncertainty", "varR-K2", "--also", "coreset", "lloss", "--no-progress"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(ROW, out, re.MULTILINE)}
    assert set(rows) == {"plain forward (pool + val)", "pfk-phat-L80", "varR-K2", "coreset", "lloss"}, out
    assert all(sec > 0 for sec in rows.values())
    assert "ratio varR-K2 / pfk-phat-L80" in out

    assert bench.main(args[:-6] + ["--skip-uncertainty", "--no-progress"]) == 0     # no uncertainty, no --also
    assert "varR" not in capsys.readouterr().out


def test_query_cost_cpu_clock_and_typiclust_with_the_runs_pretrained_model(tiny_mnist, tmp_path, capsys,
                                                                          monkeypatch):
    """--clock cpu times with the process's CPU clock; --state in a run folder brings that run's init_rotation.pt
    for TypiClust; the last column is each row's seconds over the plain forward's."""
    from fkal.cli import main as run_main
    bench = load_script()
    out = tmp_path / "out"
    assert run_main(["--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
                     "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "1",
                     "--iterations", "1", "--pool-size", "10", "--no-progress", "--eval-batch", "128",
                     "--unsupervised", "1", "--only", "random"]) == 0
    folder = out / "MNIST" / "run0" / "ir4"
    state = folder / "rotation" / "random" / "state_b01.pt"
    assert bench.pretrained_path(None, str(state)) == folder / "init_rotation.pt"
    assert bench.pretrained_path(None, str(folder / "init_rotation.pt")) == folder / "init_rotation.pt"
    assert bench.pretrained_path(str(tmp_path / "mine.pt"), str(state)) == tmp_path / "mine.pt"
    assert bench.pretrained_path(None, None) is None
    assert bench.pretrained_path(None, str(tmp_path / "elsewhere" / "state_b01.pt")) is None

    ticks = {"wall": iter([1.0, 4.0]), "cpu": iter([10.0, 12.5])}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks["wall"]))
    monkeypatch.setattr(bench.time, "process_time", lambda: next(ticks["cpu"]))
    assert bench.timed(lambda: None, bench.torch.device("cpu"), 1, "cpu") == 2.5
    assert bench.timed(lambda: None, bench.torch.device("cpu"), 1, "wall") == 3.0
    monkeypatch.undo()

    args = ["--data-root", str(tiny_mnist), "--imbalance-ratio", "4", "--train-size", "400", "--val-size", "100",
            "--labeled", "30", "--skip-uncertainty", "--state", str(state), "--clock", "cpu", "--also", "typiclust",
            "--no-progress"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "cpu seconds" in printed
    rows = {m.group(1): [float(v) for v in m.groups()[1:]] for m in re.finditer(ROW, printed, re.MULTILINE)}
    assert set(rows) == {"plain forward (pool + val)", "pfk-phat-L80", "typiclust"}, printed
    forward = rows["plain forward (pool + val)"][0]
    for seconds, _, x_forward in rows.values():            # each printed to 2 decimals
        low, high = (seconds - 0.005) / (forward + 0.005), (seconds + 0.005) / max(forward - 0.005, 1e-9)
        assert low - 0.005 <= x_forward <= high + 0.005, printed
    with pytest.raises(ValueError, match="pretrained"):       # no run folder: TypiClust says what it needs
        bench.main(args[:-8] + ["--also", "typiclust", "--no-progress"])


def test_query_cost_names_a_labeled_count_too_large(tiny_mnist):
    with pytest.raises(UserError, match="--labeled"):
        load_script().main(["--data-root", str(tiny_mnist), "--imbalance-ratio", "4", "--train-size", "400",
                            "--val-size", "100", "--labeled", "5000", "--no-progress"])


SUCCESSORS = Path(__file__).resolve().parents[1] / "benchmarks" / "successors_scale.py"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS counters")
@pytest.mark.parametrize("method", ["galaxy", "direct", "base", "badge"])
def test_successors_scale_measures_each_method_on_a_tiny_pool(method):
    """benchmarks/successors_scale.py: one method's child run (in-process here) checks its picks and reports
    times, peak memory and the softmax size; --max-picks cuts GALAXY and BADGE only, and the row says so."""
    spec = importlib.util.spec_from_file_location("successors_scale", SUCCESSORS)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import torch
    threads = torch.get_num_threads()
    try:
        args = bench.build_parser().parse_args(["--child", method, "--size", "tiny", "--max-picks", "20",
                                                "--gen-threads", "1"])
        r = bench.child(args)
    finally:
        torch.set_num_threads(threads)
    assert (r["n"], r["c"], r["p"], r["softmax"]) == (3000, 6, 60, 3000 * 6 * 4)
    assert r["picks"] == (20 if method in ("galaxy", "badge") else 60)
    assert r["seconds"] > 0 and r["cpu"] >= 0 and r["peak"] >= r["resident"] > 0
    line = bench.row(r)
    assert line.startswith(f"| tiny | {method} | 3,000 | 6 | 60 |")
    assert ("not measured" in line) == (method in ("galaxy", "badge"))


PSEUDO = Path(__file__).resolve().parents[1] / "benchmarks" / "pseudo_label_quality.py"


def test_pseudo_label_quality_replays_the_recorded_queries(tiny_mnist, tmp_path, capsys):
    """benchmarks/pseudo_label_quality.py: replaying pfk-phat-L80's own queries gives exactly the rare-class
    precision, recall and count its records hold, and the rare picks they counted; other estimators are queried on
    the same models; a run without the reference is one clear error."""
    from fkal.cli import main as run_main
    from fkal.io import read_jsonl
    out = tmp_path / "out"
    assert run_main(["--data-root", str(tiny_mnist), "--out", str(out), "--run-stop", "1", "--imbalance-ratios", "4",
                     "--train-size", "400", "--val-size", "100", "--unsup-epochs", "1", "--epochs", "2",
                     "--iterations", "2", "--pool-size", "10", "--no-progress", "--eval-batch", "128",
                     "--unsupervised", "1", "--only", "pfk-phat-L80"]) == 0
    records, _ = read_jsonl(out / "MNIST" / "run0" / "results.jsonl")
    spec = importlib.util.spec_from_file_location("pseudo_label_quality", PSEUDO)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--data-root", str(tiny_mnist), "--out", str(out), "--runs", "0", "--imbalance-ratio", "4",
            "--iterations", "2", "--estimators", "phat", "yhat", "--eval-batch", "128"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    line = re.compile(r"^run0 b=(\d) (\S+): rare precision ([\d.]+|nan)%, recall ([\d.]+|nan)%, (\d+) called rare "
                      r"of which (\d+) are, (\d+) of 10 picks rare$", re.MULTILINE)
    found = {(int(m[1]), m[2]): m.groups()[2:] for m in line.finditer(printed)}
    assert set(found) == {(b, c) for b in (1, 2) for c in ("pfk-phat-L80", "pfk-yhat-L80")}, printed
    for r in records:
        precision, recall, said, _, picked = found[(r["iteration"], "pfk-phat-L80")]
        assert float(precision) == pytest.approx(r["pseudo_label_rare_precision"], abs=0.05)
        assert float(recall) == pytest.approx(r["pseudo_label_rare_recall"], abs=0.05)
        assert int(said) == r["pseudo_label_rare_count"]
        assert int(picked) == sum(r["selected_class_counts"][c] for c in r["rare_classes"])
    assert "| yhat | 2 |" in printed
    with pytest.raises(UserError, match="--reference"):
        bench.main(args + ["--reference", "pfk-yhat-L20"])
