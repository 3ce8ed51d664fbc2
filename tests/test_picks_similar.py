"""SIMILAR (FLQMI greedy) recomputed by brute force on a small pool, end to end from a trained model.

The query set Q and the similarity are Algorithm 1's of the FK method, image by image
(``test_picks_fisher_kernel.brute_force_similarities``): R_zg between the k-center centers (or every misclassified
validation image) and the unlabeled pool, with the pseudo-labels from their definitions. FLQMI (SIMILAR, Table 1),
I(A; Q) = sum_q max_{a in A} s(q, a) + eta sum_{a in A} max_q s(q, a), is evaluated from scratch for every
candidate set; the greedy adds the candidate of largest I(A u {a}; Q) - I(A; Q), ties to the lowest pool index.
The picks must be these, in this order, and ``result.scores`` the gains.
"""
from __future__ import annotations

import numpy as np
import pytest

from acquisition_cases import check_contract, trained_context
from fkal.acquisitions.registry import ACQUISITIONS
from test_picks_fisher_kernel import PerturbSpy, brute_force_similarities


def flqmi_by_definition(sim: np.ndarray, picked: list[int], eta: float) -> float:
    if not picked:
        return 0.0
    coverage = sum(max(sim[q, a] for a in picked) for q in range(sim.shape[0]))
    relevance = sum(max(sim[q, a] for q in range(sim.shape[0])) for a in picked)
    return coverage + eta * relevance


def greedy_by_definition(sim: np.ndarray, budget: int, eta: float) -> tuple[list[int], list[float]]:
    picked: list[int] = []
    gains: list[float] = []
    for _ in range(budget):
        base = flqmi_by_definition(sim, picked, eta)
        gain = {a: flqmi_by_definition(sim, picked + [a], eta) - base for a in range(sim.shape[1]) if a not in picked}
        best = min(gain, key=lambda a: (-gain[a], a))
        picked.append(best)
        gains.append(gain[best])
    return picked, gains


@pytest.mark.parametrize("config,options", [
    ("similar-phat-L80", {}),
    ("similar-yhat-L30", {"similar_eta": 0.3}),
    ("similar-y-L20", {"similar_query": "all", "similar_eta": 2.0}),
    ("similar-phat-g-L20", {}),
    ("similar-phat-em-L20", {"similar_eta": 0.5}),
])
def test_similar_picks_equal_the_flqmi_greedy_by_brute_force(tiny_mnist, config, options):
    ctx = trained_context(tiny_mnist, config, budget=5, options=options)
    ctx.unlabeled = ctx.unlabeled[::6]                                       # 47 pool images
    result = ACQUISITIONS["similar"](ctx)
    picked = check_contract(ctx, result)
    sim, accuracy = brute_force_similarities(ctx, None, "pfk", all_misclassified=options.get("similar_query") == "all")
    want, gains = greedy_by_definition(sim, ctx.budget, options.get("similar_eta", 1.0))
    np.testing.assert_array_equal(picked, ctx.unlabeled[want])
    np.testing.assert_allclose(result.scores, gains, rtol=1e-4, atol=1e-4)
    assert result.pseudo_label_accuracy == pytest.approx(accuracy)


def test_similar_with_monte_carlo_pseudo_labels_by_brute_force(tiny_mnist, monkeypatch):
    """mi-diag pseudo-labels from the very copies the query perturbed, then the FLQMI greedy."""
    import fkal.pseudo_labels as pseudo_labels
    ctx = trained_context(tiny_mnist, "similar-mi-diag-L30-K3", budget=4)
    ctx.unlabeled = ctx.unlabeled[::14]                                      # 20 pool images
    spy = PerturbSpy()
    monkeypatch.setattr(pseudo_labels, "perturb", spy)
    result = ACQUISITIONS["similar"](ctx)
    sim, accuracy = brute_force_similarities(ctx, spy, "pfk")
    want, gains = greedy_by_definition(sim, ctx.budget, 1.0)
    np.testing.assert_array_equal(check_contract(ctx, result), ctx.unlabeled[want])
    np.testing.assert_allclose(result.scores, gains, rtol=1e-4, atol=1e-4)
    assert result.pseudo_label_accuracy == pytest.approx(accuracy)
