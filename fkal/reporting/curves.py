"""Curves over runs and the label saving read off them.

Accuracies are percentages; a "curve" is a list of ``CurvePoint``, one per labeled count, holding the mean and the
sample std (ddof=1) of a per-run quantity over the runs that have that count. Label saving is read off mean curves
against each baseline (``label_saving``) or against the pointwise best of all other configurations
(``saving_vs_best``), with bootstrap intervals over runs.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from .names import FULL_TRAIN, OURS, RANDOM_INIT_MARK, acquisition_of, format_ratio
from .records import LOWER_IS_BETTER, GroupKey, dataset_size


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


# ----------------------------------------------------------------------------------------------------------------
# Label saving against the pointwise best of all other configurations, with a bootstrap over runs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavingVsBest:
    """One configuration C at one labeled count n against the best of all other configurations there.

    ``labels`` is None where C's mean curve never reaches ``best_value``; an interval end of inf (labels) or -inf
    (saving) means that in more than 2.5% of the resamples C's mean curve did not reach the resampled best.
    """

    config: str                     # C (its name with the variant, ``GroupKey.name``)
    labeled: int                    # n
    best_other: str | None          # the other configuration with the highest mean at n (first of equals)
    best_value: float               # its mean at n, %; nan where no other configuration has n
    best_runs: int                  # its runs that have n
    value: float                    # C's mean at n, %; nan where C has no record at n
    runs: int                       # C's runs
    labels: float | None            # labels C's mean curve needs to reach best_value (None: it never does)
    labels_low: float | None
    labels_high: float | None
    above_at_start: bool            # C is at or above best_value from its first count: labels is an upper bound
    reached_share: float            # share of resamples in which C's mean curve reaches the resampled best
    saving_percent: float | None    # 100 (1 - labels / n): "x% fewer labels than the best other needs"
    saving_low: float | None
    saving_high: float | None
    worst_class: float              # C's mean worst-class accuracy at n, % (nan where not recorded)
    best_worst_class: float         # the best other's mean worst-class accuracy at n, %
    imbalance_ratio: float = math.nan   # filled in by ``saving_vs_best_table``
    unsupervised: int = 1
    paired: bool = True             # every configuration had the same runs: all resampled with the same draws


def saving_vs_best(values: dict[str, dict[int, dict[int, float]]], config: str,
                   worst_class: dict[str, dict[int, dict[int, float]]] | None = None,
                   resamples: int = RESAMPLES, seed: int = 0) -> list[SavingVsBest]:
    """Label saving of ``config`` (C) against the pointwise best of all other configurations of ``values``.

    ``values[name][run][n]`` is a configuration's metric (%, higher is better) in one run at labeled count n.
    For every n that any configuration has, in increasing order, one row (none where no other configuration has n):

      best other   the other configuration with the largest mean over its runs at n (the first in ``values``'
                   order among equals); ``best_value`` that mean
      labels       the smallest labeled count at which C's mean curve (mean over C's runs at each count) reaches
                   ``best_value``, interpolating linearly between consecutive counts of C (``labels_to_reach``:
                   a curve at or above it from its first count needs its first count, ``above_at_start``); None
                   where C's mean curve never reaches it
      saving       100 * (1 - labels / n), in percent: how many fewer labels than n C needs to match the best
                   other configuration at n (negative: more); None where labels is None

    Intervals: [2.5%, 97.5%] percentiles of ``resamples`` bootstrap resamples, from
    ``numpy.random.default_rng(seed)``. Each resample draws C's runs and every other configuration's runs with
    replacement (configurations with the same set of runs share the draws, as ``label_saving`` does: run r of
    every configuration starts from the same split and initial model), recomputes every mean curve, the
    pointwise best of the others and C's labels; a resample in which C's mean curve never reaches the best counts
    as labels inf and saving -inf ("not reached"). A resample in which no drawn run of the others has n is left
    out. No interval where the headline is undefined.

    ``worst_class`` (same shape, e.g. ``worst_class_accuracy``) gives C's and the best other's mean at n beside
    (nan where absent), so that "no lower worst class" can be read. Raise ValueError if ``config`` is not in
    ``values``.
    """
    if config not in values:
        raise ValueError(f"{config!r} is not among the configurations {', '.join(values)}")
    names = list(values)
    matrices = {name: _values_matrix(values[name]) for name in names}
    grid = np.unique(np.concatenate([m.labeled for m in matrices.values()] + [np.zeros(0, dtype=int)]))
    matrices = {name: _on_grid(m, grid) for name, m in matrices.items()}
    others = [name for name in names if name != config]
    rng = np.random.default_rng(seed)
    draws = {runs: rng.integers(0, len(runs), size=(resamples, len(runs)))              # [B, R] per set of runs
             for runs in sorted({m.runs for m in matrices.values()})}
    mean = {name: mean_rows(m.values, np.arange(len(m.runs))[None])[0] for name, m in matrices.items()}   # [G]
    boot = {name: mean_rows(m.values, draws[m.runs]) for name, m in matrices.items()}                     # [B, G]
    best, best_value, best_boot = _pointwise_best(others, mean, boot, grid)
    worst = {name: _mean_at((worst_class or {}).get(name, {})) for name in names}                  # {n: mean}
    counts = {name: {n: len(v) for n, v in _gather(values[name]).items()} for name in names}      # {n: runs}
    paired = len({m.runs for m in matrices.values()}) == 1
    rows = []
    for g, n in enumerate(grid.tolist()):
        if best[g] is None:
            continue
        target = best_value[g]
        key_boot = labels_to_reach_rows(grid, boot[config], np.nan_to_num(best_boot[:, g], nan=np.inf))      # [B]
        key_boot = np.where(np.isnan(best_boot[:, g]), np.nan, key_boot)
        labels = _reach(grid, mean[config], target)
        with np.errstate(invalid="ignore"):
            saving_boot = 100.0 * (1.0 - key_boot / n)                                  # inf labels -> -inf
        saving = None if labels is None else 100.0 * (1.0 - labels / n)
        defined = key_boot[~np.isnan(key_boot)]
        rows.append(SavingVsBest(
            config, n, best[g], float(target), counts[best[g]].get(n, 0), float(mean[config][g]),
            len(matrices[config].runs), labels, *_band(key_boot, labels), bool(_first(mean[config]) >= target),
            float(np.isfinite(defined).mean()) if len(defined) else math.nan, saving, *_band(saving_boot, saving),
            worst[config].get(n, math.nan), worst[best[g]].get(n, math.nan), paired=paired))
    return rows


def _values_matrix(runs: dict[int, dict[int, float]]) -> RunMatrix:
    """``{run: {labeled: value}}`` as a ``RunMatrix`` (nan where a run lacks a count or its value is nan)."""
    grid = sorted({n for counts in runs.values() for n in counts})
    column = {n: g for g, n in enumerate(grid)}
    values = np.full((len(runs), len(grid)), np.nan)
    for i, counts in enumerate(runs.values()):
        for n, value in counts.items():
            values[i, column[n]] = value
    return RunMatrix(tuple(runs), np.asarray(grid, dtype=int), values)


def _pointwise_best(others: Sequence[str], mean: dict[str, np.ndarray], boot: dict[str, np.ndarray],
                    grid: np.ndarray) -> tuple[list[str | None], np.ndarray, np.ndarray]:
    """``(name of the best other per count [G] (None: no other has it), its mean [G], the best mean of each
    resample [B, G] (nan where no drawn run of the others has the count))``; ties go to the first in order."""
    if not others:
        return [None] * len(grid), np.full(len(grid), np.nan), np.full((0, len(grid)), np.nan)
    stacked = np.stack([mean[name] for name in others])                                  # [O, G]
    filled = np.where(np.isnan(stacked), -np.inf, stacked)
    index = filled.argmax(0)                                                              # first of equals
    have = ~np.isnan(stacked).all(0)
    names = [others[i] if ok else None for i, ok in zip(index.tolist(), have.tolist())]
    value = np.where(have, filled[index, np.arange(len(grid))], np.nan)
    boot_best = np.fmax.reduce(np.stack([boot[name] for name in others]), axis=0)       # [B, G], nan: none
    return names, value, boot_best


def _gather(runs: dict[int, dict[int, float]]) -> dict[int, list[float]]:
    """``{labeled: [the value of each run that has it]}`` of ``{run: {labeled: value}}``, nan values left out."""
    gathered: dict[int, list[float]] = defaultdict(list)
    for counts in runs.values():
        for n, value in counts.items():
            if not math.isnan(value):
                gathered[n].append(value)
    return gathered


def _mean_at(runs: dict[int, dict[int, float]]) -> dict[int, float]:
    """``{labeled: mean over the runs that have it}`` of ``{run: {labeled: value}}``."""
    return {n: float(np.mean(v)) for n, v in _gather(runs).items()}


def run_values(runs: dict[int, list[dict]], metric: str) -> dict[int, dict[int, float]]:
    """A group's ``{run: {labeled: metric}}`` (records that lack the metric left out): the input of
    ``saving_vs_best``."""
    return {run: {r["labeled"]: value for r in records if not math.isnan(value := metric_value(r, metric))}
            for run, records in runs.items()}


def saving_vs_best_table(groups: dict[GroupKey, dict[int, list[dict]]], configs: Sequence[str],
                         metric: str = "test_accuracy", resamples: int = RESAMPLES,
                         seed: int = 0) -> tuple[list[SavingVsBest], list[str]]:
    """``(rows, notes)``: ``saving_vs_best`` of every group named in ``configs`` (its configuration, or its name
    with the variant) against the groups of all other configurations at the same imbalance ratio and initial
    model, one group per settings as in every table (groups made with other settings are separate rows, never
    averaged together; the other settings of C's own configuration are not among the others). Worst-class
    accuracy beside. Raise UserError naming a configuration that is in no group, with those present."""
    active = {key: runs for key, runs in groups.items() if key.config != FULL_TRAIN and runs}
    present = list(dict.fromkeys(key.config for key in active))
    for name in configs:
        if not any(name in (key.config, key.name) for key in active):
            raise UserError(f"--saving-vs-best {name}: no such configuration in the records (present: "
                            f"{', '.join(present)})")
    if metric in LOWER_IS_BETTER:
        return [], [f"no saving against the best for --metric {metric}: lower is better, there is no value to reach"]
    rows, notes = [], []
    for key in active:
        if not any(name in (key.config, key.name) for name in configs):
            continue
        others = [k for k in active if (k.imbalance_ratio, k.unsupervised) == (key.imbalance_ratio, key.unsupervised)
                  and k.config != key.config]
        if not others:
            init = "rotation-pretrained" if key.unsupervised else RANDOM_INIT_MARK
            notes.append(f"--saving-vs-best {key.name}: no other configuration at "
                         f"IR={format_ratio(key.imbalance_ratio)} ({init})")
            continue
        members = [key] + others
        values = {k.name: run_values(active[k], metric) for k in members}
        worst = {k.name: run_values(active[k], "worst_class_accuracy") for k in members}
        rows += [replace(row, imbalance_ratio=key.imbalance_ratio, unsupervised=key.unsupervised)
                 for row in saving_vs_best(values, key.name, worst, resamples, seed)]
    return rows, notes


def saving_vs_best_text(resamples: int, seed: int, metric: str) -> str:
    """What the tables of ``format_saving_vs_best_markdown`` hold (the paragraph above them)."""
    return (
        f"For each named configuration C, at every labeled count n: the best other, the configuration with the "
        f"largest mean {metric.replace('_', ' ')} over runs at n among all other configurations of the same "
        "imbalance ratio and initial model (each settings a row of its own, as in every table), and its value; "
        "C's value at n; the labels C's mean curve needs to reach the best other's value (linear interpolation "
        "between labeled counts; '≤' where C is at or above it from its first count); the saving "
        "100 x (1 - labels / n), in percent (negative: C needs more labels), with a 95% interval: [2.5%, 97.5%] "
        f"percentiles of a bootstrap over runs ({resamples} resamples, seed {seed}; each resample draws every "
        "configuration's runs with replacement, configurations with the same runs with the same draws, and "
        "recomputes the mean curves, the best other and C's labels). −∞: in more than 2.5% of the resamples C's "
        "mean curve did not reach the best. Worst class: the mean worst-class accuracy over runs (%) of C / of "
        "the best other at n.")


def format_saving_vs_best_markdown(rows: Sequence[SavingVsBest], resamples: int, seed: int,
                                   metric: str = "test_accuracy") -> str:
    """One table per (imbalance ratio, initial model, C): a row per labeled count."""
    lines = [f"## Label saving against the best of the others ({metric.replace('_', ' ')})", "",
             saving_vs_best_text(resamples, seed, metric), ""]
    header = ["labeled", "best other", "its value", "C's value", "labels C needs", "saving % [95% CI]",
              "worst class C / best other"]
    tables: dict[tuple, list[SavingVsBest]] = defaultdict(list)
    for row in rows:
        tables[(row.imbalance_ratio, row.unsupervised, row.config)].append(row)
    for (ratio, unsupervised, config), at in tables.items():
        init = "rotation-pretrained" if unsupervised else RANDOM_INIT_MARK
        runs = f"{at[0].runs} run{'s' if at[0].runs != 1 else ''}" + ("" if at[0].paired else ", unpaired")
        body = [[str(r.labeled), r.best_other or "–", _percent(r.best_value), _percent(r.value),
                 _versus_labels_cell(r), _versus_saving_cell(r),
                 f"{_percent(r.worst_class, 1)} / {_percent(r.best_worst_class, 1)}"] for r in at]
        lines += [f"### IR={format_ratio(ratio)}, {init}: C = {config} ({runs})", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body] + [""]
    return "\n".join(lines)


def _percent(value: float, digits: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _bound(value: float | None, digits: int = 1) -> str:
    """An interval end: '12.3', '∞', '−∞'."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if math.isfinite(value) else ("∞" if value > 0 else "−∞")


def _versus_labels_cell(row: SavingVsBest) -> str:
    """'183 [150, 250]'; '≤ 100 [100, 100]'; 'not reached (in 40% of resamples)'."""
    if row.labels is None:
        share = (f" (reached in {100 * row.reached_share:.0f}% of resamples)"
                 if row.reached_share > 0 else "")
        return "not reached" + share
    bound = "≤ " if row.above_at_start else ""
    return f"{bound}{row.labels:.0f} [{_bound(row.labels_low, 0)}, {_bound(row.labels_high, 0)}]"


def _versus_saving_cell(row: SavingVsBest) -> str:
    """'8.3% [−25.0, 33.3]'; '≥ 0.0% [...]' where C is at the value from its first count; 'not reached'."""
    if row.saving_percent is None:
        return "not reached"
    bound = "≥ " if row.above_at_start else ""
    return f"{bound}{row.saving_percent:.1f}% [{_bound(row.saving_low)}, {_bound(row.saving_high)}]"
