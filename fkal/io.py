"""Atomic file writes and the results file.

Every file is written to a temporary name in the same folder and renamed, so an interrupted write
leaves the previous file (or none) in place, never a truncated one.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)             # mkstemp makes 0600; give the file the usual permissions
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:                           # named by the file meant, not by its temporary name
        raise OSError(e.errno, e.strerror, os.fspath(path) if e.filename is None or tmp is None
                      or os.fspath(e.filename) == os.fspath(tmp) else e.filename) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writes interrupted by a crash or a kill left directly in ``folder`` (the
    ``.{name}.*.tmp`` of ``atomic_path``); returns them. Call it only while holding the lock that every writer
    into ``folder`` holds, so that no write is in flight there."""
    folder = Path(folder)
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))


def save_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_json(obj: Any, path: str | os.PathLike) -> None:
    save_text(json.dumps(obj, indent=1, sort_keys=True), path)


def append_jsonl(record: dict, path: str | os.PathLike) -> Optional[Path]:
    """Append one record as one line with a single ``write`` (O_APPEND), then fsync, holding ``{path}.lock``
    (``filelock``: processes writing other configurations of the same run append to the same file).

    A file whose last line was cut short (a crash mid-append) keeps valid JSON Lines: the torn fragment is first
    moved, bytes unchanged, to ``{name}.torn-{k}`` beside the file (k = 1, 2, ... the first free one) and cut from
    it, then the record is appended. Returns the fragment's new path, or None when the file ended whole.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with FileLock(str(path) + ".lock"):
        moved = _move_torn_tail(path)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) < len(line):      # a short write: the disk filled up in the middle of the line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as e:                        # name the file (os.write and os.fsync do not)
            raise OSError(e.errno, e.strerror, os.fspath(path)) from None
        finally:
            os.close(fd)
    return moved


def _move_torn_tail(path: Path) -> Optional[Path]:
    """Move the bytes after the last newline of ``path`` (a line cut short) to ``{name}.torn-{k}``; None when the
    file is missing, empty or ends with a newline."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        start = max(0, size - (1 << 20))
        while True:                                 # the last newline, reading back in 1 MB steps
            f.seek(start)
            chunk = f.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
        keep = start + cut + 1 if cut >= 0 else 0
        f.seek(keep)
        fragment = f.read()
    k = 1
    while (path.parent / f"{path.name}.torn-{k}").exists():
        k += 1
    target = path.parent / f"{path.name}.torn-{k}"
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(fragment)
    os.truncate(path, keep)
    return target


def load_torch(path: str | os.PathLike, fix: str) -> Any:
    """``torch.load`` of a file this toolkit wrote, with ``weights_only=True`` (tensors, numbers, strings and
    containers; never arbitrary code). A damaged or foreign file is a ``UserError`` naming it and ``fix``."""
    from .errors import UserError
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: {fix}") from None
    except Exception as e:      # zipfile, pickle, EOF, unpickling-policy and storage errors all mean a bad file
        raise UserError(f"cannot read {path}: the file is damaged or not one this toolkit wrote "
                        f"({_load_problem(e)}); {fix}") from None


def _load_problem(e: Exception) -> str:
    """``torch.load``'s error in a few words: its first sentence, without terminal escape codes; the refusal of
    ``weights_only`` said plainly."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    if "Weights only load failed" in text:
        return "it holds Python objects besides tensors, which are not loaded (weights_only)"
    first = re.split(r"(?<=[^.\s]{2})\. |\n", text, maxsplit=1)[0].strip().rstrip(".")
    if len(first) > 120:
        first = first[:117].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextmanager
def exclusive(path: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while the block runs: a second process that asks
    for the same lock waits (``wait``) or ends with one ``UserError`` naming ``what``. The operating system
    releases the lock when the process dies, so a killed run never leaves a stale lock behind."""
    import fcntl
    from .errors import UserError
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(f"{what} is being run by another process right now (lock {path}); wait for it to "
                            "finish, or run other configurations or runs side by side") from None
        yield
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Records of a results file and one warning per unreadable line (file and line named)."""
    records, warnings = [], []
    path = Path(path)
    if not path.exists():
        return records, warnings
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            records.append(rec)
        except ValueError as e:
            warnings.append(f"{path}:{n}: skipped a broken line ({e})")
    return records, warnings
