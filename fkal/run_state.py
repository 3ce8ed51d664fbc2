"""A run's on-disk state, gathered from ``fkal.state`` (paths, settings and seeds, checkpoints, resume checks) for
the code that imports it from here. New code imports the module of the job it needs."""
from __future__ import annotations

from .state.checkpoints import attached, hooks_for, load_models, load_state, misfit, new_model, read_json
from .state.paths import Cell, RunPaths
from .state.resume import (OTHER_OUT, adopt_pretraining, batch_seeded, check_same, completed_iterations,
                           config_folder_ready, config_settings, ensure_split, initial_settings, protocol_settings,
                           read_results, resume_point, split_settings)
from .state.run import Settings, derive_seed, generator

__all__ = ["OTHER_OUT", "Cell", "RunPaths", "Settings", "adopt_pretraining", "attached", "batch_seeded", "check_same",
           "completed_iterations", "config_folder_ready", "config_settings", "derive_seed", "ensure_split",
           "generator", "hooks_for", "initial_settings", "load_models", "load_state", "misfit", "new_model",
           "protocol_settings", "read_json", "read_results", "resume_point", "split_settings"]
