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

from .curves import LabelSaving, accuracy_curve, improvement_curve, mean_std
from .names import FULL_TRAIN, RANDOM_INIT_MARK, format_ratio, legend_name
from .records import GroupKey, baseline_key, pool_size, split_full_train


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
    rows = []
    for key, runs in groups.items():
        pool = pool_size(runs)
        for point in accuracy_curve(runs, metric):
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


def _cell(mean: float, std: float, runs: int, digits: int = 2) -> str:
    """'93.10 ± 0.52 (3)'; the std is left out for a single run."""
    if math.isnan(std):
        return f"{mean:.{digits}f} ({runs})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({runs})"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_accuracy_markdown(rows: Sequence[SummaryRow], metric: str = "test_accuracy") -> str:
    """One wide table per imbalance ratio: a row per configuration, a column per labeled count (with its share of
    the pool); full-train lines below each table."""
    lines = [f"## {metric.replace('_', ' ')} (%)", "",
             "Mean ± sample std (ddof=1) over runs, number of runs in parentheses (no std for one run). "
             "Columns: labeled images (share of the pool).", ""]
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


def format_label_saving_markdown(savings: Sequence[LabelSaving]) -> str:
    """Per (imbalance ratio, initial model): the target and a row per configuration, fewest labels first."""
    lines = ["## Label saving", "",
             "Target: the final mean accuracy of the best baseline (highest final mean among all but "
             "pcc/pfk/pfk-sum). Labels: smallest labeled count at which a configuration's mean accuracy reaches the "
             "target (linear interpolation between counts; '≤' where it is above the target from its first count "
             "on). Saving: how many fewer labels than the baseline needs, in percent.", ""]
    slices: dict[tuple[float, int], list[LabelSaving]] = defaultdict(list)
    for saving in savings:
        slices[(saving.imbalance_ratio, saving.unsupervised)].append(saving)
    for (ratio, unsupervised), members in sorted(slices.items()):
        first = members[0]
        init = "rotation-pretrained" if unsupervised else RANDOM_INIT_MARK
        lines += [f"### IR={format_ratio(ratio)}, {init}: target {first.target:.2f}% = final mean of "
                  f"{first.baseline}, reached at {first.baseline_labels:.0f} labels", ""]
        members = sorted(members, key=lambda s: (s.labels is None, s.labels or 0.0, s.config))
        body = []
        for s in members:
            if s.labels is None:
                body.append([legend_name(s.config, s.unsupervised, s.variant), f"not reached (best {s.best_mean:.2f}%)",
                             "–"])
            else:  # above target from the first count on: it may need fewer labels than that count
                at_most, at_least = ("≤ ", "≥ ") if s.above_at_start else ("", "")
                body.append([legend_name(s.config, s.unsupervised, s.variant), f"{at_most}{s.labels:.0f}",
                             f"{at_least}{s.saving_percent:.1f}%"])
        lines += _markdown_table(["configuration", "labels to reach target", "fewer labels than baseline"], body)
        lines += [""]
    return "\n".join(lines)


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
