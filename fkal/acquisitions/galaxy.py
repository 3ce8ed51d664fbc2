"""GALAXY: graph-based active learning at the extreme (Zhang, Katz-Samuels, Nowak, ICML 2022).

Every class k ranks the whole pool (labeled or not) by its one-vs-rest margin
``s_k = p_k - max_j p_j + 1e-8 max_j p_j``, most k-like first: a path graph, one per class. A labeled image is
*positive* for k when its label is k and *negative* otherwise. Each pick takes a class (round-robin in the authors'
code, at random in LabelBench), finds in its graph the shortest path between a positive and a negative labeled image
that runs through unlabeled images, and queries the middle of that path (the S^2 bisection of Dasarathy, Nowak and
Zhu). The picked image's label is revealed at once (``oracle``) and used by every later pick of the same batch.

Where no such path exists the authors raise the graph's order r (image i is joined to every image within r places
of it, except pairs of labeled images of opposite polarity), retry once, and otherwise pick an unlabeled image at
random; the raised order stays for the rest of the batch (one order for all classes: see "The graph's order"
below). Cost: one stable sort of N margins per class (done when the class is first visited), then O(labeled) per
pick. Memory: the rankings (``ceil(log2 N)`` bits per image and class) and the labeled positions (4 bytes per
labeled image and class) besides the inputs.

The one-vs-rest rankings are shared with DIRECT (``direct.py``): :func:`ovr_scores` and :class:`OvrRankings`.

Reading of the paper against the authors' code (jifanz/GALAXY, ``src/graph.py``, ``src/multiclass/``) and
LabelBench (``strategy_impl/galaxy.py``):

* The path's middle: the authors query ``path[len(path) // 2]`` of a path that runs from the negative end to the
  positive end, so a run of an even number of unlabeled images gives the image nearer the positive. We do the same.
  LabelBench takes ``(first + last) // 2`` of the run in the descending ranking, i.e. the image nearer the top; the
  two agree whenever the positive lies above the negative.
* Two classes: the ranking of class 1 is that of class 0 reversed with the polarities swapped, one bisection
  problem. Like LabelBench, only class 0's ranking is used. The authors' code cycles over both rankings, which only
  changes, every other pick, which of the two middle images of an even run is taken: on the 1-D test pool of the tests
  (see the tests) it gives 50, 75, 63, 69, 72, 70, 71 where the single ranking gives 50, 75, 63, 69, 72, 71, 70.
* Ties between shortest paths: the authors' breadth-first search visits neighbours in the order of a Python set,
  which is arbitrary. We take the path between the topmost pair of labeled images (LabelBench's scan order), and
  on a graph of order r > 1, among the images that lie halfway along some shortest path between that pair
  (``(d + 1) // 2`` steps from the negative, ``d // 2`` from the positive), the one nearest the pair's midpoint,
  ties toward the positive.
* A class with no labeled positive (or no labeled negative): the authors' search finds no path, raises the order
  (for every class, for the rest of the batch) and picks at random. Raising cannot create a path there, so we pick
  at random without raising (``--galaxy-graph-order paired``, the default); ``--galaxy-graph-order authors`` raises
  it there too. See "The graph's order" below.
* LabelBench draws the class at random (``class_order="random"``), never raises the order (with no path it takes
  the unlabeled image nearest a pair of adjacent labeled images of opposite polarity) and, with two classes, ranks
  by p_0 alone. Here ``1e-8 max_j p_j`` enters every class's margin: LabelBench's DIRECT uses ``1e-8 p_0``
  in both margins when C = 2, which orders the images predicted as class 1 backwards.

The graph's order, read from the authors' code (jifanz/GALAXY at 3323af8): ``src/graph.py``,
``MultiLinearGraph.shortest_shortest_path(increment=True)`` (lines 148-173) searches the graph of class
``self.s2_iteration % len(self.graphs)``; when it finds no path and ``self.n_order < len(self.node_list)``, it
does ``self.n_order += 1``, adds the edges of the new order to *every* class's graph (``for graph in self.graphs``,
``check_add_neighbor``: not between two labeled images of opposite polarity) and searches the same class once more
(``return self.shortest_shortest_path(increment=False)``); ``s2algorithm.bisection_query`` then falls back to a
uniform unlabeled image. ``n_order`` is one attribute of the ``MultiLinearGraph``, shared by all classes, never
lowered; ``multiclass/multi_linear_deeps2.py``, ``run_online_deep_s2``, builds a new graph with
``n_order=order`` (1) for each batch (lines 32 and 65) and takes ``batch_size`` picks from it (lines 53-58). So
the order starts at 1 each batch, is raised by one at each pick whose class has no path, and is kept, for every
class, for the rest of the batch. This project does exactly that (``order_r`` in :func:`galaxy_select`), with one
difference: the authors' search (``Graph.shortest_shortest_path``, lines 91-130: a shortest-path search from the
labeled positives that stops at the first labeled negative) also finds no path when the class has no labeled
positive or no labeled negative (it returns ``float('inf'), None``, line 130), so the order is raised there too,
each time such a class comes round. A class without labeled images (a rare class of a biased pool, before its
first label) then widens every class's graph by one every C picks, and later bisections of the other classes take
r-step shortcuts over their closed boundaries. ``--galaxy-graph-order`` (``galaxy_select(graph_order=...)``):

* ``paired`` (default, this project): the order is 1 at the start of each batch, raised by one (then the class's
  search retried once) only at a pick whose class has a labeled positive and a labeled negative but no path
  between them at the current order, and kept for the rest of the batch for all classes; a class lacking a
  polarity picks at random and leaves the order as it is.
* ``authors``: the order is also raised at a pick whose class lacks a labeled positive or negative (the pick is
  the same uniform draw), as the authors' code does. Both rules keep *one* order for all classes, raised across
  the picks of a batch and set back to 1 for the next batch, so they differ only where a class lacks a
  polarity. Example (``tests/test_galaxy.py``, ``rare_class_line``: three classes, none of the images of class
  2): ``paired`` picks 14, 5, 9, 6, 11 and ``authors`` 14, 5, 9, 2, 12, class 2's random pick 9 having raised
  the order to 2.
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional

import numpy as np
import torch

from .contract import AcquisitionSpec, Example, QueryContext, QueryResult
from .coreset import penultimate_outputs

Oracle = Callable[[int], int]   # oracle(image index) -> its class, what an annotator returns

TIE_SCALE = 1e-8                 # weight of max_j p_j in the one-vs-rest margin
CLASS_ORDERS = ("round-robin", "random")
GRAPH_ORDERS = ("paired", "authors")   # when the graph's order is raised (module docstring, "The graph's order")


# ---------------------------------------------------------------------------------------------------------------
# One-vs-rest rankings (shared with DIRECT)
# ---------------------------------------------------------------------------------------------------------------

def _margin(p_k: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``s_k = p_k - max_j p_j + 1e-8 max_j p_j`` elementwise; every caller goes through here so that a margin
    recomputed for a few rows is bit-identical to the one the ranking was sorted by."""
    return (p_k - top) + TIE_SCALE * top


def ovr_scores(probs: torch.Tensor, k: int) -> torch.Tensor:
    """One-vs-rest margin of class k for every row of ``probs`` ``[N, C]``: ``[N]``.

    Images predicted as k score ``1e-8 p_k`` > 0 (ordered by p_k among themselves); the others score
    ``p_k - max_j p_j + 1e-8 max_j p_j`` < 0."""
    return _margin(probs[:, k], probs.max(dim=1).values)


def ovr_ranking(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Image indices ``[N]`` in descending order of :func:`ovr_scores` (most k-like first); equal margins keep
    index order (stable sort)."""
    return torch.sort(ovr_scores(probs, k), descending=True, stable=True).indices


def _bit_layout(nbits: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Where value ``positions`` of a bit-packed array starts: (first byte, bit offset in it), and how many bytes
    one value can touch."""
    start = positions * nbits
    return torch.bitwise_right_shift(start, 3), torch.bitwise_and(start, 7), (nbits + 7 + 7) // 8


def packed_size(n: int, nbits: int) -> int:
    """Bytes of :func:`pack_bits` for n values of nbits bits (8 spare bytes so any value reads 8 bytes)."""
    return (n * nbits + 7) // 8 + 8


def pack_bits(values: torch.Tensor, nbits: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Non-negative int64 ``[N]`` < 2^nbits -> bit-packed little-endian bytes ``[packed_size(N, nbits)]`` uint8
    (into ``out`` if given): value i occupies bits ``i * nbits .. (i + 1) * nbits - 1``."""
    n = len(values)
    size = packed_size(n, nbits)
    acc = torch.zeros(size, dtype=torch.int64)             # the bits of different values never overlap: sum = or
    byte, off, span = _bit_layout(nbits, torch.arange(n))
    shifted = torch.bitwise_left_shift(values, off)
    for j in range(span):
        acc.index_add_(0, byte + j, torch.bitwise_and(torch.bitwise_right_shift(shifted, 8 * j), 255))
    if out is None:
        out = torch.empty(size, dtype=torch.uint8)
    out.copy_(acc)
    return out


def unpack_bits(packed: torch.Tensor, nbits: int, positions: torch.Tensor) -> torch.Tensor:
    """Values at ``positions`` (int64, any shape) of :func:`pack_bits`'s output: int64, same shape."""
    byte, off, span = _bit_layout(nbits, positions)
    word = packed[byte].long()
    for j in range(1, span):
        word |= torch.bitwise_left_shift(packed[byte + j].long(), 8 * j)
    return torch.bitwise_and(torch.bitwise_right_shift(word, off), (1 << nbits) - 1)


class OvrRankings:
    """The C one-vs-rest rankings of a pool, each sorted when first asked for and kept bit-packed in
    ``ceil(log2 N)`` bits an image (21 bits for ImageNet's 1.28M): all C rankings of an ImageNet-size pool take
    21/32 of the size of the float32 softmax outputs, in one block reserved at once (its pages are committed as
    classes get sorted; no heap fragmentation from C separate buffers).

    ``positions_of`` finds where images sit in a ranking by binary search on the margins (recomputed for the
    probed rows), so no inverse permutation is stored.
    """

    def __init__(self, probs: torch.Tensor):
        if probs.dim() != 2:
            raise ValueError(f"probs must be [N, C], got shape {tuple(probs.shape)}")
        self.probs = probs
        self.n, self.num_classes = probs.shape
        self.top = probs.max(dim=1).values                                   # [N]
        self.nbits = max(1, (self.n - 1).bit_length())
        self._store = torch.empty(self.num_classes, packed_size(self.n, self.nbits), dtype=torch.uint8)
        self._sorted = torch.zeros(self.num_classes, dtype=torch.bool)

    def _ranking(self, k: int) -> torch.Tensor:
        if not self._sorted[k]:
            order = torch.sort(_margin(self.probs[:, k], self.top), descending=True, stable=True).indices
            pack_bits(order, self.nbits, out=self._store[k])
            self._sorted[k] = True
        return self._store[k]

    def order(self, k: int) -> torch.Tensor:
        """Ranking of class k: image indices ``[N]`` int64, most k-like first."""
        return unpack_bits(self._ranking(k), self.nbits, torch.arange(self.n))

    def images_at(self, k: int, positions: torch.Tensor) -> torch.Tensor:
        """Images at ranking ``positions`` ``[m]`` of class k: ``[m]`` int64."""
        return unpack_bits(self._ranking(k), self.nbits, torch.as_tensor(positions, dtype=torch.long))

    def positions_of(self, k: int, images: torch.Tensor) -> torch.Tensor:
        """Ranking positions ``[m]`` of ``images`` ``[m]`` in class k: a vectorised binary search (~log2(N) rounds)
        on the key (-s_k, index), in numpy (torch's per-call overhead dominates for a few keys). The margins are
        float32/float64 arithmetic of the same three operations as :func:`_margin`, hence the same values."""
        packed = self._ranking(k).numpy()                                    # (shared memory)
        probs, top = self.probs.numpy(), self.top.numpy()
        scale = top.dtype.type(TIE_SCALE)
        nbits, mask = self.nbits, (1 << self.nbits) - 1
        span = (nbits + 14) // 8
        shifts = 8 * np.arange(span, dtype=np.int64)

        def image_at(pos: np.ndarray) -> np.ndarray:
            start = pos * nbits
            byte = (start >> 3)[:, None] + np.arange(span)
            return ((packed[byte].astype(np.int64) << shifts).sum(1) >> (start & 7)) & mask

        imgs = torch.as_tensor(images, dtype=torch.long).reshape(-1).numpy()
        key = (probs[imgs, k] - top[imgs]) + scale * top[imgs]               # [m]
        lo = np.zeros(len(imgs), dtype=np.int64)
        hi = np.full(len(imgs), self.n, dtype=np.int64)
        active = lo < hi
        while active.any():
            mid = np.minimum((lo + hi) // 2, self.n - 1)
            other = image_at(mid)
            s = (probs[other, k] - top[other]) + scale * top[other]
            before = (s > key) | ((s == key) & (other < imgs))               # ranks strictly above the image
            lo = np.where(active & before, mid + 1, lo)
            hi = np.where(active & ~before, mid, hi)
            active = lo < hi
        if len(imgs) and not (image_at(np.minimum(lo, self.n - 1)) == imgs).all():
            raise RuntimeError("ranking lookup failed: margins are not reproducible (NaN in probs?)")
        return torch.from_numpy(lo)


# ---------------------------------------------------------------------------------------------------------------
# The bisection step on one ranking (pure)
# ---------------------------------------------------------------------------------------------------------------

def bisection_pick(positions: torch.Tensor, positive: torch.Tensor, n: int, order: int = 1) -> Optional[int]:
    """The ranking position GALAXY queries on one class's graph, or None where no path exists.

    positions ``[m]`` int64: ranking positions of the labeled images, strictly increasing; positive ``[m]`` bool:
    their polarity; n: length of the ranking; order r >= 1: images up to r places apart are joined, except two
    labeled images of opposite polarity.

    The shortest path between a positive and a negative labeled image through unlabeled images always joins two
    labeled images adjacent in the ranking (a path that passes over a labeled image can be cut at it), so only
    the m - 1 adjacent pairs of opposite polarity are examined, in closed form:

    * a gap of G >= 1 unlabeled images between them (distance D = G + 1): ``d = max(2, ceil(D / r))`` steps;
    * no gap (G = 0; never a path at r = 1): 2 steps if an unlabeled image lies within r places of both (the
      nearest unlabeled image beyond the block of labeled images around them), else no path.

    The pair with the fewest steps wins, ties to the topmost pair. The query is an image halfway along a shortest
    path, ``(d + 1) // 2`` steps from the negative and ``d // 2`` from the positive (the authors'
    ``path[len(path) // 2]`` with the path running from the negative), the one nearest the pair's midpoint, ties
    toward the positive. At r = 1 this is the middle of the run, rounded toward the positive.
    """
    m = len(positions)
    if m < 2:
        return None
    a, b = positions[:-1], positions[1:]                                    # adjacent labeled pairs, a < b
    opposite = positive[:-1] != positive[1:]
    gap_dist = b - a                                                        # D = G + 1
    steps = torch.full((m - 1,), n + 2, dtype=torch.long)                  # > any real path length: no path
    with_gap = opposite & (gap_dist > 1)
    steps[with_gap] = torch.clamp(-torch.div(-gap_dist[with_gap], order, rounding_mode="floor"), min=2)
    left_u = right_u = None
    if order > 1:
        # blocks of consecutive labeled positions: the nearest unlabeled image below / above each labeled image
        brk = positions[1:] - positions[:-1] > 1                            # [m - 1]
        block = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(brk.long(), 0)])     # [m] block id
        first = positions[torch.cat([torch.ones(1, dtype=torch.bool), brk])]                   # [blocks]
        last = positions[torch.cat([brk, torch.ones(1, dtype=torch.bool)])]
        below, above = first[block] - 1, last[block] + 1                    # [m]
        adj = opposite & (gap_dist == 1)
        left_u = below[:-1]                                                 # nearest unlabeled below a (= below b)
        right_u = above[:-1]
        left_ok = adj & (left_u >= 0) & (left_u >= b - order)
        right_ok = adj & (right_u < n) & (right_u <= a + order)
        steps[left_ok | right_ok] = 2
    best = int(steps.min())
    if best > n:
        return None
    i = int(torch.nonzero(steps == best)[0, 0])                             # topmost pair with the fewest steps
    ai, bi, pos_top = int(a[i]), int(b[i]), bool(positive[i])
    dist = bi - ai
    if dist > 1:
        j = (best + 1) // 2                                                 # steps from the negative end
        lo = max((j - 1) * order + 1, dist - (best - j) * order)
        hi = min(j * order, dist - (best - j - 1) * order - 1)
        off = min(max((dist + 1) // 2, lo), hi)                             # nearest the midpoint, toward +
        return bi - off if pos_top else ai + off
    lu, ru = int(left_u[i]), int(right_u[i])
    l_ok = lu >= 0 and lu >= bi - order
    r_ok = ru < n and ru <= ai + order
    if l_ok and r_ok:
        dl, dr = ai - lu, ru - bi
        if dl != dr:
            return lu if dl < dr else ru
        return lu if pos_top else ru                                        # tie: the positive's side
    return lu if l_ok else ru


# ---------------------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------------------

def _check_pool(probs: torch.Tensor, labels: torch.Tensor, budget: int) -> torch.Tensor:
    if probs.dim() != 2 or labels.dim() != 1 or len(labels) != len(probs):
        raise ValueError(f"probs must be [N, C] and labels [N]; got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if not bool(torch.isfinite(probs.sum())):                            # no [N, C] temporary
        raise ValueError("probs holds a non-finite value")
    labels = torch.as_tensor(labels, dtype=torch.long)
    c = probs.shape[1]
    if bool(((labels < -1) | (labels >= c)).any()):
        raise ValueError(f"labels must be -1 (unlabeled) or a class in [0, {c})")
    n_unlabeled = int((labels < 0).sum())
    if budget < 0 or budget > n_unlabeled:
        raise ValueError(f"budget {budget} is not in [0, {n_unlabeled}] (the number of unlabeled images)")
    return labels


def _ask(oracle: Oracle, image: int, num_classes: int) -> int:
    y = int(oracle(image))
    if not 0 <= y < num_classes:
        raise ValueError(f"oracle returned {y} for image {image}; classes are 0..{num_classes - 1}")
    return y


class _LabeledPositions:
    """Per class, the ranking positions of the labeled images with their polarity, sorted, encoded as
    ``2 * position + positive`` in one block ``[C, capacity]`` reserved at once (int32 below 2^30 images; pages are
    committed as classes fill up): 4 bytes per class and labeled image, no heap fragmentation. Brought up to date
    lazily from the log of revealed images when the class is visited."""

    def __init__(self, num_classes: int, n: int, capacity: int):
        dtype = torch.int32 if 2 * n + 1 < 2 ** 31 else torch.int64
        self.buf = torch.empty(num_classes, max(1, capacity), dtype=dtype)
        self.count = [-1] * num_classes                                     # -1: class not visited yet
        self.synced = [0] * num_classes                                     # log entries included

    def get(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions [m] int64 increasing, positive [m] bool) of class k."""
        v = self.buf[k, :self.count[k]].long()
        return torch.bitwise_right_shift(v, 1), torch.bitwise_and(v, 1).bool()

    def init(self, k: int, rankings: OvrRankings, revealed: torch.Tensor, synced: int) -> None:
        lab = revealed[rankings.order(k)]                                   # labels in ranking order
        pos = torch.nonzero(lab >= 0).flatten()
        self.buf[k, :len(pos)] = 2 * pos + (lab[pos] == k)
        self.count[k], self.synced[k] = len(pos), synced

    def insert(self, k: int, positions: torch.Tensor, positive: torch.Tensor) -> None:
        """Merge new distinct positions into class k's sorted row (O(m), no sort of the whole)."""
        m, q = self.count[k], len(positions)
        new = torch.sort(2 * positions + positive.long()).values.to(self.buf.dtype)
        cur = self.buf[k, :m]
        slots = torch.searchsorted(cur, new) + torch.arange(q)
        keep = torch.ones(m + q, dtype=torch.bool)
        keep[slots] = False
        merged = torch.empty(m + q, dtype=self.buf.dtype)
        merged[slots] = new
        merged[keep] = cur
        self.buf[k, :m + q] = merged
        self.count[k] = m + q


def galaxy_select(probs: torch.Tensor, labels: torch.Tensor, budget: int, oracle: Oracle,
                  generator: torch.Generator, class_order: str = "round-robin",
                  graph_order: str = "paired") -> torch.Tensor:
    """GALAXY's batch: ``budget`` distinct unlabeled image indices ``[budget]`` int64, in the order picked.

    probs ``[N, C]``: softmax outputs of the whole pool; labels ``[N]``: the class of each labeled image, -1 where
    unlabeled; oracle(i) -> the class of image i, called once per pick, its answer used by the later picks;
    class_order: ``"round-robin"`` (the authors: pick t uses class t mod C) or ``"random"`` (LabelBench: a class
    drawn uniformly per pick). With C = 2 only class 0's ranking is used (see the module docstring). Randomness
    (the random class, the random fallback) comes from ``generator`` only.

    graph_order: ``"paired"`` (this project) or ``"authors"``. One order r for all classes, 1 at the start of the
    batch and kept to its end; a pick whose class has no path at r raises it by one (up to N) and retries once.
    Under ``"paired"`` a class without a labeled positive or without a labeled negative picks at random and leaves
    r as it is; under ``"authors"`` it raises r too (its pick is the same random draw).
    """
    if class_order not in CLASS_ORDERS:
        raise ValueError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
    if graph_order not in GRAPH_ORDERS:
        raise ValueError(f"graph_order must be one of {GRAPH_ORDERS}, got {graph_order!r}")
    revealed = _check_pool(probs, labels, budget).clone()
    n, c = probs.shape
    classes = [0] if c == 2 else list(range(c))
    rankings = OvrRankings(probs)
    unlabeled = revealed < 0                                                # [N]
    log: list[int] = []                                                     # images revealed in this batch
    graphs = _LabeledPositions(c, n, n - int(unlabeled.sum()) + budget)
    order_r = 1
    picks: list[int] = []
    for t in range(budget):
        if class_order == "round-robin":
            k = classes[t % len(classes)]
        else:
            k = classes[int(torch.randint(len(classes), (1,), generator=generator))]
        if graphs.count[k] < 0:
            graphs.init(k, rankings, revealed, len(log))
        elif graphs.synced[k] < len(log):
            new = torch.tensor(log[graphs.synced[k]:], dtype=torch.long)
            graphs.insert(k, rankings.positions_of(k, new), revealed[new] == k)
            graphs.synced[k] = len(log)
        positions, positive = graphs.get(k)
        pos = None
        if bool(positive.any()) and not bool(positive.all()):
            pos = bisection_pick(positions, positive, n, order_r)
            if pos is None and order_r < n:
                order_r += 1                                                # authors: raise once, retry once
                pos = bisection_pick(positions, positive, n, order_r)
        elif graph_order == "authors" and order_r < n:
            order_r += 1                                # authors: no path without both polarities, raised anyway
        if pos is None:
            free = torch.nonzero(unlabeled).flatten()
            image = int(free[int(torch.randint(len(free), (1,), generator=generator))])
        else:
            image = int(rankings.images_at(k, torch.tensor([pos]))[0])
        revealed[image] = _ask(oracle, image, c)
        unlabeled[image] = False
        log.append(image)
        picks.append(image)
    return torch.tensor(picks, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------
# Wiring: the model's softmax over the pool, the annotator's labels as the oracle
# ---------------------------------------------------------------------------------------------------------------

OPTIONS = ("galaxy_class_order", "galaxy_graph_order")   # argparse dests that shape GALAXY's picks (recorded)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("GALAXY (configuration galaxy)")
    g.add_argument("--galaxy-class-order", choices=CLASS_ORDERS, default="round-robin",
                   help="the class whose ranking each pick bisects: round-robin (the authors' code) or drawn at "
                        "random per pick (LabelBench)")
    g.add_argument("--galaxy-graph-order", choices=GRAPH_ORDERS, default="paired",
                   help="when the graph order r (shared by all classes, 1 at the start of a batch, kept to its end) "
                        "is raised: paired (default) only at a pick whose class has labeled images of both "
                        "polarities but no path; authors also at a pick whose class lacks a labeled positive or "
                        "negative, as the authors' code does (its search finds no path there), which this project "
                        "skips because raising cannot create a path there and would widen every class's graph "
                        "each time a still unlabeled rare class comes round")


def pool_softmax(ctx: QueryContext, what: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Softmax outputs ``[N, C]`` (float32, CPU) of ``models[0]`` over the images the query may look at, the
    labeled ones and those offered (``ctx.unlabeled``: the whole rest of the pool, or a protocol's random subset
    of it), their labels ``[N]`` with -1 at the offered ones, and their pool positions ``[N]`` (sorted): the
    selections work on rows 0..N-1 and the query maps them back."""
    data = ctx.data
    keep = np.union1d(np.asarray(ctx.labeled, dtype=np.int64), np.asarray(ctx.unlabeled, dtype=np.int64))
    logits, _ = penultimate_outputs(ctx.models[0], data.pool_source, data.split.pool[keep], ctx.device,
                                    ctx.batch_size, features=False, desc=ctx.describe(what))
    for r in range(0, len(logits), 1 << 16):                                  # in place, block by block
        logits[r:r + (1 << 16)] = torch.softmax(logits[r:r + (1 << 16)], 1)
    labels = torch.full((len(keep),), -1, dtype=torch.long)
    rows = np.searchsorted(keep, np.asarray(ctx.labeled, dtype=np.int64))
    labels[torch.as_tensor(rows)] = torch.as_tensor(np.asarray(data.split.pool_labels)[ctx.labeled],
                                                    dtype=torch.long)
    return logits, labels, keep


def annotator(ctx: QueryContext, keep: np.ndarray) -> Oracle:
    """oracle(row) -> the label an annotator returns for the pool position ``keep[row]``."""
    pool_labels = np.asarray(ctx.data.split.pool_labels)
    return lambda i: int(pool_labels[keep[i]])


def galaxy_query(ctx: QueryContext) -> QueryResult:
    """GALAXY on ``models[0]``'s softmax over the pool; each pick's label comes from ``ctx.data.split.pool_labels``
    as soon as it is picked (an annotator inside the batch); the class order is ``--galaxy-class-order``, the rule
    that raises the graph's order ``--galaxy-graph-order``."""
    probs, labels, keep = pool_softmax(ctx, "pool softmax")
    order = ctx.options.get("galaxy_class_order") or "round-robin"
    graph_order = ctx.options.get("galaxy_graph_order") or "paired"
    picks = galaxy_select(probs, labels, ctx.budget, annotator(ctx, keep), ctx.generator, class_order=order,
                          graph_order=graph_order)
    return QueryResult(keep[picks.numpy()])


SPECS = (AcquisitionSpec("galaxy", galaxy_query, title="GALAXY", options=OPTIONS, add_arguments=add_arguments,
                         reveals_labels=True, needs=frozenset({"pool_labels"}),
                         example=Example("galaxy", {"galaxy_class_order": "round-robin"}, bars=("pool softmax",))),)
