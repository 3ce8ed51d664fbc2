"""Saved models and iteration states, read back and checked; the task hooks an acquisition puts on its models."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..acquisitions.contract import TaskHooks
from ..acquisitions.registry import ATTACHED_HOOKS, TASK_HOOKS
from ..errors import UserError
from ..io import load_torch
from ..models import build_model
from .run import Settings


def attached(s: Settings, acquisition: Optional[str]) -> bool:
    """True where ``--loss-module-all`` gives an acquisition without task hooks of its own the loss module (never
    for ``acquisition`` None: a plain model, e.g. an initial one)."""
    return bool(s.loss_module_all) and acquisition is not None and acquisition not in TASK_HOOKS


def hooks_for(s: Settings, acquisition: Optional[str]) -> Optional[TaskHooks]:
    """The task hooks of an acquisition: its own, or with ``--loss-module-all`` the attached loss module's."""
    return ATTACHED_HOOKS if attached(s, acquisition) else TASK_HOOKS.get(acquisition)


def new_model(s: Settings, num_classes: Optional[int] = None) -> torch.nn.Module:
    return build_model(s.spec.model, num_classes or s.spec.num_classes).to(s.device)


def load_state(path: Path, n_pool: int, fix: str, settings_id: Optional[str] = None,
               members: Optional[int] = None) -> dict:
    """An iteration state ``{"models": [E state dicts], "labeled_at": [N] int64, "iteration", "settings_id"}``
    checked before use: its shape, the pool it indexes (``n_pool`` images), and with ``settings_id`` / ``members``
    the configuration that made it (a state copied from another configuration's folder is refused)."""
    state = load_torch(path, fix)
    models = state.get("models") if isinstance(state, dict) else None
    labeled_at = state.get("labeled_at") if isinstance(state, dict) else None
    if not (isinstance(models, list) and models and all(isinstance(m, dict) for m in models)
            and isinstance(labeled_at, torch.Tensor) and labeled_at.dim() == 1
            and not labeled_at.is_floating_point()):
        raise UserError(f"{path} is not an iteration state that run.py wrote: {fix}")
    stored = state.get("settings_id")
    if settings_id is not None and stored is not None and stored != settings_id:
        raise UserError(f"{path} was made by another configuration or with other settings (settings {stored}, this "
                        f"configuration's are {settings_id}): {fix}")
    if len(labeled_at) != n_pool:
        raise UserError(f"{path} holds the selections of a pool of {len(labeled_at)} images, this run's pool has "
                        f"{n_pool}: {fix}")
    if members is not None and len(models) != members:
        raise UserError(f"{path} holds {len(models)} models where the configuration has {members}: {fix}")
    return state


def load_models(s: Settings, states: list[dict], acquisition: Optional[str] = None,
                wrapped: bool = False, origin: Optional[Path] = None, fix: str = "") -> list[torch.nn.Module]:
    """Models from state dicts; ``wrapped`` states were saved with the acquisition's task hooks applied,
    plain ones (initial models) get the hooks applied after loading. Weights that do not fit the model are a
    ``UserError`` naming ``origin`` (the file they came from) and ``fix``."""
    return models_from_states(lambda: new_model(s), states, hooks_for(s, acquisition), s.spec, s.device, wrapped,
                              f"the {s.spec.model} model{f' of {acquisition}' if acquisition else ''}", origin, fix)


def models_from_states(build, states: list[dict], hooks: Optional[TaskHooks], spec, device: torch.device,
                       wrapped: bool, what: str, origin: Optional[Path] = None, fix: str = "") -> list[torch.nn.Module]:
    """Models made by ``build()`` holding ``states``, in eval mode on ``device``, with the task ``hooks`` (if any)
    put on before loading (``wrapped``: the states were saved with them) or after (plain states, e.g. initial
    models). Weights that do not fit are a ``UserError`` naming ``origin``, ``what`` they should fit and ``fix``.
    The loop's ``load_models`` and the labeling rounds both build their models here."""
    models = []
    for st in states:
        m = build()
        if hooks is not None and wrapped:
            m = hooks.wrap(m, spec).to(device)
        try:
            m.load_state_dict(st)
        except (RuntimeError, TypeError, KeyError, AttributeError):
            raise UserError(f"{origin or 'a saved model'} does not fit {what} ({misfit(m, st)})"
                            f"{': ' + fix if fix else ''}") from None
        if hooks is not None and not wrapped:
            m = hooks.wrap(m, spec).to(device)
        models.append(m.eval())
    return models


def misfit(model: torch.nn.Module, state: object) -> str:
    """Why ``state`` does not load into ``model``, in a few words: the weights it lacks, those it has beyond the
    model's, those of another shape (a few of each named)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict of weights"
    want = model.state_dict()

    def few(names: list) -> str:
        return ", ".join(map(str, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shape = [k for k in want if k in state and getattr(state[k], "shape", None) != want[k].shape]
    parts = ([f"lacks {few(missing)}"] if missing else []) + ([f"has {few(extra)} besides"] if extra else []) + \
        ([f"{few(shape)} of another shape"] if shape else [])
    return "; ".join(parts) or "its weights do not load"


def read_json(path: Path) -> dict:
    """The JSON object in ``path`` ({} when there is no such file); anything else is one ``UserError``."""
    fix = "delete it and run the same command again"
    try:
        value = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        raise UserError(f"cannot read {path}: it is not valid JSON; {fix}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    if not isinstance(value, dict):
        raise UserError(f"cannot read {path}: it holds JSON but not a JSON object; {fix}")
    return value
