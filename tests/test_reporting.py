"""fkal.reporting: reading results, grouping, tables, label saving, selection statistics (no matplotlib)."""
import json
import math
import statistics

import numpy as np
import pytest

from fkal import reporting as report
from fkal.reporting import CurvePoint, GroupKey


def make_record(config="random", run=0, iteration=1, accuracy=50.0, imbalance_ratio=100, unsupervised=1,
                counts=None, per_iteration=125, pool=25000, **extra):
    """One valid results line as a dict (the input contract of run.py)."""
    record = {
        "config": config, "dataset": "mnist", "run": run, "seed": run, "imbalance_ratio": imbalance_ratio,
        "unsupervised": unsupervised, "iteration": iteration, "labeled": per_iteration * iteration,
        "pool_size": pool, "test_accuracy": accuracy, "ensemble_test_accuracy": None,
        "per_class_accuracy": [accuracy] * 10,
        "selected_class_counts": counts if counts is not None else [per_iteration // 10] * 10,
        "pseudo_label_accuracy": None, "query_seconds": 0.5, "train_seconds": 10.0,
    }
    record.update(extra)
    return record


def write_lines(path, lines):
    """Write records (dicts) or raw strings, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# ------------------------------------------------------------------------------------------------ reading

def test_dataset_dirs_and_result_paths_in_run_order(tmp_path):
    assert report.DATASET_DIRS == {"mnist": "MNIST", "svhn": "SVHN", "imagenet": "ImageNet", "cifar10": "CIFAR10",
                                   "cifar100": "CIFAR100", "caltech101": "Caltech101",
                                   "caltech101-bg": "Caltech101-bg"}
    for run in (10, 2, 0):
        write_lines(tmp_path / "SVHN" / f"run{run}" / "results.jsonl", [make_record(run=run)])
    paths = report.result_paths(tmp_path, "svhn")
    assert [p.parent.name for p in paths] == ["run0", "run2", "run10"]
    assert report.result_paths(tmp_path, "mnist") == []


def test_broken_lines_are_skipped_with_file_and_line(tmp_path):
    good = make_record(iteration=1)
    missing = make_record(iteration=2)
    del missing["test_accuracy"]
    wrong_type = make_record(iteration=3, labeled="many")
    path = write_lines(tmp_path / "results.jsonl",
                       [good, "{not json", "", missing, "[1, 2]", wrong_type, make_record(iteration=4)])
    records, warnings = report.read_results([path])
    assert [r["iteration"] for r in records] == [1, 4]
    assert len(warnings) == 4
    assert warnings[0].startswith(f"{path}:2: ") and "invalid JSON" in warnings[0]
    assert warnings[1].startswith(f"{path}:4: ") and "missing test_accuracy" in warnings[1]
    assert warnings[2].startswith(f"{path}:5: ") and "not a JSON object" in warnings[2]
    assert warnings[3].startswith(f"{path}:6: ") and "labeled" in warnings[3]


def test_full_train_line_needs_only_its_fields(tmp_path):
    full = {"config": "full-train", "dataset": "mnist", "run": 0, "seed": 0, "imbalance_ratio": 100,
            "unsupervised": 1, "iteration": 0, "labeled": 25000, "pool_size": 25000, "test_accuracy": 92.5,
            "selected_class_counts": None}
    records, warnings = report.read_results([write_lines(tmp_path / "results.jsonl", [full])])
    assert warnings == [] and records == [full]


def test_repeated_iteration_keeps_the_later_line(tmp_path):
    path = write_lines(tmp_path / "results.jsonl", [make_record(accuracy=40.0), make_record(accuracy=45.0)])
    records, warnings = report.read_results([path])
    assert [r["test_accuracy"] for r in records] == [45.0]
    assert len(warnings) == 1 and f"{path}:2" in warnings[0] and f"{path}:1" in warnings[0]


# ------------------------------------------------------------------------------------------------ grouping

def test_filter_and_group():
    records = [make_record("pcc-L20", run=1, iteration=2), make_record("pcc-L20", run=1, iteration=1),
               make_record("random", unsupervised=0), make_record("random", imbalance_ratio=1),
               make_record("full-train", iteration=0)]
    groups = report.group_records(records)
    assert list(groups) == [GroupKey("random", 1.0, 1), GroupKey("random", 100.0, 0), GroupKey("pcc-L20", 100.0, 1),
                            GroupKey("full-train", 100.0, 1)]
    assert [r["iteration"] for r in groups[GroupKey("pcc-L20", 100.0, 1)][1]] == [1, 2]
    kept = report.filter_records(records, only=["pcc-L20"], unsupervised=1, imbalance_ratios=[100])
    assert sorted(r["config"] for r in kept) == ["full-train", "pcc-L20", "pcc-L20"]
    assert report.filter_records(records, unsupervised=0) == [records[2]]


def test_completeness_notes_name_missing_runs_and_iterations():
    records = [make_record("random", run=r, iteration=i) for r in (0, 1) for i in (1, 2, 3)]
    records += [make_record("pcc-L20", run=0, iteration=i) for i in (1, 3)]
    notes = report.completeness_notes(report.group_records(records))
    assert notes == ["partial results: pcc-L20 (IR=100, rotation-pretrained): 1 of 2 runs; "
                     "run 0 lacks iteration 2 of 1-3"]


# ------------------------------------------------------------------------------------------------ tables

def test_summary_table_is_mean_and_sample_std_over_runs():
    accuracies = {("random", 0): [50.0, 60.0, 70.0], ("random", 1): [54.0, 61.0, 75.0],
                  ("pfk-phat-L80", 0): [70.0, 80.0, 90.0], ("pfk-phat-L80", 1): [72.0, 85.0, 88.0]}
    records = [make_record(config, run=run, iteration=i + 1, accuracy=a)
               for (config, run), values in accuracies.items() for i, a in enumerate(values)]
    rows = report.summary_table(report.group_records(records))
    assert len(rows) == 6
    for row in rows:
        values = [accuracies[(row.config, run)][row.labeled // 125 - 1] for run in (0, 1)]
        assert row.mean == pytest.approx(statistics.mean(values))
        assert row.std == pytest.approx(statistics.stdev(values))  # sample std, ddof=1
        assert row.runs == 2
        assert row.labeled_percent == pytest.approx(100 * row.labeled / 25000)


def test_single_run_has_no_std():
    rows = report.summary_table(report.group_records([make_record(accuracy=42.0)]))
    assert rows[0].mean == 42.0 and math.isnan(rows[0].std) and rows[0].runs == 1


def test_ensemble_metric_falls_back_to_test_accuracy():
    records = [make_record("varR-E4-K32", accuracy=60.0, ensemble_test_accuracy=63.0), make_record(accuracy=50.0)]
    rows = report.summary_table(report.group_records(records), metric="ensemble_test_accuracy")
    assert {row.config: row.mean for row in rows} == {"random": 50.0, "varR-E4-K32": 63.0}


def curve(points):
    return [CurvePoint(labeled, mean, math.nan, 1) for labeled, mean in points]


def runs_of(config, per_run, **extra):
    """Records of one configuration: ``per_run[r]`` is run r's accuracy at 100, 200, ... labels."""
    return [make_record(config, run=r, iteration=i + 1, accuracy=a, per_iteration=100, **extra)
            for r, accuracies in enumerate(per_run) for i, a in enumerate(accuracies)]


def savings_of(records, **kw):
    return report.label_saving(report.split_full_train(report.group_records(records))[0], **kw)


def test_label_saving_hand_computed():
    # best baseline: varR (final 70 > random's 65); it first reaches 70 at 300 labels.
    # pfk crosses 70 between 100 (50%) and 200 (80%): 100 + (70 - 50) / (80 - 50) * 100 = 166.67 labels,
    # 1 - 166.67 / 300 = 44.44% fewer labels. pcc never reaches 70.
    records = (runs_of("random", [[45, 55, 65]]) + runs_of("varR-E4-K32", [[50, 60, 70]])
               + runs_of("pfk-phat-L80", [[50, 80, 90]]) + runs_of("pcc-L20", [[40, 60, 69]]))
    savings = {(s.baseline, s.config): s for s in savings_of(records)}
    assert {s.baseline for s in savings.values() if s.best_baseline} == {"varR-E4-K32"}
    pfk = savings[("varR-E4-K32", "pfk-phat-L80")]
    assert pfk.target == "final" and pfk.target_value == 70 and pfk.baseline_labels == 300
    assert pfk.labels == pytest.approx(500 / 3)
    assert pfk.saving_percent == pytest.approx(100 * (1 - (500 / 3) / 300))
    assert pfk.saving_percent == pytest.approx(44.444, abs=1e-3)
    assert savings[("varR-E4-K32", "varR-E4-K32")].saving_percent == 0.0
    pcc = savings[("varR-E4-K32", "pcc-L20")]
    assert pcc.labels is None and pcc.saving_percent is None and pcc.best_mean == 69
    # against the other baseline, random (final 65): pfk crosses 65 at 100 + 15 / 30 * 100 = 150 labels
    assert savings[("random", "pfk-phat-L80")].labels == pytest.approx(150)
    assert savings[("random", "pfk-phat-L80")].saving_percent == pytest.approx(50.0)
    # one run: every resample is that run, the interval is the point
    assert (pfk.labels_low, pfk.labels_high) == pytest.approx((500 / 3, 500 / 3))


def test_label_saving_with_two_runs_by_hand():
    """Two runs each; run 0 is slow and run 1 fast for both, so pairing the runs narrows the saving's interval.

    Target 65 (labeled counts 100, 200, 300):
      varR  run 0 [50, 60, 70] -> 250, run 1 [60, 70, 80] -> 150, mean [55, 65, 75] -> 200
      pfk   run 0 [50, 70, 90] -> 175, run 1 [60, 85, 90] -> 120, mean [55, 77.5, 90] -> 100 + 10/22.5*100
    A resample of two runs is (0, 0), (1, 1) or a mix (the mean curve), the same draws for both groups:
      savings 1 - 175/250 = 30%, 1 - 120/150 = 20%, 1 - 144.44/200 = 27.78% -> interval [20, 30]
      (unpaired it would reach 1 - 120/250 = 52% and 1 - 175/150 = -16.7%).
    Target final, recomputed in every resample from the resampled varR: (0, 0) 70, (1, 1) 80, mean 75, which
    varR reaches at 300 each time; pfk reaches them at 200, 100 + 20/25*100 = 180 and 100 + 20/22.5*100 = 188.9:
      savings 33.3%, 40%, 37.04% -> interval [33.3, 40].
    """
    records = runs_of("varR-E4-K32", [[50, 60, 70], [60, 70, 80]]) + runs_of("pfk-phat-L80", [[50, 70, 90],
                                                                                           [60, 85, 90]])
    rows = {(s.target, s.config): s for s in savings_of(records, targets=["65", "final"], resamples=2000, seed=3)}
    at65, final = rows[("65", "pfk-phat-L80")], rows[("final", "pfk-phat-L80")]
    pfk_mean = 100 + 10 / 22.5 * 100
    assert at65.labels == pytest.approx(pfk_mean) and at65.baseline_labels == pytest.approx(200)
    assert (at65.labels_low, at65.labels_high) == pytest.approx((120, 175))
    assert (at65.baseline_low, at65.baseline_high) == pytest.approx((150, 250))
    assert at65.saving_percent == pytest.approx(100 * (1 - pfk_mean / 200))
    assert (at65.saving_low, at65.saving_high) == pytest.approx((20, 30))
    assert at65.paired and at65.runs == at65.baseline_runs == 2 and at65.reached_share == 1.0
    final_mean = 100 + 20 / 22.5 * 100
    assert final.target_value == pytest.approx(75) and final.baseline_labels == pytest.approx(300)
    assert final.labels == pytest.approx(final_mean)
    assert final.saving_percent == pytest.approx(100 * (1 - final_mean / 300))
    assert (final.saving_low, final.saving_high) == pytest.approx((100 / 3, 40))
    assert (final.labels_low, final.labels_high) == pytest.approx((180, 200))
    assert (final.baseline_low, final.baseline_high) == pytest.approx((300, 300))
    # the same numbers with the runs of pfk relabelled 5 and 6: no longer the baseline's runs, resampled apart
    unpaired = [dict(r, run=r["run"] + 5) if r["config"] == "pfk-phat-L80" else r for r in records]
    apart = {(s.target, s.config): s for s in savings_of(unpaired, targets=["65"], resamples=2000, seed=3)}
    row = apart[("65", "pfk-phat-L80")]
    assert not row.paired and row.saving_percent == pytest.approx(at65.saving_percent)
    assert (row.saving_low, row.saving_high) == pytest.approx((100 * (1 - 175 / 150), 52))


def test_label_saving_not_reached_in_some_resamples_is_infinite():
    # pfk: run 0 [50, 60, 70] never reaches 75, run 1 [60, 80, 90] does at 175; the mean [55, 70, 80] at 250.
    records = runs_of("random", [[40, 50, 76], [40, 50, 76]]) + runs_of("pfk-phat-L80", [[50, 60, 70],
                                                                                     [60, 80, 90]])
    row = next(s for s in savings_of(records, targets=["75"]) if s.config == "pfk-phat-L80")
    assert row.labels == pytest.approx(250) and row.labels_low == pytest.approx(175) and row.labels_high == math.inf
    assert 0.6 < row.reached_share < 0.9                    # (0, 0) fails: about a quarter of the resamples
    assert row.saving_low == -math.inf
    text = report.format_label_saving_markdown([row], 2000, 0)
    assert "| 250 [175, ∞] |" in text and "[−∞, " in text


def test_labels_to_reach_rows_agrees_with_labels_to_reach():
    grid = np.array([100, 200, 300, 400])
    rows = np.array([[50, 60, 70, 80], [80, 90, 95, 99], [10, 20, 30, 40], [50, np.nan, 70, 80]], dtype=float)
    targets = np.array([65.0, 70.0, 50.0, 65.0])
    got = report.labels_to_reach_rows(grid, rows, targets)
    for i in range(3):
        expected = report.labels_to_reach(curve(zip(grid, rows[i])), targets[i])
        assert got[i] == (math.inf if expected is None else pytest.approx(expected))
    assert got[3] == pytest.approx(100 + 15 / 20 * 200)    # the missing count is skipped: 50 at 100 to 70 at 300


def test_label_saving_is_per_ratio_and_initial_model():
    records = (runs_of("random", [[50, 60]]) + runs_of("random", [[40, 50]], unsupervised=0)
               + runs_of("pfk-phat-L80", [[50, 55]], unsupervised=0)
               + runs_of("pfk-phat-L80", [[90]], imbalance_ratio=1))            # no baseline at IR=1: left out
    savings = savings_of(records)
    assert {(s.config, s.unsupervised, s.target_value) for s in savings} == {
        ("random", 1, 60), ("random", 0, 50), ("pfk-phat-L80", 0, 50)}
    pfk = next(s for s in savings if s.config == "pfk-phat-L80")
    assert pfk.labels == 100 and pfk.saving_percent == pytest.approx(50.0) and pfk.above_at_start


def test_label_saving_above_target_from_the_start_is_a_bound():
    records = runs_of("random", [[50, 60]]) + runs_of("pfk-phat-L80", [[70, 80]])
    savings = {s.config: s for s in savings_of(records)}
    assert savings["pfk-phat-L80"].labels == 100 and savings["pfk-phat-L80"].above_at_start
    assert not savings["random"].above_at_start
    text = report.format_label_saving_markdown(list(savings.values()), 2000, 0)
    assert "| ≤ 100 [100, 100] | ≥ 50.0% [50.0, 50.0] |" in text
    assert "### IR=100, rotation-pretrained: against random (best baseline)" in text
    assert "bootstrap over runs (2000 resamples, seed 0)" in text


def test_label_saving_against_chosen_configurations_and_in_percent_of_the_pool():
    settings = {"train_size": 50000}                            # |D| before the imbalance; the pool is 25000
    records = (runs_of("random", [[50, 60, 70]], settings=settings)
               + runs_of("pfk-phat-L80", [[50, 80, 90]], settings=settings)
               + runs_of("pfk-sum-phat-L80", [[60, 70, 80]], settings=settings))
    rows = savings_of(records, baselines=["pfk-phat-L80"], targets=["75"])
    assert {s.baseline for s in rows} == {"pfk-phat-L80"}
    row = next(s for s in rows if s.config == "pfk-sum-phat-L80")
    assert row.labels == pytest.approx(250) and row.baseline_labels == pytest.approx(100 + 25 / 30 * 100)
    assert row.dataset_size == 50000
    text = report.format_label_saving_markdown(rows, 2000, 0, x="percent")
    assert "| 0.50% [0.50%, 0.50%] |" in text                   # 250 of |D| = 50000
    assert "Labels are given in percent of |D|, the pool before the imbalance" in text


def test_dataset_size_is_the_pool_before_the_imbalance():
    with_settings = {0: [make_record(settings={"train_size": 50000})]}
    assert report.dataset_size(with_settings) == 50000
    assert report.dataset_size({0: [make_record()]}) == 25000     # no settings: the pool after the imbalance


def test_labels_to_reach():
    assert report.labels_to_reach(curve([(100, 80), (200, 90)]), 70) == 100  # already above at the start
    assert report.labels_to_reach(curve([(100, 60), (200, 80)]), 75) == pytest.approx(175)
    assert report.labels_to_reach(curve([(100, 60), (200, 80)]), 81) is None


@pytest.mark.parametrize("text, parsed", [("85", "85"), ("90.0", "90"), ("final", "final"), ("99.5", "99.5")])
def test_parse_target(text, parsed):
    assert report.parse_target(text) == parsed


@pytest.mark.parametrize("text", ["0", "101", "best", "-3"])
def test_parse_target_rejects(text):
    with pytest.raises(ValueError):
        report.parse_target(text)


# ------------------------------------------------------------------------------------------------ filters

def test_epoch_selection_filter_reads_absent_as_final():
    records = [make_record(run=0, epoch_selection="val"), make_record(run=1, epoch_selection="final"),
               make_record(run=2), make_record("full-train", iteration=0)]
    assert [r["run"] for r in report.filter_records(records, epoch_selection="val")] == [0, 0]
    assert [r.get("epoch_selection") for r in report.filter_records(records, epoch_selection="final")] == [
        "final", None, None]
    assert len(report.filter_records(records)) == 4


def test_records_without_the_metric_are_left_out_with_a_note():
    records = [make_record(run=0, balanced_accuracy=40.0), make_record(run=1),
               make_record("pcc-L20", run=0, balanced_accuracy=None), make_record("pcc-L20", run=1)]
    kept, notes = report.records_with(records, "balanced_accuracy")
    assert kept == records[:1]
    assert notes == ["--metric balanced_accuracy: 2 records of pcc-L20 lack it and are left out",
                     "--metric balanced_accuracy: 1 record of random lacks it and is left out"]
    assert report.records_with(records, "ensemble_test_accuracy") == (records, [])    # falls back to test accuracy
    assert math.isnan(report.metric_value(records[1], "balanced_accuracy"))


def test_difference_of_two_metrics_is_per_record_then_over_runs():
    records = [make_record(run=0, accuracy=80.0, final_test_accuracy=78.0),
               make_record(run=1, accuracy=82.0, final_test_accuracy=81.0),
               make_record(run=0, iteration=2, accuracy=90.0, final_test_accuracy=90.0)]
    rows = report.difference_table(report.group_records(records), "test_accuracy", "final_test_accuracy")
    assert [(r.labeled, r.mean, r.runs) for r in rows] == [(125, 1.5, 2), (250, 0.0, 1)]
    assert rows[0].std == pytest.approx(statistics.stdev([2.0, 1.0]))


def test_cost_table_and_csv():
    records = [make_record(iteration=i, query_seconds=q, train_seconds=t) for i, q, t in ((1, 0.0, 5.0),
                                                                                         (2, 1.0, 10.0),
                                                                                         (3, 3.0, 20.0))]
    rows = report.cost_table(report.group_records(records + [make_record("full-train", iteration=0)]))
    assert len(rows) == 1
    assert (rows[0].query_mean, rows[0].train_mean, rows[0].iterations) == (2.0, 15.0, 2)   # iteration 1 left out
    assert rows[0].query_std == pytest.approx(statistics.stdev([1.0, 3.0]))
    assert report.cost_table(report.group_records(records), from_iteration=1)[0].iterations == 3
    text = report.to_csv(report.summary_table(report.group_records([make_record()])))
    assert text.splitlines()[0] == "config,imbalance_ratio,unsupervised,labeled,labeled_percent,mean,std,runs,variant"
    assert text.splitlines()[1] == "random,100.0,1,125,0.5,50.0,,1,"


def test_markdown_names_the_std_and_marks_random_init():
    records = [make_record(run=r, accuracy=50.0 + r, unsupervised=u) for r in (0, 1) for u in (0, 1)]
    text = report.format_accuracy_markdown(report.summary_table(report.group_records(records)))
    assert "sample std (ddof=1)" in text
    assert "| random | 50.50 ± 0.71 (2) |" in text
    assert "| random  (θ_rnd) | 50.50 ± 0.71 (2) |" in text


# ------------------------------------------------------------------------------------------------ selections

def test_selection_entropy():
    assert report.selection_entropy([5] * 10) == pytest.approx(math.log(10))
    assert report.selection_entropy([0, 7, 0]) == 0.0
    assert report.selection_entropy([3, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert report.selection_entropy([1, 1, 1, 1], base=2) == pytest.approx(2.0)
    assert math.isnan(report.selection_entropy([0, 0]))


def test_rare_share_is_cumulative_and_histogram_is_mean_over_runs():
    runs = {0: [make_record(iteration=1, counts=[8, 2]), make_record(iteration=2, counts=[4, 6])],
            1: [make_record(run=1, iteration=1, counts=[10, 0])]}
    share = report.rare_share_curve(runs, rare_classes=[1])
    assert share[0].labeled == 125 and share[0].mean == pytest.approx(10.0)  # runs: 20% and 0%
    assert share[0].std == pytest.approx(statistics.stdev([20.0, 0.0]))
    assert share[1].mean == pytest.approx(40.0) and share[1].runs == 1  # (2 + 6) / 20
    labeled, counts = report.selection_histogram(runs)
    assert labeled == [125, 250]
    assert counts.tolist() == [[9.0, 1.0], [4.0, 6.0]]


def test_comparison_table_by_hand():
    def rec(config, run, iteration, acc, counts, query, **extra):
        return make_record(config, run=run, iteration=iteration, accuracy=acc, counts=counts, query_seconds=query,
                           balanced_accuracy=acc - 1.0, worst_class_accuracy=acc - 40.0 + run,
                           rare_class_accuracy=acc - 20.0, **extra)
    named = {"rare_classes": [8, 9]}
    records = [rec("pfk-phat-L80", 0, 1, 70.0, [12, 12, 12, 12, 12, 12, 12, 12, 12, 17], 9.0, **named),
               rec("pfk-phat-L80", 0, 2, 80.0, [10] * 8 + [20, 25], 3.0, **named),
               rec("pfk-phat-L80", 1, 1, 72.0, [13] * 8 + [0, 21], 1.0, **named),
               rec("pfk-phat-L80", 1, 2, 84.0, [10] * 8 + [5, 40], 5.0, **named),
               rec("random", 0, 1, 50.0, [15] * 5 + [10] * 5, 0.5),         # no rare classes named: the fallback
               rec("full-train", 0, 0, 92.0, [0] * 10, 0.0)]
    rows = report.comparison_table(report.group_records(records), at=[125, 250, 375], rare_classes=[5, 6, 7, 8, 9])
    assert [(r.config, r.labeled, r.runs) for r in rows] == [("random", 125, 1), ("pfk-phat-L80", 125, 2),
                                                            ("pfk-phat-L80", 250, 2)]     # none reached 375
    pfk = rows[2]
    assert (pfk.accuracy, pfk.balanced, pfk.rare_classes) == (82.0, 81.0, 62.0)
    assert pfk.accuracy_std == pytest.approx(statistics.stdev([80.0, 84.0]))
    assert pfk.worst_class == pytest.approx(statistics.mean([40.0, 45.0]))             # acc - 40 + run
    # cumulative rare share (classes 8 and 9 only, as the records name them): run 0 (12 + 17 + 20 + 25) / 250,
    # run 1 (0 + 21 + 5 + 40) / 250
    assert pfk.rare_share == pytest.approx(statistics.mean([100 * 74 / 250, 100 * 66 / 250]))
    assert pfk.rare_share_std == pytest.approx(statistics.stdev([100 * 74 / 250, 100 * 66 / 250]))
    assert rows[1].rare_share == pytest.approx(statistics.mean([100 * 29 / 125, 100 * 21 / 125]))
    assert pfk.query_seconds == 4.0                         # median of iterations 2 only (3 and 5): not 9 and 1
    assert rows[0].rare_share == pytest.approx(100 * 50 / 125) and math.isnan(rows[0].rare_share_std)
    assert math.isnan(rows[0].query_seconds)                # random has no iteration 2
    text = report.format_comparison_markdown(rows)
    assert "### IR=100, 250 labeled" in text
    assert "| pfk-phat-L80  (R_zg, S=p^(y,z), L=80) | 2 | 82.0 ± 2.8 | 81.0 ± 2.8 | 42.5 ± 3.5 | 62.0 ± 2.8 | 28.0 ± 2.3 | 4 |" in text
    assert "| random | 1 | 50.0 | 49.0 | 10.0 | 30.0 | 40.0 | – |" in text
    unnamed = report.comparison_table(report.group_records(records), at=[125], rare_classes=None)
    assert math.isnan(unnamed[0].rare_share) and unnamed[1].rare_share == rows[1].rare_share   # named ones kept


# ------------------------------------------------------------------------------------------------ names

@pytest.mark.parametrize("name, parsed", [
    ("pfk-phat-L80", ("pfk", "phat", 80, None, None)),
    ("pfk-sum-yhat-L20", ("pfk-sum", "yhat", 20, None, None)),
    ("pfk-phat-g-L80", ("pfk", "phat-g", 80, None, None)),
    ("pfk-mi-diag-L20", ("pfk", "mi-diag", 20, None, None)),
    ("pfk-y-L20", ("pfk", "y", 20, None, None)),
    ("varR-E4-K32", ("varR", None, None, 4, 32)),
    ("random", ("random", None, None, None, None)),
])
def test_parse_config(name, parsed):
    c = report.parse_config(name)
    assert (c.acquisition, c.pseudo_label, c.L, c.E, c.K) == parsed


@pytest.mark.parametrize("name", ["foo", "pfk-bad", "pcc-L", "varR-K32-E4"])
def test_parse_config_rejects(name):
    with pytest.raises(ValueError):
        report.parse_config(name)


def test_legend_names():
    assert report.legend_name("pfk-phat-L80", 1) == "pfk-phat-L80  (R_zg, S=p^(y,z), L=80)"
    assert report.legend_name("pcc-L20", 1) == "pcc-L20  (R_z, L=20)"
    assert report.legend_name("pfk-yhat-L20", 1) == "pfk-yhat-L20  (R_zg, S=y^, L=20)"
    assert report.legend_name("pfk-y-L20", 1) == "pfk-y-L20  (R_zg, S=y, L=20)"
    assert report.legend_name("varR-E4-K32", 1) == "varR-E4-K32  (varR, E=4, K=32)"
    assert report.legend_name("random", 1) == "random"
    assert report.legend_name("random", 0) == "random  (θ_rnd)"
    assert report.legend_name("my-new-idea", 1) == "my-new-idea"  # unknown names pass through
    assert report.is_baseline("varR-E4-K32") and report.is_baseline("coreset")
    assert not report.is_baseline("pfk-sum-phat-L80") and not report.is_baseline("full-train")


def test_records_of_other_settings_are_never_averaged_into_one_row():
    """Two settings of one configuration (say --epochs 10 and 50) give two rows, each named by what differs."""
    from fkal.settings import settings_id

    def settings(epochs, seed):
        return {"seed": seed, "train": {"epochs": epochs, "lr": 0.05}, "query_size": 125}
    records = [make_record(run=r, accuracy=acc, settings=settings(epochs, r), settings_id=settings_id(settings(epochs, r)))
               for epochs, acc in ((10, 40.0), (50, 80.0)) for r in (0, 1)]
    groups = report.group_records(records)
    assert len(groups) == 2 and {len(runs) for runs in groups.values()} == {2}      # the seed does not split rows
    rows = report.summary_table(groups)
    assert sorted((row.variant, row.mean) for row in rows) == [("--epochs 10", 40.0), ("--epochs 50", 80.0)]
    text = report.format_accuracy_markdown(rows)
    assert "random [--epochs 10]" in text and "random [--epochs 50]" in text
    # a record without settings is a group of its own, named so
    legacy = report.group_records(records + [make_record(run=5, accuracy=10.0)])
    assert "settings not recorded" in {key.variant for key in legacy}
    # the same run and iteration under two settings are two records, not a repeat
    assert report.record_key(records[0]) != report.record_key(records[2])


def test_a_setting_added_later_at_its_earlier_value_still_pairs_with_random():
    """Random sampling recorded before world_size and standardize existed pairs, run by run, with a configuration
    that records them at their earlier values (1 and unit) and its own options; not with one run on two
    processes."""
    from fkal.settings import settings_id

    def settings(seed, **more):
        return {"seed": seed, "train": {"epochs": 50}, "query_size": 125, **more}
    old = [make_record(run=r, accuracy=50.0, settings=settings(r), settings_id=settings_id(settings(r)))
           for r in (0, 1)]
    new = dict(world_size=1, standardize="unit", options={"typiclust_max_clusters": 500})
    two = dict(world_size=2, standardize="unit")
    later = [make_record("typiclust", run=r, accuracy=55.0 + r, settings=settings(r, **extra),
                         settings_id=settings_id(settings(r, **extra)))
             for r in (0, 1) for extra in (new, two)]
    groups = report.group_records(old + later)
    random_key, = [key for key in groups if key.config == "random"]
    one, = [key for key in groups if key.config == "typiclust" and key.variant.endswith("--nproc_per_node 1")]
    two, = [key for key in groups if key.config == "typiclust" and key.variant.endswith("--nproc_per_node 2")]
    assert report.baseline_key(groups, one) == random_key
    assert report.baseline_key(groups, two) is None
    rows, notes = report.improvement_table(groups)
    assert [(r.config, r.mean) for r in rows] == [("typiclust", 5.5)] and len(notes) == 1


def test_a_class_without_test_images_keeps_its_record():
    """per_class_accuracy holds nan for a class absent from the test set (CIFAR-100 or Caltech on a sliced test
    set): the record is read, not skipped as broken (resume counts it as done); other non-numbers are refused."""
    from fkal.reporting.records import parse_record

    absent = make_record(per_class_accuracy=[50.0] * 9 + [float("nan")])
    record, problem = parse_record(json.dumps(absent))
    assert problem is None and math.isnan(record["per_class_accuracy"][9])
    for bad in ("50", None, float("inf")):
        record, problem = parse_record(json.dumps(make_record(per_class_accuracy=[50.0] * 9 + [bad])))
        assert record is None and "per_class_accuracy" in problem
