"""Every acquisition by the name its configurations use, in one explicit list.

A configuration name ``{acquisition}[-{S}][-L{L}][-E{E}][-K{K}]`` (``fkal.config``) starts with one of the keys
of ``ACQUISITIONS``; the loop calls that function with a ``QueryContext``. ``TASK_HOOKS`` names the acquisitions
that change the task model and its training, ``ARGUMENT_GROUPS`` the functions that add an acquisition's own
options to the command line (their values reach it as ``ctx.options[dest]``), ``ACQUISITION_OPTIONS`` which of
those shape each acquisition's results (recorded with them, compared on resume), ``REVEALS_LABELS`` the
acquisitions that ask for each pick's label while they choose the rest of the batch.

To add an acquisition: write ``fkal/acquisitions/<name>.py`` with a ``query(ctx) -> QueryResult`` (see
``contract.py``) and add one line below.
"""
from __future__ import annotations

from typing import Callable

from vaal import acquisitions as vaal

from . import badge, base, coreset, direct, fisher_kernel, galaxy, random_sampling, similar, typiclust, uncertainty
from .contract import REVEALS_LABELS, Acquisition, TaskHooks  # noqa: F401  (REVEALS_LABELS: listed here too)

ACQUISITIONS: dict[str, Acquisition] = {
    "random": random_sampling.random_query,
    # the paper's method (Algorithm 1): R_z (eq. 6), R_zg (eq. 12), R_z + R_g (the authors' release)
    "pcc": fisher_kernel.fisher_kernel_query,
    "pfk": fisher_kernel.fisher_kernel_query,
    "pfk-sum": fisher_kernel.fisher_kernel_query,
    # MC-dropout uncertainty, alone or over an ensemble (the metric is named by the configuration)
    "varR": uncertainty.uncertainty_query,
    "entropy": uncertainty.uncertainty_query,
    "bald": uncertainty.uncertainty_query,
    "std": uncertainty.uncertainty_query,
    "coreset": coreset.coreset_query,
    # successors for rare classes: SIMILAR (FLQMI with Q = the misclassified validation images), TypiClust
    "similar": similar.similar_query,
    "typiclust": typiclust.typiclust_query,
    # imbalance-aware successors (DESIGN section 10) and BADGE (section 8)
    "galaxy": galaxy.galaxy_query,
    "direct": direct.direct_query,
    "base": base.base_query,
    "badge": badge.badge_query,
    # vaal/: VAAL, TA-VAAL, learning loss
    "vaal": vaal.vaal_query,
    "tavaal": vaal.tavaal_query,
    "lloss": vaal.lloss_query,
    "lloss-v2": vaal.lloss_query,       # TA-VAAL's "learning loss_v2": the module trained with its RankNet loss
}

TASK_HOOKS: dict[str, TaskHooks] = {
    "lloss": vaal.LLOSS_HOOKS,
    "lloss-v2": vaal.LLOSS_V2_HOOKS,
    "tavaal": vaal.TAVAAL_HOOKS,
}

# ``--loss-module-all 1`` (the TA-VAAL code): the hooks every acquisition without its own gets, and the options
# that shape them (recorded for every acquisition run so).
ATTACHED_HOOKS: TaskHooks = vaal.ATTACHED_HOOKS
ATTACHED_OPTIONS: tuple[str, ...] = vaal.ATTACHED_OPTIONS

ARGUMENT_GROUPS: tuple[Callable, ...] = (
    fisher_kernel.add_arguments,
    uncertainty.add_arguments,
    similar.add_arguments,
    typiclust.add_arguments,
    galaxy.add_arguments,
    direct.add_arguments,
    vaal.add_arguments,
)

# The options (argparse dests) that shape each acquisition's picks: recorded with its results and compared when a
# run is resumed. An acquisition without options is absent.
ACQUISITION_OPTIONS: dict[str, tuple[str, ...]] = {
    **{name: uncertainty.OPTIONS for name in ("varR", "entropy", "bald", "std")},
    "similar": similar.OPTIONS,
    "typiclust": typiclust.OPTIONS,
    "galaxy": galaxy.OPTIONS,
    "direct": direct.OPTIONS,
    **vaal.OPTIONS,
}
