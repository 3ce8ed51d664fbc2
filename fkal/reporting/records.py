"""Results records: read and validate ``results.jsonl`` lines, filter and group them.

Every run appends to ``{out}/{DATASET}/run{r}/results.jsonl`` one JSON object per completed active-learning
iteration (``fkal.record.Record``; a line lacking one of ``RECORD_FIELDS`` is skipped); ``run.py --full-train``
adds one ``full-train`` line (iteration 0, labeled = the whole pool). Records are grouped by ``GroupKey``
(configuration, imbalance ratio, initial model), and within a group by run.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..record import FULL_TRAIN_FIELDS, RECORD_FIELDS
from ..settings import comparable, differences, flag_of, flatten, value_of
from .names import ACQUISITIONS, FULL_TRAIN, RANDOM_INIT_MARK, acquisition_of, format_ratio


# --dataset value -> folder name under --out.
DATASET_DIRS = {"mnist": "MNIST", "svhn": "SVHN", "imagenet": "ImageNet", "cifar10": "CIFAR10", "cifar100": "CIFAR100",
                "caltech101": "Caltech101", "caltech101-bg": "Caltech101-bg"}

# Classes that the bias decimates, per dataset (docs/protocol.md, "The bias": MNIST and SVHN keep few images of 5-9).
# ImageNet decimates 500 random classes and CIFAR-10 depends on its split: give those on the command line.
DEFAULT_RARE_CLASSES = {"mnist": tuple(range(5, 10)), "svhn": tuple(range(5, 10))}

# What run_plot.py can draw and tabulate: fields of a record, in percent (fkal/metrics.py defines the imbalance
# metrics). ``test_accuracy`` is the kept epoch's (the final one, or the one best on D_v with --epoch-selection val),
# ``final_test_accuracy`` the last epoch's in either case.
METRICS = ("test_accuracy", "ensemble_test_accuracy", "final_test_accuracy", "val_accuracy", "balanced_accuracy",
           "macro_f1", "worst_class_accuracy", "rare_class_accuracy", "per_class_accuracy_std")
LOWER_IS_BETTER = ("per_class_accuracy_std",)   # no label saving for these: a target is something to reach
EPOCH_SELECTIONS = ("final", "val")

_INT_FIELDS = ("run", "seed", "iteration", "labeled", "pool_size")
_NUMBER_FIELDS = ("imbalance_ratio", "test_accuracy", "query_seconds", "train_seconds")
_NULLABLE_NUMBER_FIELDS = ("ensemble_test_accuracy", "pseudo_label_accuracy")


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


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


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
    if "per_class_accuracy" in required:       # nan: a class with no test image (a small or sliced test set)
        accuracies = record["per_class_accuracy"]
        if not isinstance(accuracies, list) or not all(_is_number(a) or _is_nan(a) for a in accuracies):
            return "per_class_accuracy is not a list of numbers"
    return None


def record_key(record: dict) -> tuple:
    """What identifies one line: (config, imbalance ratio, unsupervised, settings id, run, iteration)."""
    return (record["config"], float(record["imbalance_ratio"]), int(record["unsupervised"]),
            record.get("settings_id"), record["run"], record["iteration"])


@dataclass(frozen=True)
class GroupKey:
    """One curve: a configuration at an imbalance ratio from one initial model (1: rotation-pretrained), made
    with one set of settings (``settings_id``; None for records that carry no settings). ``variant`` names what
    sets this curve apart when the same configuration was run with other settings too (else empty)."""

    config: str
    imbalance_ratio: float
    unsupervised: int
    settings_id: str | None = None
    variant: str = ""

    @property
    def name(self) -> str:
        """The configuration, with its variant: ``pfk-phat-L80 [--epochs 10]``."""
        return f"{self.config} [{self.variant}]" if self.variant else self.config


def group_key(record: dict) -> GroupKey:
    return GroupKey(record["config"], float(record["imbalance_ratio"]), int(record["unsupervised"]),
                    record.get("settings_id"))


def epoch_selection_of(record: dict) -> str:
    """How the record's model was chosen among the epochs: "final" or "val" (``run.py --epoch-selection``).
    Records written before the option existed, and full-train lines, kept the final epoch."""
    return record.get("epoch_selection") or "final"


def filter_records(records: Iterable[dict], only: Sequence[str] | None = None, unsupervised: int | None = None,
                   imbalance_ratios: Sequence[float] | None = None,
                   epoch_selection: str | None = None, runs: Sequence[int] | None = None) -> list[dict]:
    """Records of the named configurations (full-train lines are always kept), initial model, ratios, epoch
    selection (full-train lines are kept for either: they train to the end and choose no epoch) and runs.

    ``None`` means no restriction.
    """
    ratios = None if imbalance_ratios is None else {float(r) for r in imbalance_ratios}
    run_set = None if runs is None else {int(r) for r in runs}
    kept = []
    for record in records:
        full = record["config"] == FULL_TRAIN
        if run_set is not None and int(record["run"]) not in run_set:
            continue
        if only is not None and record["config"] not in only and not full:
            continue
        if unsupervised is not None and int(record["unsupervised"]) != unsupervised:
            continue
        if ratios is not None and float(record["imbalance_ratio"]) not in ratios:
            continue
        if epoch_selection is not None and not full and epoch_selection_of(record) != epoch_selection:
            continue
        kept.append(record)
    return kept


def records_with(records: Iterable[dict], metric: str) -> tuple[list[dict], list[str]]:
    """``(records that carry metric, one note per configuration whose records lack it)``.

    ``ensemble_test_accuracy`` is null for a single model and falls back to ``test_accuracy`` (kept); any other
    metric that is absent or null (records written before it was recorded; ``rare_class_accuracy`` without rare
    classes) leaves the record out.
    """
    kept, lacking = [], Counter()
    for record in records:
        if metric == "ensemble_test_accuracy" or _is_number(record.get(metric)):
            kept.append(record)
        else:
            lacking[record["config"]] += 1
    notes = [f"--metric {metric}: {n} record{'s' if n > 1 else ''} of {config} "
             f"{'lack it and are' if n > 1 else 'lacks it and is'} left out" for config, n in sorted(lacking.items())]
    return kept, notes


def group_records(records: Iterable[dict]) -> dict[GroupKey, dict[int, list[dict]]]:
    """``{GroupKey: {run: that run's records ordered by labeled count}}``, keys in display order.

    Records made with different settings (``settings_id``) are never put into one group: a configuration run
    with several settings gets one group per settings, each named by what sets it apart (``GroupKey.variant``).
    """
    groups: dict[GroupKey, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        groups[group_key(record)][record["run"]].append(record)
    groups = _with_variants(groups)
    ordered = {}
    for key in sorted(groups, key=display_order):
        runs = groups[key]
        ordered[key] = {run: sorted(runs[run], key=lambda r: (r["labeled"], r["iteration"])) for run in sorted(runs)}
    return ordered


def display_order(key: GroupKey) -> tuple:
    """Sort by imbalance ratio, then acquisition in the order of ``ACQUISITIONS`` (unknown names last), then name,
    rotation-pretrained before random-init."""
    acquisition = acquisition_of(key.config)
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


def dataset_size(runs: dict[int, list[dict]]) -> int:
    """|D| of the paper's figures: the size of the pool before the imbalance (the records' ``settings.train_size``;
    MNIST 50,000, so that P = 125 is 0.25% at every imbalance ratio). Records without settings give their pool
    size after the imbalance instead (the most common value, should runs disagree)."""
    sizes = Counter((record.get("settings") or {}).get("train_size") or record["pool_size"]
                    for records in runs.values() for record in records)
    return sizes.most_common(1)[0][0]


def dataset_size_at(groups: dict[GroupKey, dict], imbalance_ratio: float) -> int:
    """``dataset_size`` over every group at one imbalance ratio."""
    return dataset_size({i: records for i, records in enumerate(
        records for key, runs in groups.items() if key.imbalance_ratio == imbalance_ratio
        for records in runs.values())})


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


def group_label(key: GroupKey) -> str:
    """``pcc-L20 (IR=100, θ_rnd)``: names a group in notes and tables."""
    init = RANDOM_INIT_MARK if not key.unsupervised else "rotation-pretrained"
    return f"{key.config} (IR={format_ratio(key.imbalance_ratio)}, {init})"


def _with_variants(groups: dict[GroupKey, dict]) -> dict[GroupKey, dict]:
    """Name, in ``variant``, the settings that tell apart the groups of one configuration (same ratio and initial
    model) made with different settings: ``--epochs 10`` beside ``--epochs 50``."""
    siblings: dict[tuple, list[GroupKey]] = defaultdict(list)
    for key in groups:
        siblings[(key.config, key.imbalance_ratio, key.unsupervised)].append(key)
    renamed = {}
    for keys in siblings.values():
        if len(keys) == 1:
            renamed[keys[0]] = groups[keys[0]]
            continue
        settings = {key: settings_of(groups[key]) for key in keys}
        differing = sorted({name for a in keys for b in keys if a != b
                            for name, _, _ in differences(settings[a] or {}, settings[b] or {})})
        for key in keys:
            if settings[key] is None:
                variant = "settings not recorded"
            else:
                flat = flatten(settings[key])
                variant = ", ".join(f"{flag_of(name)} {value_of(flat, name)}" for name in differing[:3])
                variant += f", +{len(differing) - 3} more" if len(differing) > 3 else ""
            renamed[GroupKey(key.config, key.imbalance_ratio, key.unsupervised, key.settings_id,
                             variant or key.settings_id or "")] = groups[key]
    return renamed


def settings_of(runs: dict[int, list[dict]]) -> dict | None:
    """The settings a group's records carry, without the seed (the one setting its runs differ in)."""
    for records in runs.values():
        for record in records:
            if isinstance(record.get("settings"), dict):
                return {k: v for k, v in record["settings"].items() if k != "seed"}
    return None


# Settings that may differ between a configuration and the random baseline it is paired with.
_PAIRING_IGNORES = ("config", "seed", "options", "loss_module_all")


def baseline_key(groups: dict[GroupKey, dict[int, list[dict]]], key: GroupKey,
                 baseline: str = "random") -> GroupKey | None:
    """The ``baseline`` group that ``key`` is compared with run by run (TA-VAAL's Figures 3-4): the same
    imbalance ratio and initial model, and the same settings but for the configuration, its own options, the seed
    and ``--loss-module-all`` (records without settings pair with records without settings). None if there is
    none."""
    mine = _comparable_settings(groups[key])
    for other, runs in groups.items():
        if (other.config == baseline and other.imbalance_ratio == key.imbalance_ratio
                and other.unsupervised == key.unsupervised and _comparable_settings(runs) == mine):
            return other
    return None


def _comparable_settings(runs: dict[int, list[dict]]) -> dict | None:
    settings = settings_of(runs)
    if settings is None:
        return None
    # comparable: a setting recorded only by later code (``fkal.settings.ADDED_LATER``) at its earlier value, e.g.
    # world_size 1, pairs with records written before it existed, as it does for resume and for the table rows
    return {k: v for k, v in comparable(settings).items() if k.split(".", 1)[0] not in _PAIRING_IGNORES}


def rare_classes_in(groups: dict[GroupKey, dict[int, list[dict]]]) -> list[int] | None:
    """The rare classes every record names (``rare_classes``), if they all name the same non-empty set; else
    None."""
    found = {tuple(r.get("rare_classes") or ()) for runs in groups.values() for records in runs.values()
             for r in records if r.get("config") != FULL_TRAIN}
    return list(found.pop()) if len(found) == 1 and () not in found else None
