"""Several ranks of one experiment as threads of one process, for unit tests of the code paths torchrun takes.

``run_ranks(world, fn, monkeypatch)`` calls ``fn(rank)`` on ``world`` threads at once, with ``fkal.distributed``'s
``world``, ``rank``, ``all_gather_object`` and ``all_reduce_sum`` answering as under torchrun: each collective
waits for every rank (a barrier), then hands each one the list of all ranks' values (or their sum). Only these
four are replaced; code that calls another collective is not covered here (tests/test_distributed.py runs real
processes).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import torch

from fkal import distributed as D


def run_ranks(world: int, fn: Callable[[int], Any], monkeypatch, timeout: float = 60.0) -> list[Any]:
    """``[fn(0), ..., fn(world - 1)]``, each run on its own thread as that rank; the first error is raised."""
    local = threading.local()
    barrier = threading.Barrier(world, timeout=timeout)
    slots: list[Any] = [None] * world

    def exchange(value: Any) -> list[Any]:
        slots[local.rank] = value
        barrier.wait()                  # every rank has written its value
        out = list(slots)
        barrier.wait()                  # every rank has read them all: the slots may be reused
        return out

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
        parts = exchange(t.clone())
        t.copy_(torch.stack(parts).sum(0))
        return t

    monkeypatch.setattr(D, "world", lambda: world)
    monkeypatch.setattr(D, "rank", lambda: local.rank)
    monkeypatch.setattr(D, "all_gather_object", exchange)
    monkeypatch.setattr(D, "all_reduce_sum", all_reduce_sum)
    results: list[Any] = [None] * world
    errors: list[BaseException] = []

    def target(r: int) -> None:
        local.rank = r
        try:
            results[r] = fn(r)
        except BaseException as e:      # noqa: BLE001 - handed to the caller below
            errors.append(e)
            barrier.abort()             # the other ranks stop waiting

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return results
