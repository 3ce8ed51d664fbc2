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


def test_query_cost_times_every_named_query(tiny_mnist, capsys):
    bench = load_script()
    args = ["--data-root", str(tiny_mnist), "--imbalance-ratio", "4", "--train-size", "400", "--val-size", "100",
            "--labeled", "30", "--uncertainty", "varR-K2", "--also", "coreset", "lloss", "--no-progress"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+(?: \S+)*?)\s{2,}.*?([\d.]+)\s+[\d.]+x$", out,
                                                               re.MULTILINE)}
    assert set(rows) == {"plain forward (pool + val)", "pfk-phat-L80", "varR-K2", "coreset", "lloss"}, out
    assert all(sec > 0 for sec in rows.values())
    assert "ratio varR-K2 / pfk-phat-L80" in out

    assert bench.main(args[:-6] + ["--skip-uncertainty", "--no-progress"]) == 0     # no uncertainty, no --also
    assert "varR" not in capsys.readouterr().out


def test_query_cost_names_a_labeled_count_too_large(tiny_mnist):
    with pytest.raises(UserError, match="--labeled"):
        load_script().main(["--data-root", str(tiny_mnist), "--imbalance-ratio", "4", "--train-size", "400",
                            "--val-size", "100", "--labeled", "5000", "--no-progress"])
