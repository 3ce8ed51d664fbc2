"""One results record, the schema in one place: what ``run.py`` appends to ``results.jsonl`` for every completed
active-learning iteration (and ``run.py --full-train`` once per run and IR), what ``run_plot.py`` reads back.

Field names are a contract other tools read (pandas ``read_json(lines=True)``, jq): fields are added, never renamed.
``Record.to_json`` gives the line's object (the fields below, and at the top level the acquisition's own fields,
``QueryResult.extras``, e.g. ``pool_features``, ``handover_share``); ``fkal.io.append_jsonl`` writes it with its keys
sorted.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from .metrics import METRIC_FIELDS


@dataclass
class Record:
    """One line of ``results.jsonl``. Accuracies are percent of the test set; seconds are wall-clock."""

    config: str                             # the configuration name (``pfk-phat-L80``; ``full-train``)
    dataset: str                            # ``--dataset``
    protocol: str                           # ``--protocol``
    run: int                                # run index r (``{out}/{DATASET}/run{r}``)
    seed: int                               # the run's seed
    imbalance_ratio: float                  # IR
    unsupervised: int                       # 1: rotation-pretrained initial model, 0: random weights
    iteration: int                          # b (1-based; 0 for full-train)
    labeled: int                            # labeled images after this iteration
    pool_size: int                          # |D|: the biased pool's images (not P; P is ``query_size``)
    test_accuracy: float                    # the kept model's (``--epoch-selection``), mean over members
    ensemble_test_accuracy: Optional[float]  # the members' averaged softmax (None for one member)
    per_class_accuracy: list                # [C], mean over members
    selected_class_counts: list             # [C] true classes of this iteration's picks (the pool for full-train)
    pseudo_label_accuracy: Optional[float]  # of the pool's pseudo-labels, where the acquisition used any
    query_seconds: float
    train_seconds: float
    epochs: int                             # training epochs per iteration
    query_size: int                         # P: the images this iteration labeled
    epoch_selection: Optional[str] = None   # "final" or "val" (None for full-train)
    chosen_epochs: Optional[list] = None    # [E] the epoch each member kept
    final_test_accuracy: Optional[float] = None  # the last epoch's, whatever was kept
    val_accuracy: Optional[float] = None    # the kept model's on D_v (None without D_v)
    balanced_accuracy: Optional[float] = None    # the imbalance metrics (``fkal.metrics``)
    macro_f1: Optional[float] = None
    worst_class_accuracy: Optional[float] = None
    worst_class: Optional[int] = None
    best_class_accuracy: Optional[float] = None
    per_class_accuracy_std: Optional[float] = None
    rare_class_accuracy: Optional[float] = None
    labeled_min_class_count: Optional[int] = None
    labeled_max_class_count: Optional[int] = None
    pseudo_label_rare_precision: Optional[float] = None
    pseudo_label_rare_recall: Optional[float] = None
    pseudo_label_rare_count: Optional[int] = None
    rare_classes: Optional[list] = None
    world_size: int = 1                     # processes (torchrun)
    extras: dict = field(default_factory=dict)   # the acquisition's own fields, written at the top level
    settings: dict = field(default_factory=dict)  # what made it (``fkal.settings``)
    settings_id: str = ""                   # its digest without the seed: one table row per id
    code_version: Optional[str] = None      # ``git describe`` of the code that made it

    def to_json(self) -> dict[str, Any]:
        """The line's JSON object: every field, ``extras`` merged in at the top level (a clash is a ValueError)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extras", "settings",
                                                                                   "settings_id", "code_version")}
        clash = sorted(set(self.extras) & set(out))
        if clash:
            raise ValueError(f"an acquisition's extras {clash} would overwrite fields of the record")
        out.update(self.extras)
        out.update(settings=self.settings, settings_id=self.settings_id, code_version=self.code_version)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Record":
        """A record from a line's object (fields it lacks take their defaults; unknown ones go to ``extras``)."""
        names = {f.name for f in fields(cls)} - {"extras"}
        return cls(**{k: v for k, v in obj.items() if k in names},
                   extras={k: v for k, v in obj.items() if k not in names})


assert set(METRIC_FIELDS) <= {f.name for f in fields(Record)}, "fkal.metrics.METRIC_FIELDS outgrew the record"

# The fields a line must hold to be used (``run_plot.py`` skips a line without one, naming it).
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
ALL_FIELDS = tuple(f.name for f in fields(Record) if f.name != "extras")

__all__ = ["ALL_FIELDS", "FULL_TRAIN_FIELDS", "RECORD_FIELDS", "Record"]
