"""DIRECT: acc, the uncertain interval, the interval shrink and the whole batch against naive LabelBench-style
loops; picks next to the boundary on a 1-D pool; unchanged by a far-away flipped label where GALAXY's change."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from acquisition_cases import annotator_differs, noisy_softmax_pool, pool_logits_and_features
from fkal.acquisitions.direct import (acc_curve, direct_select, outward_positions, phase_a_budget, shrink_interval,
                    uncertain_interval)
from fkal.acquisitions.galaxy import galaxy_select


# ------------------------------------------------------------------ naive references (LabelBench's loops)

def ref_ranking(probs: torch.Tensor, k: int) -> list[int]:
    rows = probs.double().tolist()
    s = [(r[k] - max(r)) + 1e-8 * max(r) for r in rows]
    return sorted(range(len(rows)), key=lambda i: (-s[i], i))


def ref_acc(w: list[int]) -> list[int]:
    return [sum(w[:t]) - sum(w[t:]) for t in range(len(w) + 1)]


def ref_interval(w: list[int]) -> tuple[int, int]:
    """LabelBench's two scans, verbatim in spirit."""
    n = len(w)
    i = 0
    for idx in range(n):
        if w[idx] == 0:
            continue
        if w[idx] != 1:
            break
        i = idx
    j = 0
    for ridx in range(n):
        idx = n - 1 - ridx
        if w[idx] == 0:
            continue
        if w[idx] == 1:
            break
        j = ridx
    return i, n - j - 1


def ref_shrink(acc, labeled, i, j, target, coins):
    """One step at a time; a tie consumes the next coin (0: move i)."""
    diam = sum(1 for p in range(i, j + 1) if not labeled[p])
    used = 0
    while diam > target:
        if acc[i] < acc[j]:
            left = True
        elif acc[i] > acc[j]:
            left = False
        else:
            left = coins[used] == 0
            used += 1
        if left:
            diam -= not labeled[i]
            i += 1
        else:
            diam -= not labeled[j]
            j -= 1
    return i, j


def ref_direct(probs, labels, budget, truth, generator, b1=20, per_class_budget=None):
    """DIRECT as LabelBench's loops over nodes, with the same random calls in the same order."""
    n, c = probs.shape
    ranks = [ref_ranking(probs, k) for k in range(c)]
    lab = labels.tolist()
    picks = []
    b2_all = min(60, budget // c // 2) if per_class_budget is None else per_class_budget
    freq = [sum(1 for y in lab if y == k) for k in range(c)]
    for k in sorted(range(c), key=lambda k: (-freq[k], k)) if b2_all > 0 else []:
        if len(picks) >= budget:
            break
        order = ranks[k]
        w = [0 if lab[x] < 0 else (1 if lab[x] == k else -1) for x in order]
        i, j = ref_interval(w)
        b2 = min(b2_all, w.count(0), budget - len(picks))
        while b2 > 0:
            take = min(b1, b2)
            cand = [p for p in range(i, j + 1) if w[p] == 0]
            if not cand:
                break
            for s in torch.randperm(len(cand), generator=generator)[:min(take, len(cand))].tolist():
                p = cand[s]
                lab[order[p]] = int(truth[order[p]])
                picks.append(order[p])
                w[p] = 1 if lab[order[p]] == k else -1
            diam = sum(1 for p in range(i, j + 1) if w[p] == 0)
            b = b2 // b1
            if diam > 0 and b > 1:
                target = math.ceil(diam / diam ** (1 / b))
                if target < diam:
                    coins = torch.randint(0, 2, (j - i + 1,), generator=generator).tolist()
                    i, j = ref_shrink(ref_acc(w), [x != 0 for x in w], i, j, target, coins)
            b2 -= take
    rem = budget - len(picks)
    for idx, k in enumerate(torch.randperm(c, generator=generator).tolist()):
        quota = rem * (idx + 1) // c - rem * idx // c
        if quota == 0:
            continue
        order = ranks[k]
        w = [0 if lab[x] < 0 else (1 if lab[x] == k else -1) for x in order]
        acc = ref_acc(w)
        right = acc.index(max(acc))
        left, bit, left_out, right_out = right - 1, 1, False, False
        while quota > 0:
            bit = (bit + 1) % 2
            if left_out and right_out:
                break
            if bit == 0:
                if left < 0:
                    left_out = True
                    continue
                if w[left] == 0:
                    lab[order[left]] = int(truth[order[left]])
                    picks.append(order[left])
                    w[left] = 2
                    quota -= 1
                left -= 1
            else:
                if right >= n:
                    right_out = True
                    continue
                if w[right] == 0:
                    lab[order[right]] = int(truth[order[right]])
                    picks.append(order[right])
                    w[right] = 2
                    quota -= 1
                right += 1
    return picks


# ------------------------------------------------------------------ pools

def random_pool(seed: int, n: int = 120, c: int = 3, n_labeled: int = 15, noise: float = 0.2):
    return noisy_softmax_pool(seed, n, c, n_labeled, noise, dup=5)                # tied margins


def line_pool(n: int = 201, boundary: int = 140, labeled_every: int = 20):
    """1-D pool: p_0 rises with the index; images <= boundary are class 1, the rest class 0; every
    ``labeled_every``-th image labeled."""
    p0 = torch.linspace(0.01, 0.99, n, dtype=torch.float64)
    probs = torch.stack([p0, 1 - p0], 1)
    truth = torch.where(torch.arange(n) <= boundary, 1, 0)
    labels = torch.full((n,), -1, dtype=torch.long)
    idx = torch.arange(0, n, labeled_every)
    labels[idx] = truth[idx]
    return probs, labels, truth


def oracle_of(truth):
    return lambda i: int(truth[i])


# ------------------------------------------------------------------ pure pieces

def test_phase_a_budget():
    """min(60, P // 2C): SVHN 1,250 over 10 classes -> 60 (62 capped); ImageNet 64,000 over 1,000 -> 32."""
    assert phase_a_budget(1250, 10) == 60
    assert phase_a_budget(64000, 1000) == 32
    assert phase_a_budget(3, 2) == 0


def test_acc_curve_definition():
    rng = random.Random(0)
    for _ in range(50):
        w = [rng.choice([-1, 0, 0, 1]) for _ in range(rng.randint(0, 30))]
        assert acc_curve(torch.tensor(w, dtype=torch.long)).tolist() == ref_acc(w)


def test_uncertain_interval_matches_labelbench_scans():
    """Including no labels, only positives, only negatives, positives after every negative."""
    rng = random.Random(1)
    cases = [[0] * 7, [1, 0, 1, 0], [-1, 0, -1], [-1, 1, 0, 0, -1, 1], [1, 1, 0, -1, -1]]
    cases += [[rng.choice([-1, 0, 0, 0, 1]) for _ in range(rng.randint(1, 25))] for _ in range(300)]
    for w in cases:
        assert uncertain_interval(torch.tensor(w)) == ref_interval(w), w


def test_shrink_matches_step_by_step_loop():
    """The stretch-at-a-time shrink equals the one-step loop with the same coins (ties consume coins)."""
    rng = random.Random(2)
    for _ in range(400):
        n = rng.randint(2, 60)
        w = [rng.choice([-1, 0, 0, 0, 0, 1]) if rng.random() < 0.8 else 0 for _ in range(n)]
        i = rng.randint(0, n - 1)
        j = rng.randint(i, n - 1)
        diam = sum(1 for p in range(i, j + 1) if w[p] == 0)
        if diam == 0:
            continue
        target = rng.randint(1, diam)
        coins = [rng.randint(0, 1) for _ in range(j - i + 1)]
        acc = ref_acc(w)
        got = shrink_interval(torch.tensor(acc), torch.tensor([x != 0 for x in w]), i, j, target,
                              torch.tensor(coins, dtype=torch.bool))
        assert got == ref_shrink(acc, [x != 0 for x in w], i, j, target, coins), (w, i, j, target)


def test_outward_order():
    """t - 1, t, t - 2, t + 1, ... skipping labeled places and the ends of the ranking."""
    unl = torch.ones(10, dtype=torch.bool)
    unl[[3, 6]] = False
    assert outward_positions(unl, 5, 6).tolist() == [4, 5, 2, 7, 1, 8]
    assert outward_positions(unl, 0, 3).tolist() == [0, 1, 2]
    assert outward_positions(unl, 10, 9).tolist() == [9, 8, 7, 5, 4, 2, 1, 0]


# ------------------------------------------------------------------ the batch

@pytest.mark.parametrize("seed", range(8))
def test_batch_matches_naive_labelbench_loop(seed):
    """Whole batches (phase A with shrinks, then phase B) against the node-by-node loops: C = 2, 3, 4; budgets
    that give phase A 0, 5 and 60 per class (the latter with b = 3 and 2: two shrinks)."""
    c = [2, 3, 4][seed % 3]
    n, budget, pcb = [(120, 40, None), (400, 150, 60), (90, 7, None), (300, 100, 30)][seed % 4]
    probs, labels, truth = random_pool(seed, n=n, c=c, n_labeled=12)
    b1 = [20, 20, 3, 7][seed % 4]
    got = direct_select(probs, labels, budget, oracle_of(truth), torch.Generator().manual_seed(seed), b1=b1,
                        per_class_budget=pcb)
    ref = ref_direct(probs, labels, budget, truth, torch.Generator().manual_seed(seed), b1=b1,
                     per_class_budget=pcb)
    assert got.tolist() == ref



def test_phase_a_visits_tied_classes_in_index_order_with_many_classes():
    """40 classes and 12 labeled images: most classes tie at 0 or 1 labeled, and phase A goes through them most
    labeled first, ties by class index (LabelBench's stable argsort); an unstable sort reorders ties from ~32
    classes on. One pick a class in phase A (budget 80), then phase B, against the node-by-node loops."""
    probs, labels, truth = random_pool(3, n=240, c=40, n_labeled=12)
    got = direct_select(probs, labels, 80, oracle_of(truth), torch.Generator().manual_seed(3))
    assert got.tolist() == ref_direct(probs, labels, 80, truth, torch.Generator().manual_seed(3))

def test_phase_b_queries_next_to_the_boundary():
    """Two classes on a line (images 0..140 class 1, 141..200 class 0, every 20th labeled), no phase A: acc is
    flat between the labeled 160 and 140, t* is its first maximum (just past 160 in class 0's ranking, past 140 in
    class 1's), and each class queries outward from there: class 0 (ranking: descending index) 159, 161, 158;
    class 1 (ascending index) 141, 139, 142; the classes in the generator's order."""
    probs, labels, truth = line_pool()
    got = direct_select(probs, labels, 6, oracle_of(truth), torch.Generator().manual_seed(0), per_class_budget=0)
    per_class = {0: [159, 161, 158], 1: [141, 139, 142]}
    first = torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist()
    assert got.tolist() == per_class[first[0]] + per_class[first[1]]


def test_phase_a_picks_stay_in_the_uncertain_interval():
    """P = 16, C = 2, B1 = 2: phase A allows 4 per class. Class 1 (8 labeled) goes first: 4 draws inside its
    [I, J] = (140, 160), all class 0 (> 140). Class 0's interval is then only image 141: it takes that one and
    its 3 unspent go to phase B, whose 11 picks surround the boundary 140 | 141 now known."""
    probs, labels, truth = line_pool()
    got = direct_select(probs, labels, 16, oracle_of(truth), torch.Generator().manual_seed(1), b1=2).tolist()
    assert phase_a_budget(16, 2) == 4
    assert all(141 < i < 160 for i in got[:4]) and got[4] == 141
    assert all(128 <= i <= 152 for i in got[5:])
    assert len(set(got)) == 16
    assert got == ref_direct(probs, labels, 16, truth, torch.Generator().manual_seed(1), b1=2)


def test_far_label_flip_changes_galaxy_but_not_direct():
    """docs/acquisitions/direct.md: a flipped label far from the boundary changes DIRECT's picks not at all and GALAXY's at once.
    Images 10, 20, 30 are labeled too; 20 (deep on class 1's side, p_0 = 0.108) is labeled 0 instead of 1.
    DIRECT's acc loses 2 uniformly over the thresholds above it, t* stays at the boundary; GALAXY sees two runs
    of 9 around 20, shorter than the boundary's 19, and bisects them first.
    With phase A on, class 0's interval [I, J] then reaches down to image 10 and its random draws change: the
    claim holds for the threshold search (phase B), not for phase A."""
    probs, labels, truth = line_pool()
    labels[[10, 30]] = truth[[10, 30]]
    noisy = labels.clone()
    noisy[20] = 0
    kw = dict(per_class_budget=0)
    clean_d = direct_select(probs, labels, 6, oracle_of(truth), torch.Generator().manual_seed(0), **kw)
    noisy_d = direct_select(probs, noisy, 6, oracle_of(truth), torch.Generator().manual_seed(0), **kw)
    assert torch.equal(clean_d, noisy_d)
    clean_g = galaxy_select(probs, labels, 6, oracle_of(truth), torch.Generator().manual_seed(0))
    noisy_g = galaxy_select(probs, noisy, 6, oracle_of(truth), torch.Generator().manual_seed(0))
    assert int(clean_g[0]) == 150                                         # the boundary run 141..159
    assert int(noisy_g[0]) in (15, 25)                                    # next to the flipped label
    with_a = direct_select(probs, noisy, 16, oracle_of(truth), torch.Generator().manual_seed(0))
    assert not torch.equal(with_a, direct_select(probs, labels, 16, oracle_of(truth),
                                                 torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------ contract

def test_contract():
    probs, labels, truth = random_pool(5, n=150, c=4, n_labeled=20)
    unl = int((labels < 0).sum())
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    for budget in (unl, 37):
        a = direct_select(probs, labels, budget, oracle_of(truth), torch.Generator().manual_seed(2))
        b = direct_select(probs, labels, budget, oracle_of(truth), torch.Generator().manual_seed(2))
        assert torch.equal(a, b)
        assert len(a) == budget and len(set(a.tolist())) == budget
        assert bool((labels[a] < 0).all())
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    assert len(direct_select(probs, labels, 0, oracle_of(truth), torch.Generator())) == 0
    with pytest.raises(ValueError, match="budget"):
        direct_select(probs, labels, unl + 1, oracle_of(truth), torch.Generator())
    with pytest.raises(ValueError, match="oracle"):
        direct_select(probs, labels, 3, lambda i: -3, torch.Generator())


# ------------------------------------------------------------------ wiring (tiny MNIST, LeNet)

def test_query_uses_pool_softmax_annotator_labels_and_options(query_ctx):
    """direct_query = direct_select on models[0]'s softmax over the pool, labels and oracle from
    split.pool_labels, --direct-b1 and --direct-class-budget."""
    from fkal.acquisitions.direct import direct_query
    from fkal.cli import build_parser
    ctx = query_ctx("direct", budget=30, options={"direct_b1": 1, "direct_class_budget": 3})
    labels_all = annotator_differs(ctx)
    logits, _ = pool_logits_and_features(ctx, np.arange(len(ctx.data.split.pool)))
    labels = torch.full((len(logits),), -1, dtype=torch.long)
    labels[ctx.labeled] = torch.as_tensor(labels_all[ctx.labeled], dtype=torch.long)
    expect = direct_select(torch.softmax(logits, 1), labels, 30, lambda i: int(labels_all[i]),
                           torch.Generator().manual_seed(0), b1=1, per_class_budget=3)
    assert direct_query(ctx).indices.tolist() == expect.tolist()
    default_b1 = direct_select(torch.softmax(logits, 1), labels, 30, lambda i: int(labels_all[i]),
                               torch.Generator().manual_seed(0), per_class_budget=3)
    assert default_b1.tolist() != expect.tolist()                          # here B1 changes the picks
    args = build_parser().parse_args(["--direct-b1", "5", "--direct-class-budget", "0"])
    assert (args.direct_b1, args.direct_class_budget) == (5, 0)
    assert (build_parser().parse_args([]).direct_b1, build_parser().parse_args([]).direct_class_budget) == (20, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--direct-b1", "0"])
