"""The gen_descr stage on its own: descriptors and Fisher scores of one model state written to disk.

``run.py`` computes them in memory inside each query; this stage writes them for inspection or for
external tools, as float32 ``.npy`` files that ``np.load(..., mmap_mode="r")`` maps without reading.
"""
from __future__ import annotations

import numpy as np

from .acquisitions.fisher_kernel import pool_descriptors, selection_options
from .config import Config
from .data import ALData, RawData
from .descriptors import extract
from .io import save_json, save_npy
from .kernels import NEEDS_FISHER
from .loop import load_initial
from .models import taps_at, taps_for
from .run_state import RunPaths, Settings, adopt_pretraining, ensure_split, generator, load_models, load_state
from .errors import UserError


def gen_descr(s: Settings, raw: RawData, configs: list[Config], runs, irs, unsupervised: int, iteration: int) -> int:
    for run in runs:
        paths = RunPaths.of(s.out, s.spec, run)
        for ir in irs:
            s = adopt_pretraining(s, run, ir)
            data = ALData(s.spec, raw, ensure_split(s, raw, run, ir))
            for cfg in configs:
                if cfg.L is None:
                    continue
                if iteration == 0:
                    state = load_initial(s, data, run, unsupervised)
                    model, labeled_at = load_models(s, [state])[0], np.full(len(data.split.pool), -1)
                else:
                    path = paths.state(ir, unsupervised, cfg.name, iteration)
                    if not path.exists():
                        raise UserError(f"{path} does not exist: run the configuration through iteration {iteration} "
                                        "first (python run.py --only NAME), or pass --iteration 0")
                    fix = "run the configuration again to rewrite it"
                    state = load_state(path, len(data.split.pool), fix)
                    model = load_models(s, state["models"][:1], origin=path, fix=fix)[0]
                    labeled_at = state["labeled_at"].numpy()
                taps = taps_for(model, cfg.L)
                fisher = NEEDS_FISHER.get(cfg.acquisition, True)
                unlabeled = np.flatnonzero(labeled_at < 0)
                pseudo = cfg.pseudo_label or "yhat"
                tap_point, how = selection_options(dict(s.options))        # --taps, --standardize
                with taps_at(model, tap_point):
                    val, _, _ = extract(model, data.val_source, data.split.val, taps, s.device, s.eval_batch,
                                        labels=data.val_labels, fisher=fisher or pseudo == "phat-g",
                                        desc="validation descriptors")
                    pool, used = pool_descriptors(model, data, unlabeled, taps, pseudo, val.standardized(how),
                                                  fisher, s.device, s.eval_batch, cfg.K or 32,
                                                  generator(s.seed_of(run), "gen_descr"), desc="pool descriptors",
                                                  standardization=how)
                folder = paths.state(ir, unsupervised, cfg.name, iteration).parent / f"descr_b{iteration:02d}"
                for name, feats in (("val", val), ("pool", pool)):
                    for j, tap in enumerate(taps):
                        save_npy(feats.z[j].numpy(), folder / f"{name}_z_{tap}.npy")
                        if feats.g is not None:
                            save_npy(feats.g[j].numpy(), folder / f"{name}_g_{tap}.npy")
                save_npy(unlabeled, folder / "pool_positions.npy")
                save_npy(used.numpy(), folder / "pool_pseudo_labels.npy")
                save_json(list(taps), folder / "taps.json")
                print(f"wrote {folder}")
    return 0
