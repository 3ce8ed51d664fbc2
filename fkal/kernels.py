"""Match kernels between validation centers and pool images (paper section 4).

Features of a set of images are per-scale matrices: ``z[j]`` is ``[N, L_j]`` (descriptors pooled from tap j) and
``g[j]`` is ``[N, L_j]`` (Fisher scores pooled the same way). Every kernel maps two feature sets to an
``[A, B]`` similarity block, so the pool can be streamed in chunks (``topk_similar``).

Where z and g come from is the task model's business (``fkal.models``: taps before the ReLU by default, after it
with ``--taps post`` as in the authors' release). What happens to them here, against the paper and the release:

* standardization (``STANDARDIZATIONS``, the command line's ``--standardize``), per image and per scale, of z and
  of g alike. ``unit`` (the default): zero mean and unit norm, so the inner product of one scale is the Pearson
  correlation of the two rows and every scale weighs the same in the sum over scales. ``release``:
  ``(v - mean) / (std + 1e-10)`` with the unbiased std, as the release's ``main_descr.py`` and ``gen_descr.py``
  do; a scale's inner product is then (L_j - 1) times the Pearson correlation, so scale j weighs L_j - 1 (at L=80
  on LeNet: 9, 19 and 49, fc1 carrying 49/77 = 64%). The paper (section 4.1, before eq. 6) says "zero mean and
  unit variance" and does not say how the scales are weighed; taken literally that is the release's weighting
  (L_j, or L_j - 1 with the unbiased variance), and ``unit`` is it divided by sqrt(L_j) (sqrt(L_j - 1)).
* kernel: ``pcc`` is R_z (eq. 6), ``pfk`` the product R_zg of eq. 12 (the paper), ``pfk-sum`` the sum R_z + R_g
  that the release computes in both k-center greedy and matching.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch


@dataclass
class Features:
    """Per-scale descriptors z and (optionally) Fisher scores g of N images; rows align across scales."""

    z: list[torch.Tensor]                   # each [N, L_j]
    g: Optional[list[torch.Tensor]] = None  # each [N, L_j]

    def __len__(self) -> int:
        return len(self.z[0])

    def rows(self, idx) -> "Features":
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long) if not isinstance(idx, slice) else idx
        return Features([z[idx] for z in self.z], None if self.g is None else [g[idx] for g in self.g])

    def to(self, device) -> "Features":
        return Features([z.to(device) for z in self.z], None if self.g is None else [g.to(device) for g in self.g])

    def standardized(self, how: str = "unit") -> "Features":
        """Every scale of z and g standardized per row by ``STANDARDIZATIONS[how]`` (new tensors)."""
        fn = standardizer(how)
        return Features([fn(z) for z in self.z], None if self.g is None else [fn(g) for g in self.g])

    def standardize_(self, how: str = "unit") -> "Features":
        """``standardized`` in place, block by block of rows, so no second copy of the features is ever held
        (a pool's features are most of a query's memory); returns self."""
        fn = standardizer(how)
        for t in self.z + (self.g or []):
            for start in range(0, len(t), _ROWS_PER_BLOCK):
                block = t[start:start + _ROWS_PER_BLOCK]
                block.copy_(fn(block))
        return self


_ROWS_PER_BLOCK = 8192     # rows standardized at a time in place (the temporaries of one block only)


class DiskFeatures:
    """Standardized per-scale features of N rows kept on disk as float16, for pools too large for memory.

    ``append(z, g)`` standardizes a batch's rows (``standardize``) and appends them to one file per scale and kind
    (``{folder}/z{j}.f16``, ``g{j}.f16``); ``rows(slice)`` maps the requested rows of each file (``np.memmap`` with
    an offset), copies them out as float32 ``Features`` on ``device`` and unmaps them, so resident memory stays
    at one chunk whatever N is (the page cache aside). float16 keeps 11 significant bits: a Pearson correlation
    of unit-norm rows changes by about 1e-3 at most, far below the gaps that decide a ranking in practice.
    Used where ``len(features) * L * 4 bytes`` (x2 with Fisher scores) exceeds ``--memory-budget``.
    """

    dtype = np.float16

    def __init__(self, folder, device: torch.device = torch.device("cpu"), how: str = "unit"):
        from pathlib import Path
        self.folder, self.device, self.how = Path(folder), device, how
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n, self.widths, self.fisher = 0, None, None

    def __len__(self) -> int:
        return self.n

    def _path(self, kind: str, j: int):
        return self.folder / f"{kind}{j}.f16"

    def append(self, z: list[torch.Tensor], g: Optional[list[torch.Tensor]]) -> None:
        """One batch: ``z[j]`` (and ``g[j]``) ``[B, L_j]`` per scale, raw; stored standardized."""
        if self.widths is None:
            self.widths, self.fisher = [t.shape[1] for t in z], g is not None
        for kind, parts in (("z", z), ("g", g or [])):
            for j, t in enumerate(parts):
                with open(self._path(kind, j), "ab") as f:
                    f.write(standardizer(self.how)(t.float()).numpy().astype(self.dtype).tobytes())
        self.n += len(z[0])

    def rows(self, idx) -> Features:
        """The rows ``idx`` (a slice, or a sequence of row numbers) as float32 ``Features`` on ``device``."""
        if isinstance(idx, slice):
            start, stop, _ = idx.indices(self.n)
            count, pick = max(0, stop - start), None
        else:                                                     # listed rows: the whole file mapped, rows read
            pick = np.asarray(idx, dtype=np.int64)
            start, count = 0, (self.n if len(pick) else 0)

        def read(kind: str, j: int) -> torch.Tensor:
            width = self.widths[j]
            if count == 0:
                return torch.zeros(0, width, device=self.device)
            mapped = np.memmap(self._path(kind, j), dtype=self.dtype, mode="r",
                               offset=start * width * np.dtype(self.dtype).itemsize, shape=(count, width))
            chunk = np.array(mapped if pick is None else mapped[pick], dtype=np.float32)   # [count or len(idx), L_j]
            del mapped                                            # unmapped: its pages leave the process
            return torch.from_numpy(chunk).to(self.device)
        z = [read("z", j) for j in range(len(self.widths))]
        g = [read("g", j) for j in range(len(self.widths))] if self.fisher else None
        return Features(z, g)

    def standardized(self, how: str = "unit") -> "DiskFeatures":
        if how != self.how:
            raise ValueError(f"these features were stored standardized by {self.how!r}, not {how!r}")
        return self                                               # stored standardized

    standardize_ = standardized

    def to(self, device) -> "DiskFeatures":
        self.device = torch.device(device)
        return self


def standardize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-row zero mean and unit norm, ``[N, L] -> [N, L]`` (``--standardize unit``, the default).

    This is the zero-mean unit-variance preprocessing of section 4.1 scaled by 1/sqrt(L), so that the inner
    product of two rows is exactly their Pearson correlation and every scale weighs the same in the sums below
    (``standardize_release`` leaves scale j a weight of L_j - 1).
    """
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=1, keepdim=True).clamp_min(eps)


def standardize_release(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-row ``(v - mean) / (std + eps)`` with the unbiased std (ddof 1), ``[N, L] -> [N, L]``
    (``--standardize release``: the authors' release, eps included).

    A row's squared norm is then (L - 1) std^2 / (std + eps)^2, about L - 1, and the inner product of two rows is
    about (L - 1) times their Pearson correlation: summed over scales, scale j weighs L_j - 1.
    """
    if v.shape[1] < 2:
        raise ValueError(f"the unbiased std of a scale needs at least 2 values, this one has {v.shape[1]}")
    v = v - v.mean(dim=1, keepdim=True)
    return v / (v.std(dim=1, keepdim=True) + eps)


STANDARDIZATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "unit": standardize, "release": standardize_release}


def standardizer(how: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-row standardization named ``how`` (``STANDARDIZATIONS``)."""
    try:
        return STANDARDIZATIONS[how]
    except KeyError:
        raise ValueError(f"unknown standardization {how!r}: choose one of {', '.join(STANDARDIZATIONS)}") from None


def pcc(a: Features, b: Features) -> torch.Tensor:
    """R_z = sum_j (Z_v^j)^T Z^j (eq. 6): ``[A, B]``, summed scale by scale (no copy of the rows is made).
    Each scale's term is weighed by what the standardization left in it (1 for ``unit``, L_j - 1 for ``release``)."""
    return _sum_of_products(a.z, b.z)


def pfk(a: Features, b: Features) -> torch.Tensor:
    """Practical Fisher kernel R_zg = sum_j ((Z_v^j)^T Z^j) o ((G_v^j)^T G^j) (eq. 12, from eq. 11): ``[A, B]``."""
    out = None
    for za, zb, ga, gb in zip(a.z, b.z, a.g, b.g):
        term = (za @ zb.T).mul_(ga @ gb.T)
        out = term if out is None else out.add_(term)
    return out


def pfk_sum(a: Features, b: Features) -> torch.Tensor:
    """R_z + R_g, the sum the authors' code release uses in place of the product of eq. 12 (in k-center greedy and
    in matching alike): ``[A, B]``."""
    return _sum_of_products(a.z + a.g, b.z + b.g)


def _sum_of_products(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum_j a[j] @ b[j]^T, ``[A, B]``, accumulated in place."""
    out = a[0] @ b[0].T
    for x, y in zip(a[1:], b[1:]):
        out.addmm_(x, y.T)
    return out


Kernel = Callable[[Features, Features], torch.Tensor]
KERNELS: dict[str, Kernel] = {"pcc": pcc, "pfk": pfk, "pfk-sum": pfk_sum}
NEEDS_FISHER = {"pcc": False, "pfk": True, "pfk-sum": True}


SIMILARITY_BLOCK = 1 << 24   # similarities per block of the matching (64 MB as float32), whatever the center count


def topk_similar(kernel: Kernel, centers: Features, pool: Features, k: int,
                 chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k pool rows per center, streaming the pool in chunks so no ``[P, N]`` matrix is ever held.

    ``chunk``: pool rows per block (default: ``SIMILARITY_BLOCK`` similarities a block, at least 1,024 rows).
    Returns values and indices, both ``[P, k]``, sorted by decreasing similarity (ties: lower index first).
    """
    n = len(pool)
    k = min(k, n)
    chunk = chunk or max(1024, SIMILARITY_BLOCK // max(1, len(centers)))
    best_v = best_i = None
    for start in range(0, n, chunk):
        sim = kernel(centers, pool.rows(slice(start, start + chunk)))           # [P, chunk]
        idx = torch.arange(start, start + sim.shape[1], device=sim.device).expand_as(sim)
        if best_v is not None:
            sim, idx = torch.cat([best_v, sim], 1), torch.cat([best_i, idx], 1)
        best_v, pos = sim.topk(min(k, sim.shape[1]), dim=1)                     # sorted, descending
        best_i = idx.gather(1, pos)
    return best_v, best_i
