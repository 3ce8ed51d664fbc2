"""The settings that shape a run's numbers: what every results record and every run folder carries, and what a
resumed run compares before it reuses anything.

Three levels, each a flat-ish JSON dict that contains the one before it:

  split     the dataset (its files' fingerprint), seed, imbalance ratio and rule, label noise, pool and validation
            sizes                                                    -> ``ir{IR}/split.npz``
  initial   + the model and the rotation-pretraining schedule        -> each ``init_*.pt``
  config    + the configuration, the initial model kind, the training schedule, P, the epoch selection, the
            acquisition's own options, the device type and, on CUDA, the determinism and TF32 switches
                                                                     -> ``{config}/settings.json``, every record

The number of iterations B is not among them: iteration b's numbers do not depend on how many follow, so a run
may be extended with a larger ``--iterations``. ``settings_id`` is a short digest of a config-level dict without
its seed, the one setting in which the runs of a table row differ: records with different ids are never averaged
into one row (``fkal.reporting``). Resume compares the whole dicts, seed included.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Optional

# The command-line flag behind each setting, for the message that names a difference.
FLAGS = {
    "dataset": "--dataset", "data": "--data-root (the dataset files differ)", "seed": "--seed",
    "imbalance_ratio": "--imbalance-ratios", "noise_ratio": "--noise-ratio", "train_size": "--train-size",
    "val_size": "--val-size", "model": "the dataset's model", "unsup": "--unsup-epochs", "train": "--epochs/--batch-size",
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "unsup.epochs": "--unsup-epochs",
    "query_size": "--pool-size", "epoch_selection": "--epoch-selection", "taps": "--taps", "device": "--gpu",
    "unsupervised": "--unsupervised", "config": "--only",
    "imbalance": "--imbalance-rule", "imbalance.rule": "--imbalance-rule", "train.lr": "--lr",
    "train.momentum": "--momentum", "train.weight_decay": "--weight-decay", "train.milestones": "--lr-milestones",
    "protocol": "--protocol", "initial_labels": "--initial-labels", "subset_size": "--subset-size",
    "model_per_cycle": "--model-per-cycle", "loss_module_all": "--loss-module-all", "crop_padding": "--crop-padding",
    "world_size": "torchrun --nproc_per_node",
    "eval_batch": "--eval-batch", "standardize": "--standardize", "cuda": "--gpu/--nondeterministic",
}


# Settings added after records began to carry settings, with the value every earlier run had: a stored dict
# without one of them equals a current dict that holds it at this value (flattened names; see ``comparable``).
ADDED_LATER: dict[str, Any] = {
    "taps": "pre",              # --taps: descriptors and Fisher scores before the ReLU (post: the release's choice)
    # fkal.protocols (TA-VAAL's benchmark): the Fisher-kernel protocol's values
    "protocol": "fk",           # --protocol
    "initial_labels": 0,        # --initial-labels: no initial random set, iteration 1 is the acquisition's query
    "subset_size": None,        # --subset-size: every method selects from the whole unlabeled pool
    "model_per_cycle": "warm",  # --model-per-cycle: each iteration trains on from the previous one's model
    "loss_module_all": 0,       # --loss-module-all: only lloss, lloss-v2 and tavaal carry a loss module
    "crop_padding": None,       # --crop-padding: the loader's own augmentation
    # vaal/ options added with the TA-VAAL benchmark
    "options.vaal_epochs": None,            # --vaal-epochs: --vaal-iterations counts the training
    "options.tavaal_epochs": None,          # --tavaal-epochs: --tavaal-iterations counts the training
    "options.tavaal_disc_rank": "sigmoid",  # --tavaal-disc-rank: the discriminator sees sigmoid(r)
    "options.tavaal_first_uniform": 0,      # --tavaal-first-uniform: r from the ranker from the first iteration on
    "world_size": 1,            # processes under torchrun (training is DistributedDataParallel)
    "eval_batch": 1000,         # --eval-batch, for the configurations whose random draws are seeded per batch
    "standardize": "unit",      # --standardize: every scale of unit norm (release: scale j weighs L_j - 1)
    "cuda": None,               # CUDA determinism and TF32 switches (fkal.device.cuda_settings); None on the CPU,
    #                             where every earlier run was made
    # the successors' options for the authors' rules (fkal.acquisitions.typiclust, .galaxy): this project's rules
    "options.typiclust_distance": "euclidean",  # --typiclust-distance: the paper's distance (authors: squared)
    "options.galaxy_graph_order": "paired",      # --galaxy-graph-order: no raise for a class lacking a polarity
    "options.handover_reference": "mean",        # --handover-reference: pfk-base's first runs held D_v to the mean
}


def canonical(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists, keys strings): how settings are stored and compared."""
    return json.loads(json.dumps(value, sort_keys=True))


def split_settings(spec, data_fingerprint: dict, seed: int, imbalance_ratio: float, noise_ratio: float,
                   train_size: int, val_size: int) -> dict:
    return canonical({
        "dataset": spec.name, "data": data_fingerprint, "seed": seed, "imbalance_ratio": float(imbalance_ratio),
        "imbalance": {"rule": spec.imbalance, "rare_classes": list(spec.rare_classes), "rare_share": spec.rare_share},
        "noise_ratio": float(noise_ratio), "train_size": int(train_size), "val_size": int(val_size),
    })


def initial_settings(split: dict, model: str, unsup_schedule: Optional[object]) -> dict:
    """``unsup_schedule`` is None for the random-weights initial model, which no pretraining shapes."""
    return canonical({**split, "model": model, "unsup": None if unsup_schedule is None else asdict(unsup_schedule)})


def config_settings(initial: dict, config: str, unsupervised: int, train_schedule, query_size: int,
                    epoch_selection: str, acquisition_options: dict, device: str, **more) -> dict:
    return canonical({**initial, "config": config, "unsupervised": int(unsupervised),
                      "train": asdict(train_schedule), "query_size": int(query_size),
                      "epoch_selection": epoch_selection, "options": dict(sorted(acquisition_options.items())),
                      "device": device, **more})


# Settings that say where a run came from, not what shaped its numbers: recorded, never compared.
INFORMATIONAL = ("config_file",)


def comparable(settings: dict) -> dict:
    """Flattened settings without the ones ``ADDED_LATER`` holds at their earlier value, and without the
    ``INFORMATIONAL`` ones (the experiment file a run came from)."""
    flat = flatten(canonical(settings))
    return {k: v for k, v in flat.items() if not (k in ADDED_LATER and v == canonical(ADDED_LATER[k]))
            and k.split(".", 1)[0] not in INFORMATIONAL}


def settings_id(settings: dict) -> str:
    """A 12-character digest of a settings dict without its ``seed``: equal for the runs of one table row."""
    rest = {k: v for k, v in comparable(settings).items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:12]


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"train": {"epochs": 50}}`` -> ``{"train.epochs": 50}``."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def differences(stored: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``[(setting, stored value, current value)]`` of every setting that differs (missing counts as None, or as
    its earlier value for the settings of ``ADDED_LATER``)."""
    a, b = comparable(stored), comparable(current)
    return [(k, value_of(a, k), value_of(b, k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def value_of(flat: dict, setting: str) -> Any:
    """A flattened setting's value; for one of ``ADDED_LATER`` that is absent, its earlier value."""
    if setting in flat:
        return flat[setting]
    return canonical(ADDED_LATER[setting]) if setting in ADDED_LATER else None


def flag_of(setting: str) -> str:
    if setting in FLAGS:
        return FLAGS[setting]
    if setting.startswith("options."):
        return "--" + setting.split(".", 1)[1].replace("_", "-")
    head = setting.split(".", 1)[0]
    return FLAGS.get(head, setting)


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    """``"--pool-size: 50 there, 125 now; --epochs: 2 there, 50 now"`` (the first ``limit``, then a count)."""
    parts = []
    for setting, old, new in diffs[:limit]:
        flag = flag_of(setting)
        name = flag if flag.startswith("--") and setting in FLAGS or setting.startswith("options.") else \
            f"{setting} ({flag})"
        parts.append(f"{name}: {_short(old)} there, {_short(new)} now")
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
