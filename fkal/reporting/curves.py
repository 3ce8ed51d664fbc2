"""Curves over runs and the label saving read off them.

Accuracies are percentages; a "curve" is a list of ``CurvePoint``, one per labeled count, holding the mean and the
sample std (ddof=1) of a per-run quantity over the runs that have that count.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .names import FULL_TRAIN, OURS, acquisition_of
from .records import GroupKey


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


def improvement_curve(runs: dict[int, list[dict]], baseline: dict[int, list[dict]],
                      metric: str = "test_accuracy") -> list[CurvePoint]:
    """Accuracy minus the baseline's accuracy in the same run (trial) at the same labeled count, in points; mean
    and sample std over the runs both have (TA-VAAL's Figures 3-4: improvement over random sampling, paired by
    trial). Counts the baseline lacks in a run are left out of that run."""
    base = {(run, r["labeled"]): metric_value(r, metric) for run, records in baseline.items() for r in records}
    return _curve(runs, lambda records: [(r["labeled"], metric_value(r, metric) - base[(r["run"], r["labeled"])])
                                         for r in records if (r["run"], r["labeled"]) in base])


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
    variant: str = ""         # what sets this row apart from other settings of the same configuration


def is_baseline(config: str) -> bool:
    """Everything but the paper's own methods (pcc, pfk, pfk-sum) and the full-train line."""
    return config != FULL_TRAIN and acquisition_of(config) not in OURS


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
            savings.append(LabelSaving(key.config, ratio, unsupervised, best.name, target, baseline_labels,
                                       labels, saving, max(p.mean for p in curve), curve[0].mean > target,
                                       key.variant))
    return savings
