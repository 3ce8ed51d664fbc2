"""One experiment on several processes: ``torchrun --nproc_per_node N run.py ...`` (PyTorch's own launcher).

Everything goes through ``torch.distributed``'s process group; with one process (no torchrun, or N = 1) every
function here is the identity and no process group exists, so the single-process path is the plain code.

How the work is shared:
  - passes over a set of images (inference, descriptors and Fisher scores, MC-dropout passes, scoring) are split
    by whole batches: global batch i (of ``batch_size`` images, in the set's order) goes to rank ``i % world``
    (``my_batches``). A batch's randomness is seeded by its global index, so an image gets the same dropout
    masks and perturbations on whatever rank processes it: N processes select exactly what one selects.
  - per-image results are gathered back into the set's order (``gather_rows``) where every rank needs them;
    large ones (the pool's descriptors) stay on their rank and only candidates travel.
  - training is ``DistributedDataParallel``: each global batch is dealt out over the ranks (``split_batch``).
  - only rank 0 writes files (``is_main``); every rank computes the same decisions from the same generators.
  - a step where a bad input can surface runs inside ``agreed()``: if it fails on any rank, every rank raises the
    same error and only rank 0 prints it. A rank that dies elsewhere is ended with the others by torchrun.
"""
from __future__ import annotations

import datetime
import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .errors import SharedUserError, UserError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when started by torchrun (or another launcher that sets the env:// variables) with more than one
    process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(timeout_minutes: float = 30.0) -> Optional[torch.device]:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``LOCAL_RANK``): NCCL with one GPU per process (``LOCAL_RANK``) where CUDA is present, gloo on the CPU.
    Returns the process's GPU, or None on the CPU. Nothing happens for a single process."""
    if not launched() or active():
        return None
    cuda = torch.cuda.is_available()
    device = None
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs here: start torchrun "
                            "with --nproc_per_node at most the number of GPUs, or with CUDA_VISIBLE_DEVICES= (none) "
                            "to run every process on the CPU")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
    # torchrun ends the other workers with SIGTERM when one fails: end quietly, the failing rank says why
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    return device


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# Sharding
# ----------------------------------------------------------------------------------------------------------------
def my_batches(n: int, batch_size: int) -> list[tuple[int, int, int]]:
    """``[(global batch index, start, stop)]`` of this rank: global batch i covers positions
    ``[i * batch_size, min(n, (i + 1) * batch_size))`` and belongs to rank ``i % world``."""
    count = -(-n // batch_size) if n else 0
    return [(i, i * batch_size, min(n, (i + 1) * batch_size)) for i in range(rank(), count, world())]


def my_positions(n: int, batch_size: int) -> np.ndarray:
    """The positions of this rank's batches (``my_batches``), in order."""
    parts = [np.arange(a, b) for _, a, b in my_batches(n, batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def sharded(source, idx: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
    """``(global batch index, positions into idx, images)`` of this rank's batches of ``source[idx]``: every rank
    reads only its own images. This rank's batches are full except possibly the set's last one, which comes last,
    so one ``source.batches`` call over the rank's positions yields exactly them."""
    idx = np.asarray(idx)
    pos = my_positions(len(idx), batch_size)
    for k, (p, x) in enumerate(source.batches(idx[pos], batch_size)):
        yield rank() + k * world(), pos[p], x


def split_batch(positions: np.ndarray) -> np.ndarray:
    """This rank's share of one global training batch: every ``world``-th image from position ``rank``; a rank
    whose share would be empty (a last batch smaller than the world) takes the batch's first image, so that every
    rank steps together."""
    mine = positions[rank()::world()]
    return mine if len(mine) or not len(positions) else positions[:1]


# ----------------------------------------------------------------------------------------------------------------
# Collectives (identities for one process)
# ----------------------------------------------------------------------------------------------------------------
def all_gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` set to rank ``src``'s, in place."""
    if active():
        for t in module.state_dict().values():
            dist.broadcast(t, src=src)


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In place, summed over the ranks (a tensor on the process group's device: CPU for gloo)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if active() and dist.get_backend() == "nccl" \
        else torch.device("cpu")


def gather_rows(local: torch.Tensor, positions: np.ndarray, n: int) -> torch.Tensor:
    """Every rank's rows ``local[k]`` (at ``positions[k]`` of a set of ``n``) put together in the set's order:
    ``[n, ...]`` on every rank, on ``local``'s device. With one process: ``local`` reordered."""
    positions = np.asarray(positions, dtype=np.int64)
    if not active():
        if len(positions) == n and (n == 0 or (positions == np.arange(n)).all()):
            return local
        out = local.new_zeros((n, *local.shape[1:]))
        out[torch.as_tensor(positions, device=local.device)] = local
        return out
    dev = _collective_device()
    meta = all_gather_object((len(positions), tuple(local.shape[1:]), local.dtype) if len(positions) else
                             (0, None, None))
    sizes = [m[0] for m in meta]
    most = max(sizes)
    if most == 0:
        return local.new_zeros((n, *local.shape[1:]))
    _, shape, dtype = next(m for m in meta if m[0])
    local = local.to(dtype).reshape(len(positions), *shape)
    padded = torch.zeros((most, *shape), dtype=local.dtype, device=dev)
    padded[:len(positions)] = local.to(dev)
    pos = torch.full((most,), -1, dtype=torch.int64, device=dev)
    pos[:len(positions)] = torch.as_tensor(positions, device=dev)
    rows = [torch.empty_like(padded) for _ in range(world())]
    where = [torch.empty_like(pos) for _ in range(world())]
    dist.all_gather(rows, padded)
    dist.all_gather(where, pos)
    out = torch.zeros((n, *shape), dtype=local.dtype, device=dev)
    for r, w, size in zip(rows, where, sizes):
        out[w[:size]] = r[:size]
    return out.to(local.device)


def on_main(fn, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` run on rank 0 only (files read and decisions made once), its result handed to every
    rank; a ``UserError`` it raises is raised on every rank. ``fn`` must not use collectives."""
    if not active():
        return fn(*args, **kwargs)
    outcome: tuple = ("ok", None)
    if is_main():
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except UserError as e:
            outcome = ("error", str(e))
    kind, value = broadcast_object(outcome)
    if kind == "error":
        raise SharedUserError(value)
    return value


def gather_list(local: Sequence[Any]) -> list[Any]:
    """The concatenation of every rank's list, rank by rank."""
    return [x for part in all_gather_object(list(local)) for x in part]


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------
@contextmanager
def agreed() -> Iterator[None]:
    """Run a block that may fail on bad input on every rank, then agree: when it failed on any rank, every rank
    raises that rank's ``UserError`` (the lowest failing rank's), so all of them end the same way and none
    waits for the others. Other exceptions pass through unchanged on the rank that raised them."""
    if not active():
        yield
        return
    error: Optional[str] = None
    try:
        yield
    except UserError as e:
        error = str(e)
    errors = all_gather_object(error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        r, message = failed[0]
        raise SharedUserError(message if r == 0 else f"(rank {r}) {message}")


def print_once(message: str, file=sys.stderr) -> None:
    """Print on rank 0 only."""
    if is_main():
        print(message, file=file, flush=True)
