"""fkal/reporting/figures.py and run_plot.py: every figure renders at its size; the command line end to end."""
import json

import numpy as np
from PIL import Image

from fkal.reporting import cli as run_plot
from fkal import reporting as report
from fkal.reporting import figures as plots

CONFIGS = {"random": 50.0, "pfk-phat-L80": 70.0}  # starting accuracy (%)


def make_record(config, run, iteration, accuracy):
    return {
        "config": config, "dataset": "mnist", "run": run, "seed": run, "imbalance_ratio": 100, "unsupervised": 1,
        "iteration": iteration, "labeled": 125 * iteration, "pool_size": 25000, "test_accuracy": accuracy,
        "ensemble_test_accuracy": None, "per_class_accuracy": [accuracy] * 10,
        "selected_class_counts": [20, 20, 20, 20, 20, 5, 5, 5, 5, 10 + iteration], "pseudo_label_accuracy": None,
        "query_seconds": 0.001 if config == "random" else 2.5, "train_seconds": 12.0,
    }


def write_results(out, runs=(0, 1), iterations=(1, 2, 3), skip=()):
    """{out}/MNIST/run{r}/results.jsonl: two configurations, three iterations, and a full-train line per run.
    ``skip`` holds (config, run, iteration) lines left out."""
    for run in runs:
        lines = [make_record(config, run, i, start + 10 * i + run)
                 for config, start in CONFIGS.items() for i in iterations if (config, run, i) not in skip]
        lines.append({"config": "full-train", "dataset": "mnist", "run": run, "seed": run, "imbalance_ratio": 100,
                      "unsupervised": 1, "iteration": 0, "labeled": 25000, "pool_size": 25000,
                      "test_accuracy": 92.5})
        path = out / "MNIST" / f"run{run}" / "results.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def groups_of(out):
    records, warnings = report.read_results(report.result_paths(out, "mnist"))
    assert warnings == []
    return report.split_full_train(report.group_records(records))


def png_size(path):
    with Image.open(path) as image:
        image.load()
        return image.size  # (width, height) in pixels


def test_every_figure_renders_at_its_size(tmp_path):
    active, full = groups_of(write_results(tmp_path))
    curves = {key: report.accuracy_curve(runs) for key, runs in active.items()}
    full_curves = {key: report.accuracy_curve(runs) for key, runs in full.items()}
    figures = {
        "accuracy": plots.accuracy_figure(curves, full_curves, 25000, "accuracy"),
        "cost": plots.cost_figure(report.cost_table(active), "cost"),
        "selection": plots.selection_figure({k: report.selection_histogram(r) for k, r in active.items()}, "sel"),
        "summary": plots.selection_summary_figure({k: report.entropy_curve(r) for k, r in active.items()},
                                                  {k: report.rare_share_curve(r, range(5, 10))
                                                   for k, r in active.items()}, 10, range(5, 10), "summary"),
    }
    expected = {"accuracy": (1100, 550),   # 11 x 5.5 in at 100 dpi
                "cost": (1100, 300),       # 2 bars: the 3 in minimum height
                "selection": (900, 300),   # 2 panels of 4 x 3 in side by side, 1 in for the class legend
                "summary": (1300, 450)}
    for name, figure in figures.items():
        png, pdf = plots.save_figure(figure, tmp_path / "figures" / name)
        assert png_size(png) == expected[name], name
        assert pdf.read_bytes().startswith(b"%PDF")


def test_heatmap_for_many_classes(tmp_path):
    key = report.GroupKey("random", 100.0, 1)
    counts = np.arange(3 * 50, dtype=float).reshape(3, 50)  # 3 iterations, 50 classes
    png, _ = plots.save_figure(plots.selection_figure({key: ([10, 20, 30], counts)}, "many"), tmp_path / "many")
    assert png_size(png) == (500, 300)


def test_figure_names_keep_a_dotted_ratio_and_leave_no_temporary_file(tmp_path):
    key = report.GroupKey("random", 1.5, 1)
    figure = plots.selection_figure({key: ([10, 20], np.ones((2, 10)))}, "IR=1.5")
    png, pdf = plots.save_figure(figure, tmp_path / "selection_IR1.5")
    assert (png.name, pdf.name) == ("selection_IR1.5.png", "selection_IR1.5.pdf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selection_IR1.5.pdf", "selection_IR1.5.png"]


def test_accuracy_curve_without_a_rare_set_and_single_run(tmp_path):
    active, _ = groups_of(write_results(tmp_path, runs=(0,)))
    figure = plots.selection_summary_figure({k: report.entropy_curve(r) for k, r in active.items()}, None, 10,
                                            None, "no rare classes")
    png, _ = plots.save_figure(figure, tmp_path / "summary")
    assert png_size(png) == (1300, 450)


def test_main_end_to_end(tmp_path, capsys):
    out = write_results(tmp_path / "local_data")
    assert run_plot.main(["--out", str(out), "--save"]) == 0
    folder = out / "MNIST" / "figures"
    for stem in ("accuracy_IR100", "cost_IR100", "selection_IR100", "selection_summary_IR100"):
        assert png_size(folder / f"{stem}.png")[0] > 0
        assert (folder / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    markdown = (folder / "results.md").read_text()
    assert "pfk-phat-L80  (R_zg, S=p^(y,z), L=80)" in markdown and "Label saving" in markdown
    csv_lines = (folder / "accuracy.csv").read_text().splitlines()
    assert csv_lines[0].startswith("config,imbalance_ratio,unsupervised,labeled")
    assert len(csv_lines) == 1 + 2 * 3 + 1  # header, 2 configurations x 3 counts, full-train
    assert (folder / "label_saving.csv").read_text().count("\n") == 3
    printed = capsys.readouterr().out
    assert "| random | 60.50 ± 0.71 (2) |" in printed  # 50 + 10 and 50 + 10 + 1 at 125 labels


def test_main_figures_folder_and_filters(tmp_path, capsys):
    out = write_results(tmp_path)
    figures = tmp_path / "elsewhere"
    assert run_plot.main(["--out", str(out), "--save", "--figures", str(figures), "--only", "random", "nope"]) == 0
    captured = capsys.readouterr()
    assert "--only nope: no such configuration" in captured.err
    assert "pfk-phat-L80" not in (figures / "results.md").read_text().split("## Warnings")[0]
    assert run_plot.main(["--out", str(out), "--unsupervised", "0"]) == 2
    assert "no results left after the filters" in capsys.readouterr().err


def test_main_compare_at(tmp_path, capsys):
    out = write_results(tmp_path)
    figures = tmp_path / "figures"
    assert run_plot.main(["--out", str(out), "--compare-at", "250", "999", "--save", "--figures", str(figures)]) == 0
    printed = capsys.readouterr().out
    # random at 250 labels: 50 + 20 and 50 + 20 + 1; rare classes 5-9 of MNIST: (20 + 11) + (20 + 12) of the
    # 131 + 132 selected images (these records select more than 125 a time): 23.95%
    assert "### IR=100, 250 labeled" in printed and "999 labeled" not in printed
    assert "| random | 2 | 70.5 ± 0.7 | – | – | – | 24.0 ± 0.0 | 0.001 |" in printed
    lines = (figures / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("config,imbalance_ratio,unsupervised,labeled,runs,accuracy,accuracy_std,balanced")
    assert len(lines) == 1 + 2
    assert run_plot.main(["--out", str(out), "--compare-at", "999"]) == 0
    assert "--compare-at 999: no configuration reached any of these labeled counts" in capsys.readouterr().err


def test_main_runs_keeps_only_the_named_runs(tmp_path, capsys):
    """--runs 1: the table holds run 1 alone (random at 250 labels: 50 + 20 + 1), and a run that does not exist
    leaves nothing, with one line naming the filter."""
    out = write_results(tmp_path)
    assert run_plot.main(["--out", str(out), "--compare-at", "250", "--runs", "1"]) == 0
    assert "| random | 1 | 71.0 |" in capsys.readouterr().out
    assert run_plot.main(["--out", str(out), "--runs", "7"]) == 2
    assert "--runs" in capsys.readouterr().err


def test_main_without_results_exits_2(tmp_path, capsys):
    assert run_plot.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results") and err.count("\n") == 1


def test_broken_line_and_missing_iteration_still_plot(tmp_path, capsys):
    out = write_results(tmp_path, skip={("pfk-phat-L80", 1, 3)})
    path = out / "MNIST" / "run0" / "results.jsonl"
    with open(path, "a") as f:
        f.write('{"config": "random", "run": 0\n')
    lines = path.read_text().count("\n")
    assert run_plot.main(["--out", str(out), "--save"]) == 0
    err = capsys.readouterr().err
    assert f"{path}:{lines}: skipped a broken line" in err
    assert "partial results: pfk-phat-L80 (IR=100, rotation-pretrained): run 1 lacks iteration 3 of 1-3" in err
    assert png_size(out / "MNIST" / "figures" / "accuracy_IR100.png") == (1100, 550)


def test_percent_x_axis_puts_the_share_of_the_pool_on_the_bottom_axis(tmp_path):
    active, full = groups_of(write_results(tmp_path))
    curves = {key: report.accuracy_curve(runs) for key, runs in active.items()}
    figure = plots.accuracy_figure(curves, {}, 25000, "percent", x="percent", dataset_size=50000)
    ax = figure.axes[0]
    for container, curve in zip(ax.containers, curves.values()):
        x = np.asarray(container.lines[0].get_xdata(), dtype=float)     # the mean line of the errorbar
        np.testing.assert_allclose(x, [0.25, 0.5, 0.75])                 # 125, 250, 375 of |D| = 50,000
    assert ax.get_xlabel() == "labeled images, % of |D| = 50,000 (the pool before the imbalance)"
    assert ax.child_axes[0].get_xlabel() == "labeled images"   # the top axis gives the counts
    labeled = plots.accuracy_figure(curves, {}, 25000, "labeled")
    np.testing.assert_allclose(np.asarray(labeled.axes[0].containers[0].lines[0].get_xdata(), dtype=float),
                               [125, 250, 375])


def write_val_results(out):
    """Two runs of two configurations kept at the epoch best on D_v, the final epoch 1 (random) or 2 (pfk)
    points lower, balanced accuracy recorded for random only; one older run of random without these fields."""
    write_results(out)
    for run in (0, 1):
        path = out / "MNIST" / f"run{run}" / "results.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines:
            if line["config"] != "full-train":
                line.update(epoch_selection="val", final_test_accuracy=line["test_accuracy"] - (
                    1.0 if line["config"] == "random" else 2.0), per_class_accuracy_std=3.0)
                if line["config"] == "random":
                    line["balanced_accuracy"] = line["test_accuracy"] - 5.0
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    old = out / "MNIST" / "run2" / "results.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text("".join(json.dumps(make_record("random", 2, i, 40.0 + i)) + "\n" for i in (1, 2, 3)))
    return out


def test_main_epoch_selection_beside_targets_and_percent(tmp_path, capsys):
    out = write_val_results(tmp_path / "local_data")
    argv = ["--out", str(out), "--epoch-selection", "val", "--beside", "final_test_accuracy", "--targets", "60",
            "final", "--x", "percent", "--save", "--resamples", "200"]
    assert run_plot.main(argv) == 0
    printed = capsys.readouterr().out
    folder = out / "MNIST" / "figures"
    assert "## test accuracy minus final test accuracy (points)" in printed
    assert "| random | 1.00 ± 0.00 (2) | 1.00 ± 0.00 (2) | 1.00 ± 0.00 (2) |" in printed   # run2 (final) left out
    assert "| pfk-phat-L80  (R_zg, S=p^(y,z), L=80) | 2.00 ± 0.00 (2) |" in printed
    # target 60: random (60.5 at 125 labels) and pfk (80.5) are above it from their first count, '≤ 0.50%' (125 of
    # 25,000: these records carry no settings, so |D| is their pool); target final: random's final mean, 80.5
    assert "labels to 60%" in printed and "labels to final (80.50%)" in printed
    assert "| ≤ 0.50% [0.50%, 0.50%] |" in printed
    header = (folder / "label_saving.csv").read_text().splitlines()[0]
    assert header.startswith("config,imbalance_ratio,unsupervised,baseline,best_baseline,target,target_value,")
    assert (folder / "difference.csv").read_text().count("\n") == 1 + 2 * 3
    figure_png = folder / "accuracy_IR100.png"
    assert png_size(figure_png) == (1100, 550)


def test_main_metric_notes_and_epoch_selection_filter(tmp_path, capsys):
    out = write_val_results(tmp_path / "local_data")
    assert run_plot.main(["--out", str(out), "--metric", "balanced_accuracy"]) == 0
    captured = capsys.readouterr()
    assert "note: --metric balanced_accuracy: 6 records of pfk-phat-L80 lack it and are left out" in captured.err
    assert "note: --metric balanced_accuracy: 3 records of random lack it and are left out" in captured.err
    assert "| random | 55.50 ± 0.71 (2) | 65.50 ± 0.71 (2) | 75.50 ± 0.71 (2) |" in captured.out
    assert run_plot.main(["--out", str(out), "--epoch-selection", "final"]) == 0
    captured = capsys.readouterr()
    assert "| random | 41.00 (1) |" in captured.out and "pfk-phat-L80" not in captured.out.split("## Label")[0]
    assert run_plot.main(["--out", str(out), "--metric", "per_class_accuracy_std"]) == 0
    assert "no label saving for --metric per_class_accuracy_std" in capsys.readouterr().err
    assert run_plot.main(["--out", str(out), "--epoch-selection", "final", "--only", "pfk-phat-L80"]) == 2
    assert "epoch selections final, val" in capsys.readouterr().err


def test_a_second_metric_is_drawn_dotted_beside_each_curve(tmp_path):
    active, _ = groups_of(write_results(tmp_path))
    curves = {key: report.accuracy_curve(runs) for key, runs in active.items()}
    lower = {key: [report.CurvePoint(p.labeled, p.mean - 2, p.std, p.runs) for p in curve]
             for key, curve in curves.items()}
    figure = plots.accuracy_figure(curves, {}, 25000, "beside", beside=lower, beside_label="final test accuracy")
    ax = figure.axes[0]
    dotted = [line for line in ax.lines if line.get_linestyle() == ":" and len(line.get_xdata())]
    assert sorted(tuple(line.get_ydata()) for line in dotted) == sorted(
        tuple(p.mean for p in curve) for curve in lower.values())
    assert "final test accuracy" in [text.get_text() for text in figure.legends[0].get_texts()]
