"""Tables: the rows of the accuracy and cost tables, and their Markdown and CSV text.

Pure functions without matplotlib: ``fkal.reporting.figures`` draws, ``run_plot.py`` ties both to the command line.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np

from .curves import (FINAL, LabelSaving, accuracy_curve, difference_curve, improvement_curve, mean_std,
                     rare_share_curve)
from .names import FULL_TRAIN, RANDOM_INIT_MARK, format_ratio, legend_name
from .records import GroupKey, baseline_key, pool_size, rare_classes_in, split_full_train


@dataclass(frozen=True)
class SummaryRow:
    """Accuracy (%) of one configuration at one labeled count, over runs (std: ddof=1, nan for one run)."""

    config: str
    imbalance_ratio: float
    unsupervised: int
    labeled: int
    labeled_percent: float  # labeled / pool size * 100
    mean: float
    std: float
    runs: int
    variant: str = ""         # what sets this row apart from other settings of the same configuration


def summary_table(groups: dict[GroupKey, dict[int, list[dict]]], metric: str = "test_accuracy") -> list[SummaryRow]:
    """One row per (configuration, imbalance ratio, initial model, labeled count), in display order."""
    return _rows(groups, lambda runs: accuracy_curve(runs, metric))


def difference_table(groups: dict[GroupKey, dict[int, list[dict]]], metric: str, other: str) -> list[SummaryRow]:
    """Rows of ``metric - other`` per record (``difference_curve``) for the active-learning groups; the rows'
    ``mean`` and ``std`` are the difference's."""
    return _rows(split_full_train(groups)[0], lambda runs: difference_curve(runs, metric, other))


def _rows(groups: dict[GroupKey, dict[int, list[dict]]], curve_of) -> list[SummaryRow]:
    rows = []
    for key, runs in groups.items():
        pool = pool_size(runs)
        for point in curve_of(runs):
            rows.append(SummaryRow(key.config, key.imbalance_ratio, key.unsupervised, point.labeled,
                                   100.0 * point.labeled / pool, point.mean, point.std, point.runs, key.variant))
    return rows


@dataclass(frozen=True)
class CostRow:
    """Seconds per iteration of one group: query (acquisition) and training, mean and std over all its iterations
    of all runs (std: ddof=1, nan for one value)."""

    config: str
    imbalance_ratio: float
    unsupervised: int
    query_mean: float
    query_std: float
    train_mean: float
    train_std: float
    iterations: int
    variant: str = ""


def cost_table(groups: dict[GroupKey, dict[int, list[dict]]], from_iteration: int = 2) -> list[CostRow]:
    """Query and training seconds per active-learning group (full-train lines left out), over the iterations
    from ``from_iteration`` on: the first iteration of the uncertainty and VAAL-type baselines selects at random
    (the initial classifier has seen no label), so counting it would halve their cost."""
    rows = []
    for key, runs in split_full_train(groups)[0].items():
        records = [r for rs in runs.values() for r in rs if r["iteration"] >= from_iteration]
        if not records:
            continue
        query = mean_std([r["query_seconds"] for r in records])
        train = mean_std([r["train_seconds"] for r in records])
        rows.append(CostRow(key.config, key.imbalance_ratio, key.unsupervised, *query, *train, len(records),
                            key.variant))
    return rows


# The columns of the comparison table: record field -> heading (LabelBench's imbalance metrics beside accuracy).
COMPARISON_METRICS = {"test_accuracy": "accuracy", "balanced_accuracy": "balanced", "worst_class_accuracy": "worst class",
                      "rare_class_accuracy": "rare classes"}


@dataclass(frozen=True)
class ComparisonRow:
    """One configuration at one labeled count: accuracy and the imbalance metrics (mean and sample std over runs,
    %), the share of the rare classes among the images labeled so far (%), and the median query seconds of its
    iterations 2 and later (all runs)."""

    config: str
    imbalance_ratio: float
    unsupervised: int
    labeled: int
    runs: int
    accuracy: float
    accuracy_std: float
    balanced: float
    balanced_std: float
    worst_class: float
    worst_class_std: float
    rare_classes: float
    rare_classes_std: float
    rare_share: float
    rare_share_std: float
    query_seconds: float
    variant: str = ""


def comparison_table(groups: dict[GroupKey, dict[int, list[dict]]], at: Sequence[int],
                     rare_classes: Sequence[int] | None = None) -> list[ComparisonRow]:
    """Rows of every active-learning group at each labeled count of ``at`` that it reached. The rare classes of a
    group are those its records name (``rare_classes``; the imbalance rule's), else ``rare_classes``; without
    either the rare share is nan."""
    rows = []
    for key, runs in split_full_train(groups)[0].items():
        points = {metric: {p.labeled: p for p in accuracy_curve(runs, metric)} for metric in COMPARISON_METRICS}
        rare = rare_classes_in({key: runs}) or rare_classes
        share = {p.labeled: p for p in rare_share_curve(runs, rare)} if rare else {}
        later = [r["query_seconds"] for records in runs.values() for r in records if r["iteration"] >= 2]
        query = float(np.median(later)) if later else math.nan
        for labeled in at:
            if labeled not in points["test_accuracy"]:
                continue
            cells = []
            for metric in COMPARISON_METRICS:
                p = points[metric].get(labeled)
                cells += [p.mean, p.std] if p is not None else [math.nan, math.nan]
            s = share.get(labeled)
            cells += [s.mean, s.std] if s is not None else [math.nan, math.nan]
            rows.append(ComparisonRow(key.config, key.imbalance_ratio, key.unsupervised, labeled,
                                      points["test_accuracy"][labeled].runs, *cells, query, key.variant))
    return rows


def format_comparison_markdown(rows: Sequence[ComparisonRow]) -> str:
    """One table per imbalance ratio and labeled count: a row per configuration."""
    lines = ["## Accuracy, imbalance metrics and rare share", "",
             "Test accuracy, balanced accuracy (the mean of the per-class accuracies), the worst class's accuracy "
             "and the mean accuracy of the rare classes (%), mean ± sample std over runs; the rare classes' share "
             "of all images labeled so far (%); the median query seconds over iterations 2 and later of all runs.",
             ""]
    heading = ["configuration", "runs", *COMPARISON_METRICS.values(), "rare share", "query s"]
    for ratio in sorted({row.imbalance_ratio for row in rows}):
        for labeled in sorted({row.labeled for row in rows if row.imbalance_ratio == ratio}):
            at = [row for row in rows if row.imbalance_ratio == ratio and row.labeled == labeled]
            body = [[legend_name(r.config, r.unsupervised, r.variant), str(r.runs),
                     *(format_spread(m, s) for m, s in ((r.accuracy, r.accuracy_std), (r.balanced, r.balanced_std),
                                                  (r.worst_class, r.worst_class_std),
                                                  (r.rare_classes, r.rare_classes_std),
                                                  (r.rare_share, r.rare_share_std))),
                     "–" if math.isnan(r.query_seconds) else f"{r.query_seconds:.3g}"] for r in at]
            lines += [f"### IR={format_ratio(ratio)}, {labeled} labeled", ""] + _markdown_table(heading, body) + [""]
    return "\n".join(lines)


def format_spread(mean: float, std: float) -> str:
    """'93.1 ± 0.5', '93.1' for one run (std nan), '–' where undefined."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _cell(mean: float, std: float, runs: int, digits: int = 2) -> str:
    """'93.10 ± 0.52 (3)'; the std is left out for a single run."""
    if math.isnan(std):
        return f"{mean:.{digits}f} ({runs})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({runs})"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_accuracy_markdown(rows: Sequence[SummaryRow], metric: str = "test_accuracy", title: str | None = None,
                             note: str = "") -> str:
    """One wide table per imbalance ratio: a row per configuration, a column per labeled count (with its share of
    the pool); full-train lines below each table. ``title`` replaces the metric's name as the heading, ``note``
    follows the explanation."""
    lines = [f"## {title or metric.replace('_', ' ') + ' (%)'}", "",
             "Mean ± sample std (ddof=1) over runs, number of runs in parentheses (no std for one run). "
             "Columns: labeled images (share of the pool)." + (f" {note}" if note else ""), ""]
    for ratio in sorted({row.imbalance_ratio for row in rows}):
        at_ratio = [row for row in rows if row.imbalance_ratio == ratio]
        active = [row for row in at_ratio if row.config != FULL_TRAIN]
        lines += [f"### IR={format_ratio(ratio)}", ""]
        if active:
            columns = sorted({row.labeled for row in active})
            percent = {row.labeled: row.labeled_percent for row in active}
            table: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
            for row in active:
                table[(row.config, row.unsupervised, row.variant)][row.labeled] = _cell(row.mean, row.std, row.runs)
            header = ["configuration"] + [f"{n} ({percent[n]:.3g}%)" for n in columns]
            body = [[legend_name(config, unsupervised, variant)] + [cells.get(n, "–") for n in columns]
                    for (config, unsupervised, variant), cells in table.items()]
            lines += _markdown_table(header, body) + [""]
        for row in at_ratio:
            if row.config == FULL_TRAIN:
                lines += [f"All train data ({row.labeled} images{'' if row.unsupervised else ', ' + RANDOM_INIT_MARK}):"
                          f" {_cell(row.mean, row.std, row.runs)}", ""]
    return "\n".join(lines)


def label_saving_text(resamples: int, seed: int) -> str:
    """What the label-saving tables hold and how their spread is obtained (the paragraph above them)."""
    return (
        "Per imbalance ratio and initial model, one table per baseline (every configuration but pcc/pfk/pfk-sum, "
        "the best first: highest final mean). Targets: an accuracy in percent, or 'final', the baseline's final "
        "mean accuracy. Labels: the smallest labeled count at which a configuration's mean curve over runs reaches "
        "the target (linear interpolation between labeled counts; '≤' where it is at the target from its first "
        "count on). Fewer labels: 100 x (1 - labels / the baseline's labels), in percent. "
        f"Spread: [2.5%, 97.5%] percentiles of a bootstrap over runs ({resamples} resamples, seed {seed}): each "
        "resample draws every configuration's runs with replacement, recomputes the mean curves (and the target "
        "'final' from the resampled baseline) and reads the labels off them again; configurations with the same "
        "runs share the draws, because run r of every configuration starts from the same split and initial model, "
        "so the saving's interval is that of paired runs ('unpaired' where the runs differ). ∞ labels (−∞ saving): "
        "in more than 2.5% of the resamples the mean curve did not reach the target. Why a bootstrap and not the "
        "labels each run needs (mean ± std over runs): a single run's curve often never reaches the target (about "
        "half of the baseline's runs stay under its own final mean), and the number reported is read off the mean "
        "curve, whose spread over runs is what the bootstrap measures. With two or three runs the interval can "
        "only recombine the runs at hand and understates the uncertainty. The table of the best baseline at the "
        "target 'final' is the earlier label-saving table (one target, one baseline), with intervals.")


def format_label_saving_markdown(savings: Sequence[LabelSaving], resamples: int, seed: int,
                                 x: str = "labeled", metric: str = "test_accuracy") -> str:
    """Per (imbalance ratio, initial model) and baseline: a row per configuration, two columns per target
    (labels with their interval, fewer labels than the baseline with its interval). ``x="percent"`` gives labels
    in percent of |D| (the pool before the imbalance) instead of counts."""
    lines = [f"## Label saving ({metric.replace('_', ' ')})", "", label_saving_text(resamples, seed)]
    if x == "percent":
        lines[-1] += (" Labels are given in percent of |D|, the pool before the imbalance (as in the paper's "
                      "figures: 125 MNIST labels are 0.25%).")
    lines.append("")
    tables: dict[tuple, list[LabelSaving]] = defaultdict(list)
    for row in savings:
        tables[(row.imbalance_ratio, row.unsupervised, not row.best_baseline, row.baseline)].append(row)
    for (ratio, unsupervised, not_best, baseline), rows in sorted(tables.items()):
        init = "rotation-pretrained" if unsupervised else RANDOM_INIT_MARK
        best = "" if not_best else " (best baseline)"
        lines += [f"### IR={format_ratio(ratio)}, {init}: against {baseline}{best}", ""]
        targets = list(dict.fromkeys(row.target for row in rows))
        value = {row.target: row.target_value for row in rows}
        header = ["configuration", "runs"]
        for target in targets:
            name = f"final ({value[target]:.2f}%)" if target == FINAL else f"{target}%"
            header += [f"labels to {name}", f"fewer labels at {name}"]
        body: dict[tuple, list[str]] = {}
        for row in rows:
            cells = body.setdefault((row.config, row.unsupervised, row.variant),
                                    [legend_name(row.config, row.unsupervised, row.variant),
                                     f"{row.runs}" + ("" if row.paired else ", unpaired")])
            cells += [_labels_cell(row, x), _saving_cell(row)]
        lines += _markdown_table(header, list(body.values())) + [""]
    return "\n".join(lines)


def _amount(labels: float, row: LabelSaving, x: str) -> str:
    if math.isinf(labels):
        return "∞"
    return f"{100.0 * labels / row.dataset_size:.2f}%" if x == "percent" else f"{labels:.0f}"


def _labels_cell(row: LabelSaving, x: str) -> str:
    """'1003 [875, 1180]'; '≤ 125 [125, 125]'; 'not reached (best 88.10%)'."""
    if row.labels is None:
        share = f"; reached in {100 * row.reached_share:.0f}% of resamples" if row.reached_share > 0 else ""
        return f"not reached (best {row.best_mean:.2f}%{share})"
    bound = "≤ " if row.above_at_start else ""
    return (f"{bound}{_amount(row.labels, row, x)} "
            f"[{_amount(row.labels_low, row, x)}, {_amount(row.labels_high, row, x)}]")


def _saving_cell(row: LabelSaving) -> str:
    """'19.7% [4.1, 33.0]'; '≥ 50.0% [...]' where the configuration is at the target from its first count; '–' where
    the saving is undefined (not reached, or the baseline is at the target from its first count)."""
    if row.saving_percent is None:
        if row.labels is not None and row.baseline_labels is None:
            return "– (baseline does not reach it)"
        return "– (baseline at target from its first count)" if row.baseline_above_at_start else "–"
    bound = "≥ " if row.above_at_start else ""
    low, high = (f"{v:.1f}" if math.isfinite(v) else ("−∞" if v < 0 else "∞")
                 for v in (row.saving_low, row.saving_high))
    return f"{bound}{row.saving_percent:.1f}% [{low}, {high}]"


def format_cost_markdown(rows: Sequence[CostRow]) -> str:
    """Query and training seconds per iteration, per group."""
    lines = ["## Seconds per iteration", "", "Mean ± sample std over iterations 2 and later of all runs "
             "(iteration 1 of the uncertainty and VAAL-type baselines is random, and with --initial-labels the "
             "initial random set of every method).", ""]
    body = [[legend_name(r.config, r.unsupervised, r.variant), format_ratio(r.imbalance_ratio),
             _cell(r.query_mean, r.query_std, r.iterations, 3), _cell(r.train_mean, r.train_std, r.iterations, 1)]
            for r in rows]
    lines += _markdown_table(["configuration", "IR", "query s (iterations)", "train s (iterations)"], body)
    return "\n".join(lines + [""])


@dataclass(frozen=True)
class ImprovementRow:
    """Accuracy minus random sampling's in the same run, at one labeled count: mean and sample std over the runs
    both have (std nan for one run), in points."""

    config: str
    imbalance_ratio: float
    unsupervised: int
    labeled: int
    mean: float
    std: float
    runs: int
    baseline: str = "random"
    variant: str = ""


def improvement_table(groups: dict[GroupKey, dict[int, list[dict]]], metric: str = "test_accuracy",
                      baseline: str = "random") -> tuple[list[ImprovementRow], list[str]]:
    """``(rows, notes)``: the improvement over ``baseline`` (paired by run, ``improvement_curve``) of every
    active-learning group but the baseline's own; a group without a baseline of the same settings gets a note."""
    rows, notes = [], []
    active, _ = split_full_train(groups)
    for key, runs in active.items():
        if key.config == baseline:
            continue
        base = baseline_key(active, key, baseline)
        if base is None:
            notes.append(f"no {baseline} runs with the settings of {key.name} (IR={format_ratio(key.imbalance_ratio)}):"
                         " no improvement curve")
            continue
        for point in improvement_curve(runs, active[base], metric):
            rows.append(ImprovementRow(key.config, key.imbalance_ratio, key.unsupervised, point.labeled, point.mean,
                                       point.std, point.runs, base.name, key.variant))
    return rows, notes


def format_improvement_markdown(rows: Sequence[ImprovementRow]) -> str:
    """One wide table per imbalance ratio: accuracy minus random sampling's, paired by run."""
    lines = ["## Improvement over random sampling (points)", "",
             "Accuracy minus the random baseline's accuracy in the same run (trial) at the same labeled count: mean ± "
             "sample std over the runs both have (TA-VAAL's Figures 3-4).", ""]
    for ratio in sorted({row.imbalance_ratio for row in rows}):
        at_ratio = [row for row in rows if row.imbalance_ratio == ratio]
        columns = sorted({row.labeled for row in at_ratio})
        table: dict[tuple, dict[int, str]] = defaultdict(dict)
        for row in at_ratio:
            table[(row.config, row.unsupervised, row.variant)][row.labeled] = _signed_cell(row.mean, row.std, row.runs)
        body = [[legend_name(config, unsupervised, variant)] + [cells.get(n, "–") for n in columns]
                for (config, unsupervised, variant), cells in table.items()]
        lines += [f"### IR={format_ratio(ratio)}", ""] + _markdown_table(["configuration"] + [str(n) for n in columns],
                                                                          body) + [""]
    return "\n".join(lines)


def _signed_cell(mean: float, std: float, runs: int) -> str:
    """'+1.23 ± 0.45 (5)'; no std for one run."""
    if math.isnan(std):
        return f"{mean:+.2f} ({runs})"
    return f"{mean:+.2f} ± {std:.2f} ({runs})"


def to_csv(rows: Sequence) -> str:
    """Dataclass rows as CSV text with a header; None and nan become empty cells."""
    if not rows:
        return ""
    buffer = io.StringIO()
    names = [f.name for f in fields(rows[0])]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        writer.writerow({name: _csv_value(values[name]) for name in names})
    return buffer.getvalue()


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value
