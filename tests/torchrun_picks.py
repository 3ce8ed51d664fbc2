"""Picks of several acquisitions from one saved model, written by rank 0 as JSON: the tests run this script with
one process and under ``python -m torch.distributed.run --nproc_per_node 2`` and compare (tests/test_distributed.py).

usage: torchrun_picks.py DATA_ROOT MODEL_STATE OUT_JSON CONFIG [CONFIG ...]

A CONFIG written ``small:NAME`` picks among 10 unlabeled images only, fewer than one batch: under two processes
the second holds none of them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from fkal import distributed as D
from fkal.acquisitions.contract import QueryContext
from fkal.acquisitions.registry import ACQUISITIONS, TASK_HOOKS
from fkal.config import parse_config
from fkal.data import DATASETS, ALData, make_split
from fkal.data.mnist import load_mnist
from fkal.models import lenet

# tiny numbers for the acquisitions that train their own networks
OPTIONS = {"vaal_iterations": 3, "tavaal_iterations": 3, "vaal_width": 4, "vaal_batch": 8, "vaal_latent": 4,
           "vaal_disc_hidden": 8, "vaal_disc_layers": 1, "uncertainty_first_random": 0,
           "similar_kernel": "pfk", "similar_eta": 1.0, "similar_query": "centers",
           "typiclust_features": "current", "typiclust_max_clusters": 500}


def main() -> int:
    root, state_path, out, *names = sys.argv[1:]
    torch.set_num_threads(1)
    D.init()
    spec = DATASETS["mnist"]
    raw = load_mnist(root, download=False)
    split = make_split(spec, raw, seed=0, imbalance_ratio=1, train_size=300, val_size=100)
    labeled = np.sort(np.random.default_rng(0).choice(len(split.pool), 20, replace=False))
    unlabeled = np.setdiff1d(np.arange(len(split.pool)), labeled)
    state = torch.load(state_path, weights_only=True)
    picks = {}
    for key in names:
        small, name = key.startswith("small:"), key.removeprefix("small:")
        cfg = parse_config(name, ACQUISITIONS)
        models = []
        for _ in range(cfg.E):
            m = lenet()
            m.load_state_dict(state)
            if cfg.acquisition in TASK_HOOKS:
                m = TASK_HOOKS[cfg.acquisition].wrap(m, spec)
            models.append(m.eval())
        ctx = QueryContext(models=models, data=ALData(spec, raw, split), labeled=labeled,
                           unlabeled=unlabeled[:10] if small else unlabeled, budget=3 if small else 12,
                           generator=torch.Generator().manual_seed(7), device=torch.device("cpu"), config=cfg,
                           iteration=2, batch_size=32, progress=False, options=dict(OPTIONS))
        result = ACQUISITIONS[cfg.acquisition](ctx)
        picks[key] = {"indices": [int(i) for i in result.indices],
                       "scores": None if result.scores is None else [float(v) for v in result.scores],
                       "pseudo_label_accuracy": result.pseudo_label_accuracy}
    everyone = D.all_gather_object(picks)       # compared as JSON text: a nan score (BADGE's first pick) equals itself
    if D.is_main():
        Path(out).write_text(json.dumps({"world": D.world(), "picks": picks,
                                         "ranks_agree": all(json.dumps(p) == json.dumps(picks) for p in everyone)}))
    D.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
