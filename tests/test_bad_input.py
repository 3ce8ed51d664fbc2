"""Bad input, one case per row: every case ends with one ``error:`` line on stderr that names the problem and the
fix, exit code 2 (130 for Ctrl-C), no traceback, and the files already written unchanged (their bytes compared
before and after); the cases a run can get past end with exit code 0 and one ``warning:`` line each.

Folders made read-only cannot be tested with chmod when the tests run as root (root writes into them anyway):
``read_only`` makes the file system refuse writes under a folder instead, as a read-only mount or missing
permissions do (EROFS or EACCES from ``os.open``, ``os.mkdir``, ``os.replace`` and the rest).
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from fkal.reporting import cli as run_plot
from fkal.data.synthetic import write_mnist
from fkal.io import read_jsonl
from fkal.launch import run_main                       # run.py's entry: one-line warnings, Ctrl-C while importing

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--run-stop", "1", "--imbalance-ratios", "4", "--train-size", "400", "--val-size", "100",
            "--unsup-epochs", "1", "--epochs", "1", "--iterations", "2", "--pool-size", "10", "--eval-batch", "128",
            "--no-progress"]
CONFIGS = ["random", "pcc-L20", "lloss"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Tiny MNIST-format data and a finished run of ``CONFIGS`` (2 iterations each) on it, made once; each case
    works on its own copies."""
    base = tmp_path_factory.mktemp("finished")
    data = write_mnist(base / "data")
    out = base / "out"
    assert run_main(["--initial", "--data-root", str(data), "--out", str(out), *SETTINGS]) == 0
    assert run_main(["--only", *CONFIGS, "--data-root", str(data), "--out", str(out), *SETTINGS]) == 0
    return data, out


@dataclass
class Case:
    """What a case works on: copies of the finished run (``out``) and of the data (``data``)."""

    data: Path
    out: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    watch: list = field(default_factory=list)         # folders whose files must keep their bytes
    may_add: tuple = ()                                 # names of files the command may add there
    after: Optional[Callable[[], None]] = None          # more checks once the command has run

    def args(self, *extra, out=None, data=None) -> list[str]:
        return ["--data-root", str(data or self.data), "--out", str(out or self.out), *SETTINGS, *extra]

    @property
    def run0(self) -> Path:
        return self.out / "MNIST" / "run0"

    def config(self, name: str) -> Path:
        return self.run0 / "ir4" / "rotation" / name

    def raw(self, name: str) -> Path:
        return self.data / "MNIST" / "raw" / name

    def read_only(self, folder: Path, code: int = errno.EROFS) -> None:
        """From now on the file system refuses every change under ``folder`` with ``code``."""
        read_only(self.monkeypatch, folder, code)


def read_only(monkeypatch, folder: Path, code: int) -> None:
    folder = str(Path(folder).absolute())

    def inside(path) -> bool:
        path = os.path.abspath(os.fsdecode(path))
        return path == folder or path.startswith(folder + os.sep)

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open, real_mkdir, real_replace, real_rename = os.open, os.mkdir, os.replace, os.rename
    real_unlink, real_rmdir, real_access, real_builtin_open = os.unlink, os.rmdir, os.access, builtins.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def open_(path, flags, *a, **k):
        if flags & writing and inside(path):
            refuse(path)
        return real_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            refuse(path)
        return real_mkdir(path, *a, **k)

    def two(real):
        def move(src, dst, *a, **k):
            if inside(src) or inside(dst):
                refuse(dst)
            return real(src, dst, *a, **k)
        return move

    def one(real):
        def change(path, *a, **k):
            if inside(path):
                refuse(path)
            return real(path, *a, **k)
        return change

    def access(path, mode, *a, **k):
        return False if mode & os.W_OK and inside(path) else real_access(path, mode, *a, **k)

    def builtin_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_builtin_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", two(real_replace))
    monkeypatch.setattr(os, "rename", two(real_rename))
    monkeypatch.setattr(os, "unlink", one(real_unlink))
    monkeypatch.setattr(os, "rmdir", one(real_rmdir))
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", builtin_open)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (lock files aside: empty, made by whoever asks for the lock)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def records(out: Path) -> list[dict]:
    return read_jsonl(out / "MNIST" / "run0" / "results.jsonl")[0]


# ----------------------------------------------------------------------------------------------------------------
# The cases: name -> (setup, expected). A setup prepares its copies and returns the command: a list (run.py's
# arguments) or ("plot", arguments) for run_plot.py.
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Error:
    needles: tuple[str, ...]
    code: int = 2
    warnings: int = 0                                   # one-line warnings allowed before the error


@dataclass(frozen=True)
class Warns:
    needles: tuple[str, ...]
    lines: int


def error(*needles) -> Error:
    return Error(needles)


CASES: dict[str, tuple[Callable[[Case], object], object]] = {}


def case(name: str, expected):
    def register(setup):
        CASES[name] = (setup, expected)
        return setup
    return register


# --- the list ----------------------------------------------------------------------------------------
@case("torn last results line, same command again",
      Warns(("results.jsonl:6: skipped a broken line", "its last line was cut short"), lines=2))
def _(c: Case):
    before = records(c.out)
    results = c.run0 / "results.jsonl"
    cut(results, len(results.read_bytes()) - 40)                    # lloss's iteration 2, cut short

    def after():
        now = records(c.out)
        assert len(now) == 6 and [r["iteration"] for r in now if r["config"] == "lloss"] == [1, 2]
        redone = now[-1]
        for name in ("selected_class_counts", "test_accuracy", "per_class_accuracy", "settings_id"):
            assert redone[name] == before[-1][name]
    c.after = after
    return ["--only", *CONFIGS]


@case("other --pool-size into the same folder", error("--pool-size: 10 there, 20 now", "--fresh random",
                                                      "another --out"))
def _(c):
    c.watch.append(c.out)
    return ["--only", "random", "--pool-size", "20"]


@case("--iterations 5 after a run finished with other --epochs", error("--epochs: 1 there, 3 now"))
def _(c):
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "5", "--epochs", "3"]


@case("--iterations 0", error("--iterations: must be at least 1 (got 0)"))
def _(c):
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "0"]


@case("--iterations -1", error("--iterations: must be at least 1 (got -1)"))
def _(c):
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "-1"]


@case("--epochs -3", error("--epochs: must be at least 1 (got -3)"))
def _(c):
    c.watch.append(c.out)
    return ["--only", "random", "--epochs", "-3"]


@case("--pool-size larger than the pool", error("need 2000 pool images", "lower --pool-size"))
def _(c):
    c.watch.append(c.tmp / "new")
    return c.args("--only", "random", "pfk-phat-L80", "--pool-size", "1000", out=c.tmp / "new")


@case("truncated state_b02.pt that resume needs", error("state_b02.pt", "damaged", "failed finding central "
                                                          "directory);", "delete it"))
def _(c):
    cut(c.config("random") / "state_b02.pt", 300)
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("truncated init_rotation.pt", error("init_rotation.pt", "damaged", "made anew"))
def _(c):
    cut(c.run0 / "ir4" / "init_rotation.pt", 300)
    c.watch.append(c.out)
    return ["--only", "pfk-phat-L80"]


@case("read-only --out for run.py --initial", error("cannot write into --out", "Read-only file system"))
def _(c):
    new = c.tmp / "ro"
    new.mkdir()
    c.read_only(new)
    c.watch.append(new)
    return ["--initial", *c.args(out=new)]


@case("read-only --out for a resumed run", error("Read-only file system", "--out"))
def _(c):
    c.read_only(c.out)
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("read-only run folder, --out itself writable", error("cannot write", "Permission denied", "run the same "
                                                           "command again"))
def _(c):
    c.read_only(c.run0, errno.EACCES)
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("run_plot.py --save into a read-only folder", error("cannot write", "Read-only file system", "--figures"))
def _(c):
    figures = c.tmp / "figures"
    figures.mkdir()
    c.read_only(figures)
    c.watch.append(figures)
    return "plot", ["--out", str(c.out), "--save", "--figures", str(figures)]


@case("truncated IDX file", error("train-images-idx3-ubyte", "damaged", "cut short"))
def _(c):
    cut(c.raw("train-images-idx3-ubyte"), 5000)
    c.watch.append(c.data)
    return c.args("--only", "random", out=c.tmp / "new")


@case("--train-size above the dataset", error("--train-size", "600 exist"))
def _(c):
    c.watch.append(c.tmp / "new")
    return c.args("--only", "random", "--train-size", "70000", out=c.tmp / "new")


@case("a state whose unpickling would run code", error("state_b02.pt", "damaged or not one this toolkit wrote",
                                                      "objects besides tensors"))
def _(c):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(c.tmp / 'ran')!r}, 'w').write('ran')",))
    torch.save({"models": [Evil()], "labeled_at": torch.zeros(3)}, c.config("random") / "state_b02.pt")
    real_load = torch.load                 # torch 2.2-2.5's default (unpickle anything) unless told weights_only=True
    c.monkeypatch.setattr(torch, "load", lambda *a, weights_only=False, **k: real_load(*a, weights_only=weights_only,
                                                                                        **k))
    c.watch.append(c.out)
    c.after = lambda: not (c.tmp / "ran").exists() or pytest.fail("the checkpoint ran code")
    return ["--only", "random", "--iterations", "3"]


# --- disk full -------------------------------------------------------------------------------------------------
def disk_full(c: Case, name_end: str) -> None:
    """``os.replace`` (the last step of every file write) onto a file whose name ends in ``name_end`` fails with
    ENOSPC, as does an append to it."""
    real_replace, real_write = os.replace, os.write
    fds = {}
    real_open = os.open

    def replace(src, dst, *a, **k):
        if os.fsdecode(dst).endswith(name_end):
            raise OSError(errno.ENOSPC, "No space left on device", os.fsdecode(dst))
        return real_replace(src, dst, *a, **k)

    def open_(path, flags, *a, **k):
        fd = real_open(path, flags, *a, **k)
        fds[fd] = os.fsdecode(path)
        return fd

    def write(fd, data):
        if fds.get(fd, "").endswith(name_end):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    c.monkeypatch.setattr(os, "replace", replace)
    c.monkeypatch.setattr(os, "open", open_)
    c.monkeypatch.setattr(os, "write", write)


@case("disk full while writing a state", error("state_b03.pt", "No space left on device", "free some disk space"))
def _(c):
    disk_full(c, "state_b03.pt")
    c.watch.append(c.out)

    def after():       # no temporary file left, and the same command resumes once there is space
        assert not list(c.out.rglob("*.tmp"))
        c.monkeypatch.undo()
        assert run_main(c.args("--only", "random", "--iterations", "3")) == 0
        assert [r["iteration"] for r in records(c.out) if r["config"] == "random"] == [1, 2, 3]
    c.after = after
    return ["--only", "random", "--iterations", "3"]


@case("disk full while appending a record", error("results.jsonl", "No space left on device"))
def _(c):
    disk_full(c, "results.jsonl")
    c.watch.append(c.out)
    c.may_add = ("state_b03.pt",)                      # saved before its record; redone on resume
    return ["--only", "random", "--iterations", "3"]


@case("disk full while writing the split", error("split.npz", "free some disk space"))
def _(c):
    disk_full(c, "split.npz")
    c.watch.append(c.tmp / "new")
    return ["--initial", *c.args(out=c.tmp / "new")]


@case("disk full while writing an initial model", error("init_random.pt", "free some disk space"))
def _(c):
    disk_full(c, "init_random.pt")
    (c.run0 / "ir4" / "init_random.pt").unlink()
    c.watch.append(c.out)
    return ["--initial", *c.args()]


@case("disk full while writing a configuration's settings.json", error("settings.json", "free some disk space"))
def _(c):
    disk_full(c, "settings.json")
    c.watch.append(c.out)
    return ["--only", "pfk-phat-L80"]


@case("disk full while run_plot.py --save writes", error("results.md", "No space left on device"))
def _(c):
    disk_full(c, "results.md")
    c.watch.append(c.out)
    return "plot", ["--out", str(c.out), "--save"]


# --- results lines of another schema ------------------------------------------------------------------------------
def append_line(c: Case, line: str) -> None:
    with open(c.run0 / "results.jsonl", "a") as f:
        f.write(line + "\n")


@case("results line: an object lacking fields (run.py)", Warns(("results.jsonl:7: skipped", "missing iteration"), 1))
def _(c):
    rec = records(c.out)[0]
    del rec["iteration"]
    append_line(c, json.dumps(rec))
    c.watch.append(c.config("random"))
    return ["--only", "random"]


@case("results line: a list and a number (run.py)", Warns(("results.jsonl:7: skipped", "results.jsonl:8: skipped",
                                                           "not a JSON object"), 2))
def _(c):
    append_line(c, "[1, 2]")
    append_line(c, "5")
    c.watch.append(c.config("random"))
    return ["--only", "random"]


@case("results line: an object lacking fields (run_plot.py)", Warns(("results.jsonl:7: skipped", "missing labeled"), 1))
def _(c):
    rec = records(c.out)[0]
    del rec["labeled"]
    append_line(c, json.dumps(rec))
    return "plot", ["--out", str(c.out)]


@case("results line: a list and a number (run_plot.py)", Warns(("results.jsonl:8: skipped", "not a JSON object"), 2))
def _(c):
    append_line(c, "[1, 2]")
    append_line(c, "5")
    return "plot", ["--out", str(c.out)]


@case("run_plot.py on a results file with a torn last line", Warns(("results.jsonl:6: skipped a broken line",), 1))
def _(c):
    cut(c.run0 / "results.jsonl", len((c.run0 / "results.jsonl").read_bytes()) - 40)
    return "plot", ["--out", str(c.out)]


@case("results line: bytes that are not UTF-8 (run.py)", Warns(("results.jsonl:7: skipped",), 1))
def _(c):
    with open(c.run0 / "results.jsonl", "ab") as f:
        f.write(b"\xff\xfe\x00garbage\n")
    c.watch.append(c.config("random"))
    return ["--only", "random"]


@case("results line: a field of the wrong type (run.py)", Warns(("results.jsonl:7: skipped",
                                                                 "iteration is not an integer"), 1))
def _(c):
    append_line(c, json.dumps({**records(c.out)[0], "iteration": "3"}))
    c.watch.append(c.config("random"))
    return ["--only", "random"]


@case("run_plot.py on a record written twice", Warns(("results.jsonl:7: repeats", "keeping the later line"), 1))
def _(c):
    append_line(c, json.dumps(records(c.out)[0]))
    return "plot", ["--out", str(c.out)]


@case("run_plot.py --save into a missing folder (made)", Warns((), 0))
def _(c):
    figures = c.tmp / "not" / "yet" / "there"
    c.after = lambda: (figures / "results.md").exists() or pytest.fail("nothing written")
    return "plot", ["--out", str(c.out), "--save", "--figures", str(figures)]


@case("results.jsonl is a folder", error("results.jsonl", "not a file"))
def _(c):
    (c.run0 / "results.jsonl").unlink()
    (c.run0 / "results.jsonl").mkdir()
    c.watch.append(c.out)
    return ["--only", "random"]


# --- dataset folders --------------------------------------------------------------------------------------------
def idx(c: Case, name: str, change: Callable[[bytearray], bytes]) -> None:
    path = c.raw(name)
    path.write_bytes(change(bytearray(path.read_bytes())))
    c.watch.append(c.data)


@case("IDX labels file cut short", error("train-labels-idx1-ubyte", "damaged", "cut short"))
def _(c):
    idx(c, "train-labels-idx1-ubyte", lambda b: bytes(b[:100]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX file cut inside its header", error("t10k-images-idx3-ubyte", "damaged"))
def _(c):
    idx(c, "t10k-images-idx3-ubyte", lambda b: bytes(b[:6]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX file empty", error("t10k-labels-idx1-ubyte", "damaged"))
def _(c):
    idx(c, "t10k-labels-idx1-ubyte", lambda b: b"")
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX images file with the magic number of another kind", error("train-images-idx3-ubyte", "magic number",
                                                                      "0x00000803"))
def _(c):
    idx(c, "train-images-idx3-ubyte", lambda b: bytes(b[:2] + b"\x09\x09" + b[4:]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX labels and images files swapped", error("train-images-idx3-ubyte", "magic number", "0x00000801"))
def _(c):
    images, labels = c.raw("train-images-idx3-ubyte"), c.raw("train-labels-idx1-ubyte")
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    c.watch.append(c.data)
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX files with more bytes than their header says", error("t10k-images-idx3-ubyte", "damaged"))
def _(c):
    idx(c, "t10k-images-idx3-ubyte", lambda b: bytes(b) + b"\0" * 100)
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX images and labels of different counts", error("600 images", "500 labels"))
def _(c):
    idx(c, "train-labels-idx1-ubyte", lambda b: struct.pack(">II", 0x801, 500) + bytes(b[8:508]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX labels outside 0-9", error("train-labels-idx1-ubyte", "labels outside 0-9"))
def _(c):
    idx(c, "train-labels-idx1-ubyte", lambda b: bytes(b[:8]) + b"\x0c" + bytes(b[9:]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("IDX images of another size than 28x28", error("train-images-idx3-ubyte", "28x28"))
def _(c):
    idx(c, "train-images-idx3-ubyte", lambda b: struct.pack(">IIII", 0x803, 600, 14, 56) + bytes(b[16:]))
    return c.args("--only", "random", out=c.tmp / "new")


@case("MNIST's IDX files directly in --data-root (another layout)",
      error("not where they are read from", "train-images-idx3-ubyte", "MNIST/raw", "move"))
def _(c):
    for f in list(c.raw("").iterdir()):
        f.rename(c.data / f.name)
    c.watch.append(c.data)
    return c.args("--only", "random", out=c.tmp / "new")


@case("MNIST's IDX files under Kaggle's names", error("not where they are read from", "t10k-labels.idx1-ubyte",
                                                      "rename"))
def _(c):
    for f in list(c.raw("").glob("t10k-*")):
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    c.watch.append(c.data)
    return c.args("--only", "random", out=c.tmp / "new")


@case("--data-root pointing at a file", error("--data-root", "is a file"))
def _(c):
    (c.tmp / "afile").write_text("x")
    return c.args("--only", "random", data=c.tmp / "afile", out=c.tmp / "new")


@case("ImageNet: train/ present, val/ missing", error("val is not a folder", "--data-root"))
def _(c):
    (c.tmp / "inet" / "ImageNet" / "train" / "n01").mkdir(parents=True)
    return ["--dataset", "imagenet", "--data-root", str(c.tmp / "inet"), "--out", str(c.tmp / "new"),
            "--run-stop", "1", "--imbalance-ratios", "4", "--only", "random"]


@case("ImageNet: val images flat, as the archive unpacks (another layout)",
      error("ImageNet/val", "class folder", "sorted into class folders"))
def _(c):
    from PIL import Image
    for part in ("train/n01", "val"):
        (c.tmp / "inet" / "ImageNet" / part).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(c.tmp / "inet" / "ImageNet" / "train" / "n01" / "a.JPEG")
    Image.new("RGB", (8, 8)).save(c.tmp / "inet" / "ImageNet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    c.watch.append(c.tmp / "inet")
    return ["--dataset", "imagenet", "--data-root", str(c.tmp / "inet"), "--out", str(c.tmp / "new"),
            "--run-stop", "1", "--imbalance-ratios", "4", "--only", "random"]


@case("ImageNet: an ImageFolder with no images", error("ImageNet/train", "Found no valid file", "--data-root"))
def _(c):
    for part in ("train", "val"):
        (c.tmp / "inet" / "ImageNet" / part / "n01").mkdir(parents=True)
        (c.tmp / "inet" / "ImageNet" / part / "n01" / "notes.txt").write_text("x")
    return ["--dataset", "imagenet", "--data-root", str(c.tmp / "inet"), "--out", str(c.tmp / "new"),
            "--run-stop", "1", "--imbalance-ratios", "4", "--only", "random"]


@case("a data file that cannot be read", error("train-images-idx3-ubyte", "Permission denied"))
def _(c):
    target = str(c.raw("train-images-idx3-ubyte"))
    real_open = builtins.open

    def refuse(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)
        return real_open(file, *a, **k)
    c.monkeypatch.setattr(builtins, "open", refuse)
    return c.args("--only", "random", out=c.tmp / "new")


@case("ImageNet: an image file cut short", error("cannot decode", "n02_1.JPEG", "replace the file"))
def _(c):
    from PIL import Image
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("val", 2)):
        for cls in ("n01", "n02"):
            folder = c.tmp / "inet" / "ImageNet" / part / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{cls}_{i}.JPEG")
    cut(c.tmp / "inet" / "ImageNet" / "val" / "n02" / "n02_1.JPEG", 200)
    c.watch.append(c.tmp / "inet")
    return ["--dataset", "imagenet", "--data-root", str(c.tmp / "inet"), "--out", str(c.tmp / "new"),
            "--run-stop", "1", "--imbalance-ratios", "1", "--train-size", "12", "--val-size", "4", "--pool-size", "1",
            "--iterations", "1", "--epochs", "1", "--unsupervised", "0", "--eval-batch", "4", "--no-progress",
            "--only", "random"]


def fake_svhn(root: Path) -> None:
    import scipy.io
    rng = np.random.default_rng(0)
    (root / "SVHN").mkdir(parents=True)
    for split, n in (("train", 20), ("extra", 20), ("test", 10)):
        images = rng.integers(0, 255, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": images,
                                                                "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})


def fake_cifar10(root: Path) -> None:
    import pickle
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8), "labels": list(range(10))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)


OTHER_DATASET = ["--run-stop", "1", "--imbalance-ratios", "1", "--train-size", "20", "--val-size", "5",
                 "--pool-size", "2", "--iterations", "1", "--epochs", "1", "--unsupervised", "0", "--no-progress",
                 "--only", "random"]


@case("SVHN: a .mat file cut short", Error(("train_32x32.mat", "damaged", "replace it"), warnings=1))
def _(c):
    fake_svhn(c.tmp / "svhn")                            # (not the official files: one md5 warning)
    cut(c.tmp / "svhn" / "SVHN" / "train_32x32.mat", 3000)
    c.watch.append(c.tmp / "svhn")
    return ["--dataset", "svhn", "--data-root", str(c.tmp / "svhn"), "--out", str(c.tmp / "new"), *OTHER_DATASET]


@case("CIFAR-10: a batch file cut short", Error(("data_batch_3", "damaged", "replace it"), warnings=1))
def _(c):
    fake_cifar10(c.tmp / "cifar")
    cut(c.tmp / "cifar" / "cifar-10-batches-py" / "data_batch_3", 500)
    c.watch.append(c.tmp / "cifar")
    return ["--dataset", "cifar10", "--data-root", str(c.tmp / "cifar"), "--out", str(c.tmp / "new"),
            *OTHER_DATASET]


# --- run folder files of another kind ------------------------------------------------------------------------------
@case("split.npz of another dataset", error("split.npz", "dataset: cifar10 there, mnist now"))
def _(c):
    path = c.run0 / "ir4" / "split.npz"
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    meta["settings"]["dataset"] = "cifar10"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    c.watch.append(c.out)
    return ["--only", "random"]


@case("split.npz without settings, indices outside the data", error("split.npz", "outside"))
def _(c):
    path = c.run0 / "ir4" / "split.npz"
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    meta["settings"] = None                            # as written before settings were recorded
    arrays["meta"], arrays["pool"] = np.array(json.dumps(meta)), arrays["pool"] + 10_000
    np.savez(path, **arrays)
    c.watch.append(c.out)
    return ["--only", "pfk-phat-L80"]


@case("split.npz cut short", error("split.npz", "damaged", "delete it"))
def _(c):
    cut(c.run0 / "ir4" / "split.npz", 400)
    c.watch.append(c.out)
    return ["--only", "random"]


@case("split.npz whose meta is not an object", error("split.npz", "damaged"))
def _(c):
    path = c.run0 / "ir4" / "split.npz"
    arrays = dict(np.load(path))
    arrays["meta"] = np.array("[1]")
    np.savez(path, **arrays)
    c.watch.append(c.out)
    return ["--only", "random"]


@case("state of another configuration (same model) copied in", error("state_b02.pt", "another configuration"))
def _(c):
    shutil.copy(c.config("pcc-L20") / "state_b02.pt", c.config("random") / "state_b02.pt")
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("state of another configuration (wrapped model) copied in", error("state_b02.pt", "another configuration"))
def _(c):
    shutil.copy(c.config("lloss") / "state_b02.pt", c.config("random") / "state_b02.pt")
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("state of another shape", error("state_b02.pt", "not an iteration state"))
def _(c):
    torch.save({"models": []}, c.config("random") / "state_b02.pt")
    c.watch.append(c.out)
    return ["--only", "random", "--iterations", "3"]


@case("initial model of another shape", error("init_rotation.pt", "not an initial model", "made anew"))
def _(c):
    torch.save({"weights": {}}, c.run0 / "ir4" / "init_rotation.pt")
    c.watch.append(c.out)
    return ["--only", "pfk-phat-L80"]


@case("initial model whose weights do not fit", error("init_rotation.pt", "does not fit", "lacks conv1.weight",
                                                      "has w besides", "made anew"))
def _(c):
    torch.save({"model": {"w": torch.zeros(3)}}, c.run0 / "ir4" / "init_rotation.pt")
    c.watch.append(c.out)
    return ["--only", "pfk-phat-L80"]


@case("settings.json that is not JSON", error("settings.json", "not valid JSON", "delete it"))
def _(c):
    (c.config("random") / "settings.json").write_text("{not json")
    c.watch.append(c.out)
    return ["--only", "random"]


@case("settings.json that holds a list", error("settings.json", "not a JSON object"))
def _(c):
    (c.config("random") / "settings.json").write_text("[1, 2]")
    c.watch.append(c.out)
    return ["--only", "random"]


@case("initial.json that holds a list", error("initial.json", "not a JSON object"))
def _(c):
    (c.run0 / "ir4" / "initial.json").write_text("[1]")
    (c.run0 / "ir4" / "init_rotation.pt").unlink()
    c.watch.append(c.out)
    return ["--initial", *c.args()]


# --- the command line ----------------------------------------------------------------------------------------------
@case("non-numeric --epochs", error("--epochs: expected a whole number, got 'abc'"))
def _(c):
    return c.args("--epochs", "abc", out=c.tmp / "new")


@case("non-numeric --imbalance-ratios", error("--imbalance-ratios: expected a number, got 'x'"))
def _(c):
    return c.args("--imbalance-ratios", "x", out=c.tmp / "new")


@case("a fraction for --pool-size", error("--pool-size: expected a whole number, got '12.5'"))
def _(c):
    return c.args("--pool-size", "12.5", out=c.tmp / "new")


@case("run_plot.py: non-numeric --imbalance-ratios", error("--imbalance-ratios", "'abc'"))
def _(c):
    return "plot", ["--out", str(c.out), "--imbalance-ratios", "abc"]


@case("--imbalance-ratios below 1", error("--imbalance-ratios: must be at least 1 (got 0.5)"))
def _(c):
    return c.args("--imbalance-ratios", "0.5", out=c.tmp / "new")


@case("unknown configuration name", error("unknown configuration 'nosuchthing'", "--list"))
def _(c):
    return c.args("--only", "nosuchthing", out=c.tmp / "new")


@case("unknown dataset", error("unknown dataset 'nosuch'"))
def _(c):
    return c.args("--dataset", "nosuch", out=c.tmp / "new")


@case("--out is a file", error("--out", "is a file"))
def _(c):
    (c.tmp / "afile").write_text("x")
    return c.args("--only", "random", out=c.tmp / "afile")


@case("run_plot.py --figures under a file", error("cannot write", "Not a directory"))
def _(c):
    (c.tmp / "afile").write_text("x")
    c.watch.append(c.out)
    return "plot", ["--out", str(c.out), "--save", "--figures", str(c.tmp / "afile" / "figures")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, finished, tmp_path, monkeypatch, capsys):
    data, out = finished
    monkeypatch.setattr("fkal.data.folder._announced", set())       # the loader's one-time line stays to announce
    monkeypatch.setattr("fkal.state.resume._warned", set())            # and so do the broken lines' warnings
    c = Case(data=tmp_path / "data", out=tmp_path / "out", tmp=tmp_path, monkeypatch=monkeypatch)
    shutil.copytree(data, c.data)
    shutil.copytree(out, c.out)
    setup, expected = CASES[name]
    command = setup(c)
    script, argv = command if isinstance(command, tuple) else ("run", command)
    if script == "run" and "--data-root" not in argv:
        argv = c.args(*argv)
    before = {folder: snapshot(folder) for folder in c.watch}
    capsys.readouterr()
    code = (run_plot.main if script == "plot" else run_main)(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "\x1b" not in err              # no terminal escape codes either
    if isinstance(expected, Error):
        assert code == expected.code, err
        assert len(lines) == 1 + expected.warnings and lines[-1].startswith("error: "), err
        assert all(line.startswith("warning: ") for line in lines[:-1]), err
        for needle in expected.needles:
            assert needle in lines[-1], lines[-1]
        monkeypatch.undo()
        for folder, files in before.items():
            now = snapshot(folder)
            added = {name for name in set(now) - set(files) if Path(name).name not in c.may_add}
            assert not added, f"{folder}: new files {sorted(added)}"
            assert {name: now.get(name) for name in files} == files, f"{folder}: files changed"
    else:
        assert code == 0, err
        warnings = [line for line in lines if line.startswith("warning: ")]
        assert len(warnings) == expected.lines and all(line.startswith(("warning: ", "note: ")) for line in lines), err
        for needle in expected.needles:
            assert needle in err, err
    if c.after is not None:
        c.after()
    print(f"{name} -> {' | '.join(lines) or '(nothing on stderr)'}")     # the line(s) printed (pytest -rP shows them)


# ----------------------------------------------------------------------------------------------------------------
# Cases that need a process of their own: signals and two processes at once
# ----------------------------------------------------------------------------------------------------------------
# run.py, paused at its N-th training call (a configuration's lock held) until a file appears.
PAUSED_RUN = """
import pathlib, sys, time
import fkal.loop as loop
real, calls = loop.train, []
def train(*args, **kwargs):
    calls.append(1)
    if len(calls) == {at}:
        pathlib.Path({paused!r}).touch()
        while not pathlib.Path({go!r}).exists():
            time.sleep(0.02)
    return real(*args, **kwargs)
loop.train = train
from fkal.launch import run_main
sys.exit(run_main(sys.argv[1:]))
"""


def start(argv: list[str], script: str = "run.py", code: Optional[str] = None) -> subprocess.Popen:
    """The script in a process of its own, with Ctrl-C as at a terminal: SIGINT at its default (these tests may
    themselves run in the background, whose processes inherit SIGINT ignored, and run.py leaves it so)."""
    command = [sys.executable, "-c", code, *argv] if code else [sys.executable, script, *argv]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, seconds: float = 300) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr.read()}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def paused(tmp: Path, at: int) -> tuple[str, Path, Path]:
    flag, go = tmp / "paused", tmp / "go"
    return PAUSED_RUN.format(root=str(ROOT), at=at, paused=str(flag), go=str(go)), flag, go


def one_line(err: str, start: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start) and "Traceback" not in err, err
    print(lines[0])                                     # (pytest -rP shows it)
    return lines[0]


@pytest.mark.parametrize("script, loaded", [("run.py", "libtorch"), ("run_plot.py", "numpy")])
@pytest.mark.e2e
def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(script, loaded, finished, tmp_path):
    """SIGINT while the script's heavy modules load (seen in the process's memory map)."""
    data, out = finished
    argv = ["--data-root", str(data), "--out", str(tmp_path / "out"), *SETTINGS] if script == "run.py" else \
        ["--out", str(out)]
    proc = start(argv, script)
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_for(lambda: loaded in maps.read_text(), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    one_line(err, "interrupted")
    assert not (tmp_path / "out").exists()


def test_a_weights_file_whose_unpickling_would_run_code_is_refused(tmp_path, monkeypatch):
    """label_next.py's --weights: a checkpoint holding Python objects is one UserError, and its code never runs,
    also under torch 2.2-2.5 (requirements.txt allows them), whose ``torch.load`` unpickles anything unless told
    ``weights_only=True``: that default is put back here."""
    from fkal.errors import UserError
    from fkal.labeling.rounds import load_weights
    from fkal.models import build_model

    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, weights_only=False, **k: real_load(*a, weights_only=weights_only,
                                                                                      **k))

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')",))
    torch.save({"conv1.weight": Evil()}, tmp_path / "weights.pt")
    with pytest.raises(UserError, match="cannot read the weights file"):
        load_weights(build_model("lenet", 10), str(tmp_path / "weights.pt"), "lenet")
    assert not (tmp_path / "ran").exists()


def test_an_ignored_sigint_stays_ignored_while_importing():
    """A script started with SIGINT ignored (nohup, a background job) is not made interruptible by the imports'
    handler; one started with Ctrl-C at its default gets the handler, then its previous one back."""
    from fkal.launch import interruptible_imports
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interruptible_imports():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with interruptible_imports():
            assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.default_int_handler)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.e2e
def test_ctrl_c_in_the_middle_of_a_run_is_one_line_and_the_run_resumes(finished, tmp_path, capsys):
    data, out = finished
    shutil.copytree(out, tmp_path / "out")
    argv = ["--data-root", str(data), "--out", str(tmp_path / "out"), *SETTINGS, "--only", "pfk-phat-L80"]
    code, flag, _ = paused(tmp_path, at=2)                   # iteration 2's training: iteration 1 is recorded
    proc = start(argv, code=code)
    wait_for(flag.exists, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "run the same command again to resume" in one_line(err, "interrupted")
    assert [r["iteration"] for r in records(tmp_path / "out") if r["config"] == "pfk-phat-L80"] == [1]
    assert run_main(argv) == 0
    assert [r["iteration"] for r in records(tmp_path / "out") if r["config"] == "pfk-phat-L80"] == [1, 2]


@pytest.mark.e2e
def test_a_second_process_on_one_configuration_stops_with_one_line(finished, tmp_path):
    """Two run.py on one configuration, the second started 2 s after the first (and once the first holds the
    configuration): the second stops with one line and writes nothing, the first completes, one record per
    iteration."""
    data, out = finished
    shutil.copytree(out, tmp_path / "out")
    argv = ["--data-root", str(data), "--out", str(tmp_path / "out"), *SETTINGS, "--only", "pfk-phat-L80"]
    code, flag, go = paused(tmp_path, at=1)
    first = start(argv, code=code)
    time.sleep(2)
    wait_for(flag.exists, first)
    before = snapshot(tmp_path / "out")
    second = start(argv)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2
    assert "pfk-phat-L80 of run0 at IR=4 is being run by another process" in one_line(err, "error: ")
    assert snapshot(tmp_path / "out") == before
    go.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [r["iteration"] for r in records(tmp_path / "out") if r["config"] == "pfk-phat-L80"] == [1, 2]
