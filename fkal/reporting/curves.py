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
from .records import GroupKey, dataset_size


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
    """The record's value (%) of ``metric``; ``ensemble_test_accuracy`` falls back to ``test_accuracy`` for
    configurations that are not ensembles (where it is null). Nan where the record lacks the metric (records
    written before it was recorded): such values are left out of every mean (``fkal.reporting.records_with``
    names them)."""
    value = record.get(metric)
    if value is None and metric == "ensemble_test_accuracy":
        value = record["test_accuracy"]
    return math.nan if value is None else float(value)


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


def difference_curve(runs: dict[int, list[dict]], metric: str, other: str) -> list[CurvePoint]:
    """``metric - other`` of the same records (e.g. the kept epoch's test accuracy minus the final epoch's),
    against labeled count: mean and sample std over runs of the per-record difference; records that lack either
    are left out."""
    return _curve(runs, lambda records: [(r["labeled"], metric_value(r, metric) - metric_value(r, other))
                                         for r in records])


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




# ----------------------------------------------------------------------------------------------------------------
# Label saving: labels to reach a target accuracy, on mean curves, with a bootstrap over runs
# ----------------------------------------------------------------------------------------------------------------
FINAL = "final"            # the target "the baseline's final mean accuracy"
INTERVAL = (2.5, 97.5)     # percentiles of the bootstrap distribution: a 95% interval
RESAMPLES = 2000


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


def labels_to_reach_rows(labeled: np.ndarray, means: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``labels_to_reach`` for many curves on one grid at once.

    labeled [G] increasing counts, means [B, G] mean accuracies (nan: the curve has no point there), targets [B]
    -> labels [B] (inf where the curve never reaches its target).
    """
    B, G = means.shape
    valid = ~np.isnan(means)
    reached = valid & (np.nan_to_num(means, nan=-np.inf) >= targets[:, None])          # [B, G]
    ever = reached.any(1)
    first = reached.argmax(1)                                                          # [B] first point at target
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(G), -1), axis=1)      # [B, G] last point <= g
    rows = np.arange(B)
    before = np.where(first > 0, last_valid[rows, np.maximum(first - 1, 0)], -1)       # [B] last point before it
    x1, y1 = labeled[first].astype(float), means[rows, first]
    x0, y0 = labeled[np.maximum(before, 0)].astype(float), means[rows, np.maximum(before, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = x0 + (targets - y0) / (y1 - y0) * (x1 - x0)                          # y0 < target <= y1
    out = np.where(before >= 0, between, x1)
    return np.where(ever, out, np.inf)


@dataclass(frozen=True)
class RunMatrix:
    """A group's per-run curves on one grid: ``values[r, g]`` is run ``runs[r]``'s value at ``labeled[g]`` (nan
    where that run has no record there, or the record lacks the metric)."""

    runs: tuple[int, ...]
    labeled: np.ndarray        # [G]
    values: np.ndarray         # [R, G]


def run_matrix(runs: dict[int, list[dict]], metric: str = "test_accuracy") -> RunMatrix:
    grid = sorted({r["labeled"] for records in runs.values() for r in records})
    column = {n: g for g, n in enumerate(grid)}
    values = np.full((len(runs), len(grid)), np.nan)
    for i, records in enumerate(runs.values()):
        for record in records:
            values[i, column[record["labeled"]]] = metric_value(record, metric)
    return RunMatrix(tuple(runs), np.asarray(grid), values)


def mean_rows(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Mean curves of resampled runs: values [R, G], draws [B, R] run indices -> [B, G], each count's mean over
    the drawn runs that have it (nan where none has)."""
    picked = values[draws]                                                             # [B, R, G]
    have = ~np.isnan(picked)
    total = np.where(have, picked, 0.0).sum(1)
    count = have.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def final_of_rows(means: np.ndarray) -> np.ndarray:
    """The last point of each curve ``[B, G] -> [B]`` (nan-padded curves: the last non-nan value)."""
    valid = ~np.isnan(means)
    last = np.where(valid.any(1), valid.shape[1] - 1 - valid[:, ::-1].argmax(1), 0)
    return means[np.arange(len(means)), last]


def percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The ``INTERVAL`` percentiles of bootstrap values (order statistics, so that +-inf, "not reached", stay
    themselves); None when no value is defined (all nan)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    low, high = np.percentile(values, INTERVAL, method="inverted_cdf")
    return float(low), float(high)


@dataclass(frozen=True)
class LabelSaving:
    """One configuration against one baseline at one target: the labels each needs on its mean curve (linear
    interpolation between labeled counts) and the saving, each with a 95% bootstrap interval over runs.

    Labels are None where the mean curve never reaches the target; an interval end of inf (labels) or -inf
    (saving) means that in more than 2.5% of the resamples the configuration's mean curve did not reach it.
    """

    config: str
    imbalance_ratio: float
    unsupervised: int
    baseline: str                  # the baseline's name (with its variant)
    best_baseline: bool            # the baseline with the highest final mean of this (ratio, initial model)
    target: str                    # "85", "90", "final" (the baseline's final mean accuracy)
    target_value: float            # the target on the mean curves, %
    baseline_labels: float | None  # labels the baseline's mean curve needs
    baseline_low: float | None
    baseline_high: float | None
    labels: float | None           # labels this configuration's mean curve needs
    labels_low: float | None
    labels_high: float | None
    reached_share: float           # share of resamples in which this configuration's mean curve reaches the target
    saving_percent: float | None   # 100 * (1 - labels / baseline_labels): "x% fewer labels"
    saving_low: float | None
    saving_high: float | None
    best_mean: float               # this configuration's highest mean, %
    above_at_start: bool           # at or above target from its first labeled count: labels is an upper bound
    baseline_above_at_start: bool  # the same for the baseline: then no saving is given
    runs: int
    baseline_runs: int
    paired: bool                   # the same runs as the baseline, resampled with the same draws
    dataset_size: int              # |D|, the pool before the imbalance (``records.dataset_size``): labels in %
    variant: str = ""              # what sets this row apart from other settings of the same configuration


def parse_target(text: str) -> str:
    """A ``--targets`` entry: a number in (0, 100] (an accuracy, %) or ``final``; returned as its canonical text."""
    if text == FINAL:
        return FINAL
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"a target is an accuracy in percent or '{FINAL}', not {text!r}") from None
    if not 0 < value <= 100:
        raise ValueError(f"a target accuracy is in (0, 100], not {text}")
    return f"{value:g}"


def label_saving(groups: dict[GroupKey, dict[int, list[dict]]], targets: Sequence[str] = (FINAL,),
                 metric: str = "test_accuracy", baselines: Sequence[str] | None = None,
                 resamples: int = RESAMPLES, seed: int = 0) -> list[LabelSaving]:
    """Label saving of every configuration against every baseline, per (imbalance ratio, initial model).

    ``groups`` are the active-learning groups (full-train lines are left out); ``targets`` accuracies in percent
    (text, e.g. "90") or "final" (each baseline's final mean); ``baselines`` names the configurations to compare
    against (any, e.g. one setting of the method against another; default: every group whose configuration
    ``is_baseline``). Headline numbers are read off
    the mean curves. Their intervals come from a bootstrap over runs: ``resamples`` draws of each group's runs with
    replacement, from ``numpy.random.default_rng(seed)``; groups with the same runs share the draws (run r of every
    configuration has the same split and initial model), so a saving's interval is that of paired runs. In every
    resample the mean curves, the target "final" and the labels are recomputed.
    """
    slices: dict[tuple[float, int], dict[GroupKey, RunMatrix]] = defaultdict(dict)
    for key, runs in groups.items():
        if key.config != FULL_TRAIN and runs:
            m = run_matrix(runs, metric)
            if not np.isnan(m.values).all():
                slices[(key.imbalance_ratio, key.unsupervised)][key] = m
    rows = []
    for (ratio, unsupervised), members in sorted(slices.items()):
        grid = np.unique(np.concatenate([m.labeled for m in members.values()]))      # [G] every count of the slice
        members = {key: _on_grid(m, grid) for key, m in members.items()}
        chosen = [key for key in members if (is_baseline(key.config) if baselines is None
                                             else key.config in baselines or key.name in baselines)]
        if not chosen:
            continue
        rng = np.random.default_rng(seed)
        draws = {runs: rng.integers(0, len(runs), size=(resamples, len(runs)))        # [B, R] per set of runs
                 for runs in sorted({m.runs for m in members.values()})}
        mean = {key: mean_rows(m.values, np.arange(len(m.runs))[None])[0] for key, m in members.items()}   # [G]
        boot = {key: mean_rows(m.values, draws[m.runs]) for key, m in members.items()}                    # [B, G]
        final = {key: float(final_of_rows(mean[key][None])[0]) for key in chosen}
        best = max(chosen, key=lambda key: final[key])                                 # first of equals
        for base in chosen:
            for target in targets:
                value = final[base] if target == FINAL else float(target)
                boot_target = final_of_rows(boot[base]) if target == FINAL else np.full(resamples, value)   # [B]
                base_boot = labels_to_reach_rows(grid, boot[base], boot_target)                           # [B]
                base_labels = _reach(grid, mean[base], value)
                base_above = _first(mean[base]) >= value
                for key, m in members.items():
                    key_boot = labels_to_reach_rows(grid, boot[key], boot_target)                         # [B]
                    labels = _reach(grid, mean[key], value)
                    saving = saving_band = None
                    if labels is not None and base_labels is not None and not base_above:
                        saving = 100.0 * (1.0 - labels / base_labels)
                        with np.errstate(invalid="ignore", divide="ignore"):   # baseline not reached: undefined
                            per_resample = np.where(np.isinf(base_boot), np.nan, 100.0 * (1.0 - key_boot / base_boot))
                        saving_band = percentile_interval(per_resample)
                    rows.append(LabelSaving(
                        key.config, ratio, unsupervised, base.name, base == best, target, value,
                        base_labels, *_band(base_boot, base_labels), labels, *_band(key_boot, labels),
                        float(np.isfinite(key_boot).mean()), saving, *(saving_band or (None, None)),
                        float(np.nanmax(mean[key])), bool(_first(mean[key]) >= value), bool(base_above),
                        len(m.runs), len(members[base].runs), m.runs == members[base].runs,
                        dataset_size(groups[key]), key.variant))
    return rows


def _on_grid(m: RunMatrix, grid: np.ndarray) -> RunMatrix:
    """The same curves on a grid that holds all of ``m.labeled`` (nan where the group has no count)."""
    values = np.full((len(m.runs), len(grid)), np.nan)
    values[:, np.searchsorted(grid, m.labeled)] = m.values
    return RunMatrix(m.runs, grid, values)


def _reach(grid: np.ndarray, mean: np.ndarray, target: float) -> float | None:
    """Labels one mean curve ``[G]`` needs to reach ``target``; None if it never does."""
    labels = labels_to_reach_rows(grid, mean[None], np.array([target]))[0]
    return None if np.isinf(labels) else float(labels)


def _first(mean: np.ndarray) -> float:
    """The first point of a nan-padded curve."""
    return float(mean[~np.isnan(mean)][0])


def _band(boot: np.ndarray, headline: float | None) -> tuple[float | None, float | None]:
    """The bootstrap interval of a headline number, (None, None) where the headline is undefined."""
    band = percentile_interval(boot) if headline is not None else None
    return band or (None, None)
