"""Reading active-learning results and summarizing them: records, groups, curves, tables, label saving.

Pure functions without matplotlib: ``fkal/plots.py`` draws what this module computes and ``run_plot.py`` ties
both to the command line.

Every run appends to ``{out}/{DATASET}/run{r}/results.jsonl`` one JSON object per completed active-learning
iteration (fields in ``RECORD_FIELDS``); ``run.py --full-train`` adds one ``full-train`` line (iteration 0,
labeled = the whole pool). Records are grouped by ``GroupKey`` (configuration, imbalance ratio, initial model),
and within a group by run. Accuracies are percentages; a "curve" is a list of ``CurvePoint``, one per labeled
count, holding the mean and the sample std (ddof=1) of a per-run quantity over the runs that have that count.

Configuration names follow ``{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}]``, e.g. ``pfk-phat-L80``,
``pfk-sum-yhat-L20``, ``varR-E4-K32``; ``parse_config`` reads them and ``legend_name`` adds the paper's notation.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import config
from .errors import UserError

# --dataset value -> folder name under --out.
DATASET_DIRS = {"mnist": "MNIST", "svhn": "SVHN", "imagenet": "ImageNet", "cifar10": "CIFAR10"}

# Classes that the bias decimates, per dataset (DESIGN.md section 3: MNIST and SVHN keep few images of 5-9).
# ImageNet decimates 500 random classes and CIFAR-10 depends on its split: give those on the command line.
DEFAULT_RARE_CLASSES = {"mnist": tuple(range(5, 10)), "svhn": tuple(range(5, 10))}

FULL_TRAIN = "full-train"

RECORD_FIELDS = (
    "config", "dataset", "run", "seed", "imbalance_ratio", "unsupervised", "iteration", "labeled", "pool_size",
    "test_accuracy", "ensemble_test_accuracy", "per_class_accuracy", "selected_class_counts",
    "pseudo_label_accuracy", "query_seconds", "train_seconds",
)
# A full-train line needs only these; the selection fields may be absent or null there.
FULL_TRAIN_FIELDS = (
    "config", "dataset", "run", "seed", "imbalance_ratio", "unsupervised", "iteration", "labeled", "pool_size",
    "test_accuracy",
)
METRICS = ("test_accuracy", "ensemble_test_accuracy")

_INT_FIELDS = ("run", "seed", "iteration", "labeled", "pool_size")
_NUMBER_FIELDS = ("imbalance_ratio", "test_accuracy", "query_seconds", "train_seconds")
_NULLABLE_NUMBER_FIELDS = ("ensemble_test_accuracy", "pseudo_label_accuracy")

# Configuration grammar. Order matters only for display (tables and legends list acquisitions in this order).
ACQUISITIONS = ("random", "pcc", "pfk", "pfk-sum", "varR", "entropy", "bald", "std", "coreset", "vaal",
                "tavaal", "lloss")
OURS = ("pcc", "pfk", "pfk-sum")  # everything else is a baseline for the label saving

_ACQUISITION_NOTATION = {
    "random": "random", "pcc": "R_z", "pfk": "R_zg", "pfk-sum": "R_z+R_g", "varR": "varR",
    "entropy": "max entropy", "bald": "BALD", "std": "mean std", "coreset": "core-set", "vaal": "VAAL",
    "tavaal": "TA-VAAL", "lloss": "learning loss",
}
_PSEUDO_LABEL_NOTATION = {
    "y": "S=y", "yhat": "S=y^", "phat": "S=p^(y,z)", "phat-g": "S=p^(y,z,g)", "trC": "S=tr(C_zg)",
    "mi": "S=I(z;g)", "mi-diag": "S=I(z;g) diag",
}
RANDOM_INIT_MARK = "θ_rnd"  # the paper's mark for the random-weights initial model (unsupervised=0)


# ---------------------------------------------------------------------------------------------------------------
# Reading

def result_paths(out: str | Path, dataset: str) -> list[Path]:
    """Every ``{out}/{DATASET}/run*/results.jsonl``, ordered by run number."""
    root = Path(out) / DATASET_DIRS[dataset]
    return sorted(root.glob("run*/results.jsonl"), key=lambda p: _natural_key(p.parent.name))


def _natural_key(text: str) -> tuple:
    """``run10`` after ``run9``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def read_results(paths: Iterable[str | Path]) -> tuple[list[dict], list[str]]:
    """Read results files; return ``(records, warnings)``.

    A line that is not a JSON object or lacks a field (or has one of the wrong type) is skipped with one warning
    naming file and line. Blank lines are ignored. When the same (configuration, imbalance ratio, initial model,
    run, iteration) appears twice (a resumed run), the later line wins and a warning says so.
    """
    records: list[dict] = []
    warnings: list[str] = []
    where: dict[tuple, tuple[int, str]] = {}  # record key -> (index in records, "file:line")
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            warnings.append(f"{path}: cannot read ({e.strerror or e})")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record, problem = parse_record(line)
            if problem:
                warnings.append(f"{path}:{number}: skipped a broken line ({problem})")
                continue
            key = record_key(record)
            if key in where:
                index, earlier = where[key]
                warnings.append(f"{path}:{number}: repeats {earlier} ({record['config']}, run {record['run']}, "
                                f"iteration {record['iteration']}); keeping the later line")
                records[index] = record
                where[key] = (index, f"{path}:{number}")
            else:
                where[key] = (len(records), f"{path}:{number}")
                records.append(record)
    return records, warnings


def parse_record(line: str) -> tuple[dict | None, str | None]:
    """One results line -> ``(record, None)``, or ``(None, problem)`` when it cannot be used."""
    try:
        record = json.loads(line)
    except ValueError as e:
        return None, f"invalid JSON: {e}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    required = FULL_TRAIN_FIELDS if record.get("config") == FULL_TRAIN else RECORD_FIELDS
    missing = [name for name in required if name not in record]
    if missing:
        return None, "missing " + ", ".join(missing)
    problem = _type_problem(record, required)
    return (None, problem) if problem else (record, None)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_problem(record: dict, required: Sequence[str]) -> str | None:
    """The first field (among ``required``) whose value has the wrong type, described; None if all fit."""
    if not isinstance(record["config"], str) or not record["config"]:
        return "config is not a name"
    for name in _INT_FIELDS:
        if name in required and not (isinstance(record[name], int) and not isinstance(record[name], bool)):
            return f"{name} is not an integer"
    for name in _NUMBER_FIELDS:
        if name in required and not _is_number(record[name]):
            return f"{name} is not a number"
    for name in _NULLABLE_NUMBER_FIELDS:
        if name in required and record[name] is not None and not _is_number(record[name]):
            return f"{name} is neither a number nor null"
    if record["unsupervised"] not in (0, 1):
        return "unsupervised is not 0 or 1"
    if "selected_class_counts" in required:
        counts = record["selected_class_counts"]
        if not isinstance(counts, list) or not all(isinstance(c, int) and c >= 0 for c in counts):
            return "selected_class_counts is not a list of counts"
    if "per_class_accuracy" in required:
        accuracies = record["per_class_accuracy"]
        if not isinstance(accuracies, list) or not all(_is_number(a) for a in accuracies):
            return "per_class_accuracy is not a list of numbers"
    return None


def record_key(record: dict) -> tuple:
    """What identifies one line: (config, imbalance ratio, unsupervised, run, iteration)."""
    return (record["config"], float(record["imbalance_ratio"]), int(record["unsupervised"]), record["run"],
            record["iteration"])


# ---------------------------------------------------------------------------------------------------------------
# Filtering and grouping

@dataclass(frozen=True)
class GroupKey:
    """One curve: a configuration at an imbalance ratio from one initial model (1: rotation-pretrained)."""

    config: str
    imbalance_ratio: float
    unsupervised: int


def group_key(record: dict) -> GroupKey:
    return GroupKey(record["config"], float(record["imbalance_ratio"]), int(record["unsupervised"]))


def filter_records(records: Iterable[dict], only: Sequence[str] | None = None, unsupervised: int | None = None,
                   imbalance_ratios: Sequence[float] | None = None) -> list[dict]:
    """Records of the named configurations (full-train lines are always kept), initial model and ratios.

    ``None`` means no restriction.
    """
    ratios = None if imbalance_ratios is None else {float(r) for r in imbalance_ratios}
    kept = []
    for record in records:
        if only is not None and record["config"] not in only and record["config"] != FULL_TRAIN:
            continue
        if unsupervised is not None and int(record["unsupervised"]) != unsupervised:
            continue
        if ratios is not None and float(record["imbalance_ratio"]) not in ratios:
            continue
        kept.append(record)
    return kept


def group_records(records: Iterable[dict]) -> dict[GroupKey, dict[int, list[dict]]]:
    """``{GroupKey: {run: that run's records ordered by labeled count}}``, keys in display order."""
    groups: dict[GroupKey, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        groups[group_key(record)][record["run"]].append(record)
    ordered = {}
    for key in sorted(groups, key=display_order):
        runs = groups[key]
        ordered[key] = {run: sorted(runs[run], key=lambda r: (r["labeled"], r["iteration"])) for run in sorted(runs)}
    return ordered


def display_order(key: GroupKey) -> tuple:
    """Sort by imbalance ratio, then acquisition in the order of ``ACQUISITIONS`` (unknown names last), then name,
    rotation-pretrained before random-init."""
    acquisition = _acquisition_or_none(key.config)
    rank = ACQUISITIONS.index(acquisition) if acquisition in ACQUISITIONS else len(ACQUISITIONS)
    return (key.imbalance_ratio, key.config == FULL_TRAIN, rank, key.config, -key.unsupervised)


def split_full_train(groups: dict[GroupKey, dict]) -> tuple[dict[GroupKey, dict], dict[GroupKey, dict]]:
    """``(active-learning groups, full-train groups)``."""
    active = {k: v for k, v in groups.items() if k.config != FULL_TRAIN}
    full = {k: v for k, v in groups.items() if k.config == FULL_TRAIN}
    return active, full


def imbalance_ratios_of(groups: Iterable[GroupKey]) -> list[float]:
    return sorted({key.imbalance_ratio for key in groups})


def pool_size(runs: dict[int, list[dict]]) -> int:
    """The pool size the runs report (the most common value, should runs disagree)."""
    sizes = Counter(record["pool_size"] for records in runs.values() for record in records)
    return sizes.most_common(1)[0][0]


def pool_size_at(groups: dict[GroupKey, dict], imbalance_ratio: float) -> int:
    """The most common pool size over every record at one imbalance ratio."""
    sizes = Counter(record["pool_size"] for key, runs in groups.items() if key.imbalance_ratio == imbalance_ratio
                    for records in runs.values() for record in records)
    return sizes.most_common(1)[0][0]


def completeness_notes(groups: dict[GroupKey, dict[int, list[dict]]]) -> list[str]:
    """One line per active-learning group with fewer runs or iterations than the most complete group."""
    active, _ = split_full_train(groups)
    if not active:
        return []
    most_runs = max(len(runs) for runs in active.values())
    most_iterations = max(r["iteration"] for runs in active.values() for records in runs.values() for r in records)
    notes = []
    for key, runs in active.items():
        problems = []
        if len(runs) < most_runs:
            problems.append(f"{len(runs)} of {most_runs} runs")
        for run, records in runs.items():
            missing = sorted(set(range(1, most_iterations + 1)) - {r["iteration"] for r in records})
            if missing:
                problems.append(f"run {run} lacks iteration{'s' if len(missing) > 1 else ''} "
                                f"{_ranges(missing)} of 1-{most_iterations}")
        if problems:
            notes.append(f"partial results: {group_label(key)}: " + "; ".join(problems))
    return notes


def _ranges(numbers: Sequence[int]) -> str:
    """[2, 3, 4, 7] -> '2-4, 7' (numbers sorted, at least one)."""
    spans = [[numbers[0], numbers[0]]]
    for n in numbers[1:]:
        if n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


# ---------------------------------------------------------------------------------------------------------------
# Curves: mean and sample std over runs at each labeled count

@dataclass(frozen=True)
class CurvePoint:
    """A per-run quantity at one labeled count: its mean and sample std (ddof=1; nan for one run) over runs."""

    labeled: int
    mean: float
    std: float
    runs: int


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std is nan for a single value."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) >= 2 else math.nan
    return float(values.mean()), std


def _curve(runs: dict[int, list[dict]], per_run: Callable[[list[dict]], list[tuple[int, float]]]) -> list[CurvePoint]:
    """Gather ``per_run(records) -> [(labeled, value)]`` over runs into one point per labeled count.

    Values that are nan (undefined for that run and count) are left out of the mean.
    """
    values: dict[int, list[float]] = defaultdict(list)
    for records in runs.values():
        for labeled, value in per_run(records):
            if not math.isnan(value):
                values[labeled].append(value)
    return [CurvePoint(labeled, *mean_std(v), len(v)) for labeled, v in sorted(values.items())]


def metric_value(record: dict, metric: str = "test_accuracy") -> float:
    """The record's accuracy (%) under ``metric``; ``ensemble_test_accuracy`` falls back to ``test_accuracy`` for
    configurations that are not ensembles (where it is null)."""
    value = record.get(metric)
    return float(record["test_accuracy"] if value is None else value)


def accuracy_curve(runs: dict[int, list[dict]], metric: str = "test_accuracy") -> list[CurvePoint]:
    """Accuracy (%) against labeled count, mean and sample std over runs."""
    return _curve(runs, lambda records: [(r["labeled"], metric_value(r, metric)) for r in records])


def selection_entropy(counts: Sequence[int], base: float = math.e) -> float:
    """Shannon entropy of the class distribution of a selection (nats by default; ln C at most for C classes).

    High entropy means balanced selections (TA-VAAL's Figure 7a). Nan when nothing was selected.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(base))


def entropy_curve(runs: dict[int, list[dict]]) -> list[CurvePoint]:
    """Entropy (nats) of each iteration's selected classes against labeled count, mean and std over runs."""
    return _curve(runs, lambda records: [(r["labeled"], selection_entropy(r["selected_class_counts"]))
                                         for r in records])


def rare_share_curve(runs: dict[int, list[dict]], rare_classes: Sequence[int]) -> list[CurvePoint]:
    """Share (%) of rare-class images among all images selected so far, against labeled count.

    Cumulative within each run over its iterations in order; mean and std over runs.
    """
    def per_run(records: list[dict]) -> list[tuple[int, float]]:
        rare = total = 0
        points = []
        for record in records:
            counts = record["selected_class_counts"]
            rare += sum(counts[c] for c in rare_classes if c < len(counts))
            total += sum(counts)
            points.append((record["labeled"], 100.0 * rare / total if total else math.nan))
        return points
    return _curve(runs, per_run)


def selection_histogram(runs: dict[int, list[dict]]) -> tuple[list[int], np.ndarray]:
    """Mean over runs of the selected class counts per iteration: ``(labeled counts [B], counts [B, C])``.

    Rows are labeled counts present in any run; a run missing an iteration does not count toward its mean.
    """
    by_labeled: dict[int, list[list[int]]] = defaultdict(list)
    for records in runs.values():
        for record in records:
            by_labeled[record["labeled"]].append(record["selected_class_counts"])
    labeled = sorted(by_labeled)
    num_classes = max(len(c) for rows in by_labeled.values() for c in rows) if labeled else 0
    counts = np.zeros((len(labeled), num_classes))
    for i, n in enumerate(labeled):
        for row in by_labeled[n]:
            counts[i, :len(row)] += row
        counts[i] /= len(by_labeled[n])
    return labeled, counts


def num_classes_of(groups: dict[GroupKey, dict[int, list[dict]]]) -> int:
    """Number of classes, read from the longest ``selected_class_counts`` or ``per_class_accuracy``."""
    lengths = [len(r.get(name) or []) for runs in groups.values() for records in runs.values() for r in records
               for name in ("selected_class_counts", "per_class_accuracy")]
    return max(lengths, default=0)


# ---------------------------------------------------------------------------------------------------------------
# Tables

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


def summary_table(groups: dict[GroupKey, dict[int, list[dict]]], metric: str = "test_accuracy") -> list[SummaryRow]:
    """One row per (configuration, imbalance ratio, initial model, labeled count), in display order."""
    rows = []
    for key, runs in groups.items():
        pool = pool_size(runs)
        for point in accuracy_curve(runs, metric):
            rows.append(SummaryRow(key.config, key.imbalance_ratio, key.unsupervised, point.labeled,
                                   100.0 * point.labeled / pool, point.mean, point.std, point.runs))
    return rows


@dataclass(frozen=True)
class LabelSaving:
    """Labels a configuration needs to reach the best baseline's final accuracy, and the saving against it.

    ``labels`` is None (and ``saving_percent`` too) when the configuration never reaches ``target``.
    """

    config: str
    imbalance_ratio: float
    unsupervised: int
    baseline: str             # best baseline of this (ratio, initial model): highest final mean accuracy
    target: float             # its final mean accuracy, %
    baseline_labels: float    # labels the baseline needs to first reach target (its final count or fewer)
    labels: float | None      # labels this configuration needs (linear interpolation between counts)
    saving_percent: float | None  # 100 * (1 - labels / baseline_labels): "x% fewer labels"
    best_mean: float          # this configuration's highest mean accuracy, %
    above_at_start: bool      # already above target at its first labeled count: labels is an upper bound


def is_baseline(config: str) -> bool:
    """Everything but the paper's own methods (pcc, pfk, pfk-sum) and the full-train line."""
    return config != FULL_TRAIN and _acquisition_or_none(config) not in OURS


def labels_to_reach(curve: Sequence[CurvePoint], target: float) -> float | None:
    """Smallest labeled count at which the mean accuracy reaches ``target``, interpolating linearly between
    consecutive labeled counts; None if it never does. A curve that starts above target needs its first count."""
    previous = None
    for point in curve:
        if point.mean >= target:
            if previous is None:
                return float(point.labeled)
            fraction = (target - previous.mean) / (point.mean - previous.mean)
            return previous.labeled + fraction * (point.labeled - previous.labeled)
        previous = point
    return None


def label_saving(curves: dict[GroupKey, list[CurvePoint]]) -> list[LabelSaving]:
    """For each (imbalance ratio, initial model): the best baseline's final mean accuracy as target, and for every
    configuration the labels it needs to reach it, as a percentage fewer than the baseline needs.

    ``curves`` maps groups to accuracy curves (``accuracy_curve``); slices without a baseline are left out.
    """
    slices: dict[tuple[float, int], dict[GroupKey, list[CurvePoint]]] = defaultdict(dict)
    for key, curve in curves.items():
        if key.config != FULL_TRAIN and curve:
            slices[(key.imbalance_ratio, key.unsupervised)][key] = curve
    savings = []
    for (ratio, unsupervised), members in sorted(slices.items()):
        baselines = {key: curve for key, curve in members.items() if is_baseline(key.config)}
        if not baselines:
            continue
        best = max(baselines, key=lambda key: baselines[key][-1].mean)  # first of equals, in display order
        target = baselines[best][-1].mean
        baseline_labels = labels_to_reach(baselines[best], target)
        for key, curve in members.items():
            labels = labels_to_reach(curve, target)
            saving = None if labels is None else 100.0 * (1.0 - labels / baseline_labels)
            savings.append(LabelSaving(key.config, ratio, unsupervised, best.config, target, baseline_labels,
                                       labels, saving, max(p.mean for p in curve), curve[0].mean > target))
    return savings


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
        rows.append(CostRow(key.config, key.imbalance_ratio, key.unsupervised, *query, *train, len(records)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Names

@dataclass(frozen=True)
class ConfigName:
    """A parsed configuration name; fields a name does not give are None."""

    acquisition: str
    pseudo_label: str | None = None
    L: int | None = None  # descriptor length (taps)
    E: int | None = None  # ensemble members
    K: int | None = None  # stochastic passes (MC dropout)


def parse_config(name: str) -> ConfigName:
    """Read ``{acquisition}[-{pseudo_label}][-L{L}][-E{E}][-K{K}]`` with the grammar of
    ``fkal.config.parse_config``; raise ValueError for anything else."""
    try:
        cfg = config.parse_config(name, ACQUISITIONS)
    except UserError as e:
        raise ValueError(str(e)) from None
    return ConfigName(cfg.acquisition, cfg.pseudo_label, cfg.L, cfg.E if cfg.E > 1 else None, cfg.K)


def _acquisition_or_none(config: str) -> str | None:
    try:
        return parse_config(config).acquisition
    except ValueError:
        return None


def paper_notation(config: str) -> str:
    """The paper's notation, e.g. ``R_zg, S=p^(y,z), L=80`` for ``pfk-phat-L80``; the name itself if unknown."""
    if config == FULL_TRAIN:
        return "all train"
    try:
        name = parse_config(config)
    except ValueError:
        return config
    parts = [_ACQUISITION_NOTATION[name.acquisition]]
    if name.pseudo_label:
        parts.append(_PSEUDO_LABEL_NOTATION[name.pseudo_label])
    parts += [f"{letter}={value}" for letter, value in (("L", name.L), ("E", name.E), ("K", name.K)) if value]
    return ", ".join(parts)


def legend_name(config: str, unsupervised: int) -> str:
    """``pfk-phat-L80  (R_zg, S=p^(y,z), L=80)``; ``random``; ``random  (θ_rnd)`` for random-init models."""
    notation = paper_notation(config)
    parts = [notation] if notation != config else []
    if not unsupervised:
        parts.append(RANDOM_INIT_MARK)
    return f"{config}  ({', '.join(parts)})" if parts else config


def format_ratio(ratio: float) -> str:
    """100.0 -> '100', 0.5 -> '0.5'."""
    return f"{ratio:g}"


def group_label(key: GroupKey) -> str:
    """``pcc-L20 (IR=100, θ_rnd)``: names a group in notes and tables."""
    init = RANDOM_INIT_MARK if not key.unsupervised else "rotation-pretrained"
    return f"{key.config} (IR={format_ratio(key.imbalance_ratio)}, {init})"


# ---------------------------------------------------------------------------------------------------------------
# Text output (Markdown for the terminal and the .md file, CSV)

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
                table[(row.config, row.unsupervised)][row.labeled] = _cell(row.mean, row.std, row.runs)
            header = ["configuration"] + [f"{n} ({percent[n]:.3g}%)" for n in columns]
            body = [[legend_name(config, unsupervised)] + [cells.get(n, "–") for n in columns]
                    for (config, unsupervised), cells in table.items()]
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
                body.append([legend_name(s.config, s.unsupervised), f"not reached (best {s.best_mean:.2f}%)", "–"])
            else:  # above target from the first count on: it may need fewer labels than that count
                at_most, at_least = ("≤ ", "≥ ") if s.above_at_start else ("", "")
                body.append([legend_name(s.config, s.unsupervised), f"{at_most}{s.labels:.0f}",
                             f"{at_least}{s.saving_percent:.1f}%"])
        lines += _markdown_table(["configuration", "labels to reach target", "fewer labels than baseline"], body)
        lines += [""]
    return "\n".join(lines)


def format_cost_markdown(rows: Sequence[CostRow]) -> str:
    """Query and training seconds per iteration, per group."""
    lines = ["## Seconds per iteration", "", "Mean ± sample std over iterations 2 and later of all runs "
             "(iteration 1 of the uncertainty and VAAL-type baselines is random).", ""]
    body = [[legend_name(r.config, r.unsupervised), format_ratio(r.imbalance_ratio),
             _cell(r.query_mean, r.query_std, r.iterations, 3), _cell(r.train_mean, r.train_std, r.iterations, 1)]
            for r in rows]
    lines += _markdown_table(["configuration", "IR", "query s (iterations)", "train s (iterations)"], body)
    return "\n".join(lines + [""])


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
