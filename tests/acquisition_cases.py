"""The example settings of every acquisition, read from its spec, and contexts built the way the loop builds them.

The strict contract test (``test_acquisitions.py``) runs every registered acquisition with its spec's example
(``AcquisitionSpec.example``: a configuration, its options, the random subset it selects within, its progress
bars) and whether it reveals labels. The brute-force tests (``test_picks_<family>.py``) use the same contexts and
recompute each acquisition's scores independently of the implementation.

To add an acquisition: its spec carries its example; then a ``test_picks_<name>.py`` that recomputes its scores by
brute force on the small pool of ``trained_context`` and checks that the picks are the best P under them and that
``result.scores`` are the scores of ``result.indices``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from fkal.acquisitions import registry
from vaal.acquisitions import TINY_VAAL  # noqa: F401  (tiny VAE / discriminator settings: VAAL-type examples)


@dataclass(frozen=True)
class Case:
    config: str                          # an example configuration name (fkal.config)
    options: dict = field(default_factory=dict)   # ctx.options (argparse dests)
    subset_option: Optional[str] = None  # the option that sizes the random subset it selects within, if any
    reveals_labels: bool = False         # reads labels of unlabeled images while picking (an oracle in the batch)
    bars: tuple = ()                     # its progress bars in order, each "{config} b={iteration}: {what}"


def case_of(name: str) -> Case:
    """The example of the registered acquisition ``name``, from its spec."""
    spec = registry.spec_of(name)
    ex = spec.example_case
    return Case(ex.config, dict(ex.options), ex.subset_option, spec.reveals_labels, tuple(ex.bars))


class _Cases(Mapping):
    """``{name: Case}`` of every registered acquisition (live: an acquisition registered later is in it)."""

    def __getitem__(self, name: str) -> Case:
        if name not in registry.ACQUISITIONS:
            raise KeyError(name)
        return case_of(name)

    def __iter__(self) -> Iterator[str]:
        return iter(registry.names())

    def __len__(self) -> int:
        return len(registry.names())


CASES: Mapping[str, Case] = _Cases()
FK_BARS = ("validation descriptors", "pool descriptors")


def trained_context(root: Path, cfg, *, options: Optional[dict] = None, n_labeled: int = 20, budget: int = 12,
                    seed: int = 0, iteration: int = 2, epochs: int = 3, device: torch.device = torch.device("cpu")):
    """A ``QueryContext`` on the MNIST-format data at ``root`` (a 300-image pool, 100 validation images; see
    ``conftest.make_query_context``) whose ``cfg.E`` models are built and wrapped as ``fkal.run_state.load_models``
    wraps the initial models (the acquisition's task hooks: the ranker of lloss and TA-VAAL), then trained
    ``epochs`` epochs on the labeled images with the acquisition's extra loss, as the loop trains them, on
    ``device``."""
    from conftest import make_query_context
    from fkal.acquisitions.registry import ACQUISITIONS, TASK_HOOKS
    from fkal.config import Config, parse_config
    from fkal.data import DATASETS
    from fkal.run_state import Settings, load_models
    from fkal.models import lenet
    from fkal.training import train

    spec = DATASETS["mnist"]
    cfg = cfg if isinstance(cfg, Config) else parse_config(cfg, ACQUISITIONS)
    settings = Settings(out=root, spec=spec, train=spec.train, unsup=spec.unsup, query_size=budget, iterations=1,
                        device=device, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + seed)
        states = [lenet().state_dict() for _ in range(cfg.E)]
    models = load_models(settings, states, cfg.acquisition)
    ctx = make_query_context(root, cfg, n_labeled=n_labeled, budget=budget, models=models, iteration=iteration,
                             options=options, seed=seed, device=device)
    hooks = TASK_HOOKS.get(cfg.acquisition)
    extra = hooks.extra_loss(dict(ctx.options), spec) if hooks is not None else None
    if len(ctx.labeled) > 0 and epochs > 0:
        schedule = spec.train.with_epochs(epochs)
        for e, m in enumerate(ctx.models):
            train(m, ctx.data.pool_source, ctx.data.split.pool[ctx.labeled], ctx.data.split.pool_labels[ctx.labeled],
                  schedule, ctx.device, torch.Generator().manual_seed(100 * seed + e), extra_loss=extra,
                  progress=False)
    for m in ctx.models:
        m.eval()
    # the global RNG in a state unlike the query's generator (make_query_context seeds both with ``seed``), so
    # that a query drawing from the global RNG instead of ctx.generator cannot match a brute-force recomputation
    torch.manual_seed(2 ** 31 - 1 - seed)
    return ctx


def case_context(root: Path, name: str, **knobs):
    """``trained_context`` with the example configuration and options of ``CASES[name]``."""
    case = case_of(name)
    options = {**case.options, **knobs.pop("options", {})}
    return trained_context(root, case.config, options=options, **knobs)


def check_contract(ctx, result) -> np.ndarray:
    """P distinct unlabeled positions, scores aligned with them; returns the picks."""
    picked = np.asarray(result.indices)
    assert picked.shape == (ctx.budget,), (picked.shape, ctx.budget)
    assert np.issubdtype(picked.dtype, np.integer)
    assert len(np.unique(picked)) == ctx.budget, "repeated picks"
    assert np.isin(picked, ctx.unlabeled).all(), "a pick outside the unlabeled positions"
    assert not np.isin(picked, ctx.labeled).any(), "a labeled image picked again"
    if result.scores is not None:
        assert np.asarray(result.scores).shape == (ctx.budget,)
    return picked


# ---- for the tests of the acquisitions that read the pool's outputs (BADGE, BASE, GALAXY, DIRECT)
def pool_logits_and_features(ctx, positions):
    """logits and relu(fc1) of pool ``positions``, batch by batch as the query computes them."""
    logits, feats = [], []
    with torch.no_grad():
        for _, x in ctx.data.pool_source.batches(ctx.data.split.pool[positions], ctx.batch_size):
            z, taps = ctx.models[0](x)
            logits.append(z)
            feats.append(torch.relu(taps["fc1"]))
    return torch.cat(logits), torch.cat(feats)


def annotator_differs(ctx):
    """Make the annotator's labels (split.pool_labels) differ from the source's, so that a query reading the
    wrong one picks differently."""
    pool_labels = ctx.data.split.pool_labels
    pool_labels[:] = (np.asarray(pool_labels) * 7 + 3) % 10
    return np.asarray(pool_labels)


def noisy_softmax_pool(seed: int, n: int, c: int, n_labeled: int, noise: float, dup: int):
    """Softmax outputs ``[n, c]`` (float64) whose last ``dup`` rows repeat the first ones (exact ties), true labels
    = argmax flipped to a random class with probability ``noise``, and the labels ``[n]`` of ``n_labeled`` random
    images (-1 elsewhere): ``(probs, labels, truth)``, for GALAXY and DIRECT."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2.0 * torch.randn(n, c, generator=g, dtype=torch.float64), 1)
    probs[n - dup:] = probs[:dup]
    truth = probs.argmax(1)
    flip = torch.rand(n, generator=g) < noise
    truth[flip] = torch.randint(c, (int(flip.sum()),), generator=g)
    labels = torch.full((n,), -1, dtype=torch.long)
    lab = torch.randperm(n, generator=g)[:n_labeled]
    labels[lab] = truth[lab]
    return probs, labels, truth


def plant_copies_of_misclassified(ctx) -> np.ndarray:
    """Relabel D_v so that exactly its first five images are misclassified by ``ctx.models[0]``, and make five
    unlabeled pool images copies of them; return the pool positions of the copies."""
    data, model = ctx.data, ctx.models[0]
    pred = model(data.val_source.get(data.split.val))[0].argmax(1).numpy()
    labels_v = pred.copy()
    labels_v[:5] = (pred[:5] + 1) % 10
    data.val_source.labels[data.split.val] = labels_v
    targets = ctx.unlabeled[:5]
    data.pool_source.images[data.split.pool[targets]] = data.val_source.images[data.split.val[:5]]
    data.pool_source.labels[data.split.pool[targets]] = labels_v[:5]
    data.split.pool_labels[targets] = labels_v[:5]
    return targets
