"""Label saving against the pointwise best of all other configurations (``fkal.reporting.curves.saving_vs_best``,
``run_plot.py --saving-vs-best``): hand-made curves whose answers are worked out by hand, and the command line on
a synthetic results folder."""
from __future__ import annotations

import json
import math

import pytest

from fkal.record import RECORD_FIELDS, Record
from fkal.reporting import cli as run_plot
from fkal.reporting.curves import saving_vs_best


def same_runs(curve: dict[int, float], runs: int = 2) -> dict[int, dict[int, float]]:
    """Every run the same curve: the bootstrap has nothing to vary."""
    return {run: dict(curve) for run in range(runs)}


# C against A and B at 100, 200, 300 labels. The best other is A at 100 (60 > 55), B at 200 (75) and 300 (90).
#   100: C's mean curve reaches 60 between 100 (50) and 200 (80): 100 + (60 - 50) / (80 - 50) * 100 = 133.33,
#        saving 1 - 133.33 / 100 = -33.33%
#   200: 75 between 100 (50) and 200 (80): 100 + 25 / 30 * 100 = 183.33, saving 1 - 183.33 / 200 = 8.33%
#   300: C never reaches 90 (its best is 85): not reached
C = {100: 50.0, 200: 80.0, 300: 85.0}
A = {100: 60.0, 200: 65.0, 300: 70.0}
B = {100: 55.0, 200: 75.0, 300: 90.0}
WORST = {"C": same_runs({100: 10.0, 200: 30.0, 300: 40.0}), "A": same_runs({100: 20.0, 200: 25.0, 300: 30.0}),
         "B": same_runs({100: 15.0, 200: 35.0, 300: 45.0})}


def test_best_switches_between_configurations_and_c_interpolates():
    rows = saving_vs_best({"C": same_runs(C), "A": same_runs(A), "B": same_runs(B)}, "C", WORST, resamples=200)
    assert [(r.labeled, r.best_other, r.best_value, r.value) for r in rows] == [
        (100, "A", 60.0, 50.0), (200, "B", 75.0, 80.0), (300, "B", 90.0, 85.0)]
    assert rows[0].labels == pytest.approx(400 / 3) and rows[0].saving_percent == pytest.approx(-100 / 3)
    assert rows[1].labels == pytest.approx(550 / 3) and rows[1].saving_percent == pytest.approx(25 / 3)
    assert rows[2].labels is None and rows[2].saving_percent is None and rows[2].reached_share == 0.0
    assert [(r.worst_class, r.best_worst_class) for r in rows] == [(10.0, 20.0), (30.0, 35.0), (40.0, 45.0)]
    assert all(r.runs == 2 and r.best_runs == 2 and r.paired and not r.above_at_start for r in rows)


def test_identical_runs_give_a_degenerate_interval():
    rows = saving_vs_best({"C": same_runs(C, 3), "A": same_runs(A, 3), "B": same_runs(B, 3)}, "C", resamples=300)
    for row in rows[:2]:
        assert row.saving_low == pytest.approx(row.saving_percent) == pytest.approx(row.saving_high)
        assert row.labels_low == pytest.approx(row.labels) == pytest.approx(row.labels_high)
        assert row.reached_share == 1.0
    assert (rows[2].saving_low, rows[2].saving_high) == (None, None)      # no interval without a headline
    assert math.isnan(rows[0].worst_class)                                # no worst-class values given


def test_interval_contains_the_point_estimate_and_is_reproducible():
    values = {"C": {0: {100: 48.0, 200: 78.0, 300: 86.0}, 1: {100: 52.0, 200: 82.0, 300: 84.0},
                    2: {100: 50.0, 200: 81.0, 300: 85.0}},
              "A": {0: {100: 58.0, 200: 66.0}, 1: {100: 62.0, 200: 64.0}, 2: {100: 60.0, 200: 65.0}},
              "B": {0: {100: 54.0, 200: 76.0}, 1: {100: 56.0, 200: 74.0}, 2: {100: 55.0, 200: 75.0}}}
    rows = saving_vs_best(values, "C", resamples=500, seed=3)
    assert [(r.labeled, r.best_other) for r in rows] == [(100, "A"), (200, "B")]    # 300: no other has it
    for row in rows:
        assert row.saving_low <= row.saving_percent <= row.saving_high
        assert row.labels_low <= row.labels <= row.labels_high
        assert row.saving_low < row.saving_high                              # the runs differ
    assert rows == saving_vs_best(values, "C", resamples=500, seed=3)       # a fixed seed: the same numbers


def test_a_resample_that_never_reaches_the_best_counts_as_minus_infinity():
    """C's mean curve reaches A's 75 at 200 labels only with run 0 (95): drawing run 1 twice (a quarter of the
    resamples) leaves it at 60, never there: labels inf, saving -inf at the interval's low end."""
    values = {"C": {0: {100: 50.0, 200: 95.0}, 1: {100: 50.0, 200: 60.0}},
              "A": {0: {100: 60.0, 200: 75.0}, 1: {100: 60.0, 200: 75.0}}}
    row = saving_vs_best(values, "C", resamples=1000, seed=0)[1]
    assert row.labels == pytest.approx(100 + 25 / 27.5 * 100)               # 77.5 at 200 on the mean curve
    assert row.saving_low == -math.inf and row.labels_high == math.inf
    assert 0.65 < row.reached_share < 0.85


def test_above_the_best_from_its_first_count_is_a_bound():
    rows = saving_vs_best({"C": same_runs({100: 70.0, 200: 80.0}), "A": same_runs({100: 60.0, 200: 65.0})}, "C",
                          resamples=100)
    assert [(r.labels, r.saving_percent, r.above_at_start) for r in rows] == [(100.0, 0.0, True), (100.0, 50.0, True)]


def test_a_count_c_lacks_still_has_a_row_and_ties_go_to_the_first():
    """No other has 100 or 300 labels: no row. At 200, C has no record but its mean curve reaches A's 70 between
    100 (50) and 300 (90) at 200 labels: saving 0%. A and B tie: A, the first."""
    rows = saving_vs_best({"C": same_runs({100: 50.0, 300: 90.0}), "A": same_runs({200: 70.0}),
                           "B": same_runs({200: 70.0})}, "C", resamples=100)
    assert len(rows) == 1
    row = rows[0]
    assert (row.labeled, row.best_other, math.isnan(row.value)) == (200, "A", True)
    assert row.labels == pytest.approx(100 + 20 / 40 * 200) and row.saving_percent == pytest.approx(0.0)


def test_unknown_configuration_is_a_value_error():
    with pytest.raises(ValueError, match="'D' is not among"):
        saving_vs_best({"C": same_runs(C)}, "D")


# ----------------------------------------------------------------------------------------------------------------
# run_plot.py --saving-vs-best on a synthetic results folder
# ----------------------------------------------------------------------------------------------------------------
SETTINGS = {"dataset": "mnist", "protocol": "fk", "train": {"epochs": 50}, "query_size": 100}
# configuration (settings id, epochs) -> (test accuracy, worst-class accuracy) at 100, 200, 300 labels; the second
# settings of random (--epochs 10) is a row of its own, the best at 300, and is never averaged with the first
CURVES = {("random", "aaaaaaaaaaaa", 50): ([60.0, 65.0, 70.0], [20.0, 25.0, 30.0]),
          ("random", "bbbbbbbbbbbb", 10): ([40.0, 45.0, 95.0], [5.0, 6.0, 50.0]),
          ("coreset", "cccccccccccc", 50): ([55.0, 75.0, 90.0], [15.0, 35.0, 45.0]),
          ("pfk-phat-L80", "dddddddddddd", 50): ([50.0, 80.0, 85.0], [10.0, 30.0, 40.0])}


def make_record(config: str, run: int, iteration: int, accuracy: float, worst: float, settings_id: str,
                epochs: int) -> dict:
    """A results line with the field set ``run.py`` writes (``fkal.record.Record``)."""
    return Record(config=config, dataset="mnist", protocol="fk", run=run, seed=run, imbalance_ratio=100.0,
                  unsupervised=1, iteration=iteration, labeled=100 * iteration, pool_size=25000,
                  test_accuracy=accuracy, ensemble_test_accuracy=None, per_class_accuracy=[accuracy] * 10,
                  selected_class_counts=[10] * 10, pseudo_label_accuracy=None, query_seconds=0.5, train_seconds=2.0,
                  epochs=epochs, query_size=100, epoch_selection="final", balanced_accuracy=accuracy - 1.0,
                  worst_class_accuracy=worst, worst_class=9, rare_classes=[5, 6, 7, 8, 9],
                  settings={**SETTINGS, "config": config, "seed": run, "train": {"epochs": epochs}},
                  settings_id=settings_id).to_json()


def write_results(out, runs=(0, 1)):
    for run in runs:
        lines = [make_record(config, run, i + 1, accuracy[i], worst[i], settings_id, epochs)
                 for (config, settings_id, epochs), (accuracy, worst) in CURVES.items() for i in range(3)]
        assert all(set(RECORD_FIELDS) <= set(line) for line in lines)
        path = out / "MNIST" / f"run{run}" / "results.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def test_command_line_prints_the_table_and_writes_it_with_save(tmp_path, capsys):
    out = write_results(tmp_path / "local_data")
    figures = tmp_path / "figures"
    assert run_plot.main(["--out", str(out), "--saving-vs-best", "pfk-phat-L80", "--resamples", "200", "--save",
                          "--figures", str(figures)]) == 0
    printed = capsys.readouterr().out
    assert "## Label saving against the best of the others (test accuracy)" in printed
    assert "### IR=100, rotation-pretrained: C = pfk-phat-L80 (2 runs)" in printed
    table = printed.split("C = pfk-phat-L80 (2 runs)")[1].split("\n## ")[0]
    assert ("| labeled | best other | its value | C's value | labels C needs | saving % [95% CI] | "
            "worst class C / best other |") in table
    assert ("| 100 | random [--epochs 50] | 60.00 | 50.00 | 133 [133, 133] | -33.3% [-33.3, -33.3] | 10.0 / 20.0 |"
            in table)
    assert "| 200 | coreset | 75.00 | 80.00 | 183 [183, 183] | 8.3% [8.3, 8.3] | 30.0 / 35.0 |" in table
    assert "| 300 | random [--epochs 10] | 95.00 | 85.00 | not reached | not reached | 40.0 / 50.0 |" in table
    assert "saving_vs_best.csv" in printed
    lines = (figures / "saving_vs_best.csv").read_text().splitlines()
    assert lines[0].startswith("config,labeled,best_other,best_value,best_runs,value,runs,labels,")
    assert len(lines) == 1 + 3
    assert "Label saving against the best of the others" in (figures / "results.md").read_text()


def test_command_line_with_another_metric(tmp_path, capsys):
    """--metric balanced_accuracy: every value 1 point lower, so the same labels and savings."""
    out = write_results(tmp_path)
    assert run_plot.main(["--out", str(out), "--metric", "balanced_accuracy", "--saving-vs-best", "pfk-phat-L80",
                          "coreset", "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "## Label saving against the best of the others (balanced accuracy)" in printed
    assert "| 200 | coreset | 74.00 | 79.00 | 183 [183, 183] | 8.3% [8.3, 8.3] | 30.0 / 35.0 |" in printed
    coreset = printed.split("C = coreset (2 runs)")[1]
    # coreset against the best of random (both settings) and pfk-phat-L80 at 100 labels: random [--epochs 50], 59;
    # coreset's curve reaches it between 100 (54) and 200 (74): 100 + 5 / 20 * 100 = 125, saving -25%
    assert ("| 100 | random [--epochs 50] | 59.00 | 54.00 | 125 [125, 125] | -25.0% [-25.0, -25.0] | 15.0 / 20.0 |"
            in coreset)


def test_unknown_name_is_one_error_line(tmp_path, capsys):
    out = write_results(tmp_path)
    assert run_plot.main(["--out", str(out), "--saving-vs-best", "pfk-phat-L80", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: --saving-vs-best nope: no such configuration in the records (present: ")
    assert all(name in err for name in ("random", "coreset", "pfk-phat-L80"))


def test_a_configuration_alone_at_its_ratio_gets_a_note(tmp_path, capsys):
    out = write_results(tmp_path)
    assert run_plot.main(["--out", str(out), "--only", "coreset", "--saving-vs-best", "coreset"]) == 0
    captured = capsys.readouterr()
    assert "note: --saving-vs-best coreset: no other configuration at IR=100 (rotation-pretrained)" in captured.err
    assert "best of the others" not in captured.out
