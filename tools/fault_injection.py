#!/usr/bin/env python
"""Fault injection: kill a small experiment with SIGKILL at random points, resume it, and check that it ends
exactly as an uninterrupted run.

The experiment is two commands, ``run.py --initial`` and ``run.py --only CONFIGS``, with tiny settings. It runs
once uninterrupted (the reference), then once per trial in a fresh folder: killed with SIGKILL at one random
point, then resumed with the same commands (the killed one and those after it) until they complete. A trial
survives when the resumed folder holds what the reference holds:

  - every results record, field by field, but the timings (``*_seconds``) and ``code_version``, with exactly one
    record per iteration (no duplicate, none missing);
  - every saved state (``state_bNN.pt``): ``labeled_at`` (the selections) and every weight, bit for bit; the same
    for the initial models and the split;
  - the same files (no leftover temporary file), and ``settings.json`` / ``initial.json`` alike (but timings);
  - the resuming commands exit 0 without a traceback.

Kill points, one per trial, cycle through four kinds so that any four trials cover them all:

  write   the process kills itself at the k-th atomic file write (split, initial model, settings, state) of a
          command: before the write, after the temporary file is complete but before its rename, or right after
          the rename. k is drawn from the writes the reference made.
  append  at the k-th results append: before it, half-way through the line (a torn line, as a crash of the
          machine leaves it; SIGKILL alone cannot tear one write), or right after it.
  time    SIGKILL from outside after a random delay into one of the commands (drawn from the reference's
          durations): imports, data loading, rotation pretraining, training, queries, anything.
  inside  SIGKILL from a timer a random moment into the k-th call of one step (rotation pretraining, a query,
          a training), the step and the call drawn from those the reference made and the moment from the
          reference's time until its next note: a kill inside each kind of step, whatever the machine's load.

The killed command runs through this script (``--child``), which adds the kill point and notes what the process
was doing (the trial's line says where the kill landed); every resuming command is the plain ``run.py``.

    python tools/fault_injection.py --data-root ../shared/datasets --trials 24 --seed 0
    python tools/fault_injection.py --tiny --trials 4                     # tiny MNIST-format data, a few minutes
    python tools/fault_injection.py --data-root ../shared/datasets --seed 0 --trial 7 --keep-failed   # replay one

Prints one line per trial and a final ``survived K/N``; exit code 0 when all survived, 1 otherwise. With
``--keep-failed`` a failed trial's folder is kept (its path is printed); ``--work`` keeps everything.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "run.py"

# The small experiment on the real MNIST, and the same shape on the tiny MNIST-format data.
MNIST_SETTINGS = ["--run-stop", "1", "--imbalance-ratios", "100", "--unsup-epochs", "1", "--epochs", "2",
                  "--iterations", "4", "--pool-size", "50", "--train-size", "5000", "--val-size", "1000"]
TINY_SETTINGS = ["--run-stop", "1", "--imbalance-ratios", "4", "--unsup-epochs", "1", "--epochs", "2",
                 "--iterations", "3", "--pool-size", "10", "--train-size", "400", "--val-size", "100",
                 "--eval-batch", "128"]
CONFIGS = ["random", "pfk-phat-L80", "lloss"]      # no query, the paper's method, a subset-based baseline
KINDS = ("write", "append", "time", "inside")
STEPS = ("pretraining", "query", "train")           # the calls an "inside" kill point lands in
IGNORED_FIELDS = {"code_version"}                  # and every field ending in "_seconds"


# ----------------------------------------------------------------------------------------------------------------
# Tiny data (the MNIST on-disk format, as tests/conftest.py writes it)
# ----------------------------------------------------------------------------------------------------------------
def write_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """``root/MNIST/raw`` with IDX files of learnable 28x28 images (class c: a bright bar at row 3 + 2c)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 3 + 2 * c:6 + 2 * c, 4:24] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28)
                                                          + images.astype(np.uint8).tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n)
                                                          + labels.astype(np.uint8).tobytes())
    return root


# ----------------------------------------------------------------------------------------------------------------
# The child: run.py with a kill point and notes of what it is doing
# ----------------------------------------------------------------------------------------------------------------
def child(kill: str, log: str, argv: list[str]) -> int:
    """Run ``run.py argv`` in this process. ``kill`` is ``none``, ``write:K:PHASE``, ``append:K:PHASE`` or
    ``inside:K:STEP@SECONDS`` (the K-th, 1-based); every step is noted in ``log`` as ``{seconds since start}
    {what}``."""
    start = time.monotonic()
    notes = open(log, "a", buffering=1)

    last = [""]

    def note(what: str) -> None:
        last[0] = what
        notes.write(f"{time.monotonic() - start:.3f} {what}\n")

    note("import")
    import fkal.io as fio
    import fkal.loop as loop
    from fkal.acquisitions.registry import ACQUISITIONS
    note("started (data, split)")

    kind, k, phase = (kill.split(":") + ["", ""])[:3] if kill != "none" else ("none", "0", "")
    k = int(k)
    counts = {"write": 0, "append": 0}
    current = [""]

    def die(what: str) -> None:
        note(f"killed: {what}")
        notes.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    real_atomic = fio.atomic_path

    @contextmanager
    def atomic_path(path):
        counts["write"] += 1
        n, name = counts["write"], _short_path(path)
        note(f"write {n} {name}")
        at = kind == "write" and n == k
        if at and phase == "before":
            die(f"write {n} {name} before it")
        with real_atomic(path) as tmp:
            yield tmp
            if at and phase == "unrenamed":
                die(f"write {n} {name}, temporary file complete, not renamed")
        if at and phase == "after":
            die(f"write {n} {name} right after its rename")

    real_append = fio.append_jsonl

    def append_jsonl(record, path):
        counts["append"] += 1
        n, what = counts["append"], f"{record.get('config')} b={record.get('iteration')}"
        note(f"append {n} {what}")
        at = kind == "append" and n == k
        if at and phase == "before":
            die(f"append {n} ({what}) before it")
        if at and phase == "torn":
            line = (json.dumps(record, sort_keys=True) + "\n").encode()
            with open(path, "ab") as f:
                f.write(line[:len(line) // 2])
                f.flush()
                os.fsync(f.fileno())
            die(f"append {n} ({what}) half-way through the line")
        torn = real_append(record, path)
        if at and phase == "after":
            die(f"append {n} ({what}) right after it")
        return torn

    fio.atomic_path = atomic_path
    fio.append_jsonl = loop.append_jsonl = append_jsonl

    # Steps: each call is noted; an "inside:K:STEP@SECONDS" kill point fires SECONDS into the K-th call of STEP.
    # (A step whose function was renamed is neither noted nor a kill point: the reference then counts none.)
    def noted(fn, step, what):
        def wrapper(*args, **kwargs):
            counts[step] = counts.get(step, 0) + 1
            description = what(*args, **kwargs)
            note(f"{step} {counts[step]} {description}")
            if kind == "inside" and step == phase.split("@")[0] and counts[step] == k:
                delay = float(phase.split("@")[1])
                here = f"{step} {counts[step]} {description}"
                timer = threading.Timer(delay, lambda: die(f"{delay:.2f} s into {here}" + (
                    "" if last[0] == here else f", during '{last[0]}'")))
                timer.daemon = True
                timer.start()
            return fn(*args, **kwargs)
        return wrapper

    def query_note(ctx):
        current[0] = f"{ctx.config.name} b={ctx.iteration}"
        return current[0]
    for name, fn in list(ACQUISITIONS.items()):
        ACQUISITIONS[name] = noted(fn, "query", query_note)
    if hasattr(loop, "train"):
        loop.train = noted(loop.train, "train", lambda *a, **kw: current[0])
    import fkal.training as training                    # initial_model's rotation pretraining
    training.train_rotation = noted(training.train_rotation, "pretraining", lambda *a, **kw: "rotation")

    from fkal.launch import run_main
    sys.argv = [str(RUN_PY), *argv]
    code = run_main(argv)
    note(f"exit {code}")
    return code


def _short_path(path) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(path)


# ----------------------------------------------------------------------------------------------------------------
# Comparing a resumed folder with the reference
# ----------------------------------------------------------------------------------------------------------------
def _skip_file(rel: Path) -> bool:
    return rel.name.endswith(".lock")             # lock files are empty and made by whoever opens them


def _is_torn_fragment(rel: Path) -> bool:
    """``results.jsonl.torn-k``: the fragment a crash mid-append left, moved aside by the next append."""
    return rel.name.startswith("results.jsonl.torn-")


def _files(root: Path) -> dict[Path, Path]:
    return {p.relative_to(root): p for p in sorted(root.rglob("*")) if p.is_file()
            and not _skip_file(p.relative_to(root))}


def _records(path: Path) -> tuple[list[dict], int]:
    """Records of a results file and how many broken lines it has (read as ``fkal.io.read_jsonl`` reads)."""
    from fkal.io import read_jsonl
    records, warnings = read_jsonl(path)
    return records, len(warnings)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if k not in IGNORED_FIELDS and not k.endswith("seconds")}
    return value


def _record_key(r: dict) -> tuple:
    return (str(r.get("dataset")), str(r.get("config")), repr(r.get("imbalance_ratio")), repr(r.get("unsupervised")),
            repr(r.get("run")), repr(r.get("iteration")))


def compare_records(ref: list[dict], got: list[dict]) -> list[str]:
    """Differences between two lists of records: missing, duplicated and extra iterations, then every differing
    field (timings and ``code_version`` left out)."""
    problems = []
    by_key: dict[tuple, list[dict]] = {}
    for r in got:
        by_key.setdefault(_record_key(r), []).append(r)
    ref_keys = {_record_key(r) for r in ref}
    for key, rs in by_key.items():
        if len(rs) > 1:
            problems.append(f"record {'/'.join(key[1:2] + key[5:])}: {len(rs)} copies")
        if key not in ref_keys:
            problems.append(f"record {'/'.join(key[1:2] + key[5:])}: not in the reference")
    for r in ref:
        key = _record_key(r)
        if key not in by_key:
            problems.append(f"record {r.get('config')}/{r.get('iteration')}: missing")
            continue
        a, b = _without_timings(r), _without_timings(by_key[key][0])
        for name in sorted(set(a) | set(b)):
            if a.get(name, "<absent>") != b.get(name, "<absent>"):
                problems.append(f"record {r.get('config')}/{r.get('iteration')}: {name} differs "
                                f"({_brief(a.get(name))} -> {_brief(b.get(name))})")
    return problems


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compare_tensors(ref, got, where: str) -> list[str]:
    """Bit-for-bit comparison of two loaded checkpoints (nested dicts, lists, tensors, plain values)."""
    import torch
    if isinstance(ref, torch.Tensor) or isinstance(got, torch.Tensor):
        if not (isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor)):
            return [f"{where}: a tensor on one side only"]
        if ref.dtype != got.dtype or ref.shape != got.shape:
            return [f"{where}: {ref.dtype}{list(ref.shape)} -> {got.dtype}{list(got.shape)}"]
        a, b = ref.detach().cpu().contiguous(), got.detach().cpu().contiguous()
        if a.numpy().tobytes() != b.numpy().tobytes():
            return [f"{where}: values differ"]
        return []
    if isinstance(ref, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: on one side only" for k in sorted(set(ref) ^ set(got), key=str)]
        for k in ref:
            if k in got:
                out += compare_tensors(ref[k], got[k], f"{where}.{k}")
        return out
    if isinstance(ref, (list, tuple)) and isinstance(got, (list, tuple)):
        if len(ref) != len(got):
            return [f"{where}: {len(ref)} -> {len(got)} entries"]
        return [p for i, (a, b) in enumerate(zip(ref, got)) for p in compare_tensors(a, b, f"{where}[{i}]")]
    return [] if ref == got else [f"{where}: {_brief(repr(ref))} -> {_brief(repr(got))}"]


def compare_folders(ref_root: Path, got_root: Path) -> list[str]:
    """Every difference between a resumed output folder and the reference (see the module docstring)."""
    import numpy as np
    import torch

    ref, got = _files(ref_root), _files(got_root)
    got = {rel: p for rel, p in got.items() if not _is_torn_fragment(rel)}       # checked by the trial itself
    problems = [f"{rel}: missing" for rel in ref if rel not in got]
    problems += [f"{rel}: not in the reference" + (" (a temporary file left behind)" if rel.name.endswith(".tmp")
                                                    else "") for rel in got if rel not in ref]
    for rel, path in ref.items():
        if rel not in got:
            continue
        other = got[rel]
        if rel.name == "results.jsonl":
            ref_records, _ = _records(path)
            got_records, _ = _records(other)
            problems += compare_records(ref_records, got_records)
        elif rel.suffix == ".pt":
            a = torch.load(path, map_location="cpu", weights_only=True)
            b = torch.load(other, map_location="cpu", weights_only=True)
            problems += compare_tensors(a, b, str(rel))
        elif rel.suffix == ".npz":
            with np.load(path) as a, np.load(other) as b:
                if sorted(a.files) != sorted(b.files):
                    problems.append(f"{rel}: arrays {sorted(a.files)} -> {sorted(b.files)}")
                for name in a.files:
                    if name in b.files and (a[name].dtype != b[name].dtype or a[name].shape != b[name].shape
                                            or a[name].tobytes() != b[name].tobytes()):
                        problems.append(f"{rel}: {name} differs")
        elif rel.suffix == ".json":
            a, b = (_without_timings(json.loads(p.read_text())) for p in (path, other))
            if a != b:
                problems.append(f"{rel}: differs")
        elif path.read_bytes() != other.read_bytes():
            problems.append(f"{rel}: bytes differ")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Running the experiment
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Command:
    name: str
    argv: list[str]


@dataclass
class Reference:
    seconds: list[float]                                   # per command: from the end of its imports to its exit
    writes: list[int]                                      # atomic writes per command
    appends: list[int]                                     # results appends per command
    snapshots: list[Path]                                  # the output folder before each command
    steps: list[list[tuple[str, int, float]]]              # per command: (step, its call number, seconds)


@dataclass
class Trial:
    index: int
    kind: str
    command: int                                           # which command is killed
    point: str                                             # the kill point, for the line
    spec: str = "none"                                     # the child's kill argument
    delay: float = 0.0                                     # time kills: seconds into the command
    landed: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def commands(settings: list[str], configs: list[str], data_root: Path, out: Path, extra: list[str]) -> list[Command]:
    common = ["--data-root", str(data_root), "--out", str(out), *settings, "--no-progress", *extra]
    return [Command("run.py --initial", ["--initial", *common]),
            Command("run.py --only " + " ".join(configs), [*common, "--only", *configs])]


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_plain(cmd: Command, log_dir: Path, tag: str) -> tuple[int, str]:
    """The plain ``run.py`` (as a user resumes); returns the exit code and stderr."""
    with open(log_dir / f"{tag}.out", "wb") as out:
        proc = subprocess.run([sys.executable, str(RUN_PY), *cmd.argv], stdout=out, stderr=subprocess.PIPE,
                              env=child_env(), cwd=ROOT)
    err = proc.stderr.decode(errors="replace")
    (log_dir / f"{tag}.err").write_text(err)
    return proc.returncode, err


STARTED = "started (data, split)"


def run_child(cmd: Command, log_dir: Path, tag: str, kill: str = "none",
              delay: Optional[float] = None) -> tuple[int, list[str]]:
    """``cmd`` through ``--child`` with a kill point, or SIGKILL ``delay`` seconds after its imports ended (the
    time those take depends mostly on the machine's load); returns the exit code (negative: the signal) and the
    child's notes."""
    notes = log_dir / f"{tag}.notes"
    notes.unlink(missing_ok=True)
    with open(log_dir / f"{tag}.out", "wb") as out, open(log_dir / f"{tag}.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", kill, str(notes), "--",
                                 *cmd.argv], stdout=out, stderr=err, env=child_env(), cwd=ROOT)
        if delay is not None:
            while proc.poll() is None and not (notes.exists() and STARTED in notes.read_text()):
                time.sleep(0.02)
        try:
            code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
    lines = notes.read_text().splitlines() if notes.exists() else []
    return code, lines


def _note_time(notes: list[str], what: str) -> float:
    return next(float(n.split(" ", 1)[0]) for n in notes if n.split(" ", 1)[1].startswith(what))


def make_reference(cmds: list[Command], out: Path, folder: Path) -> Reference:
    """Run the commands uninterrupted into ``out``; keep a copy of ``out`` before each command but the first
    (a trial that kills a later command starts from it)."""
    seconds, writes, appends, snapshots, steps = [], [], [], [], []
    for i, cmd in enumerate(cmds):
        snapshot = folder / f"before-{i}"
        if out.exists():
            shutil.copytree(out, snapshot, symlinks=True)
        snapshots.append(snapshot)
        code, notes = run_child(cmd, folder / "logs", f"reference-{i}")
        if code != 0:
            err = (folder / "logs" / f"reference-{i}.err").read_text()
            raise SystemExit(f"the reference run failed ({cmd.name}, exit {code}):\n{err[-3000:]}")
        seconds.append(_note_time(notes, "exit") - _note_time(notes, STARTED))
        writes.append(sum(1 for n in notes if n.split(" ", 2)[1] == "write"))
        appends.append(sum(1 for n in notes if n.split(" ", 2)[1] == "append"))
        steps.append([(n.split(" ")[1], int(n.split(" ")[2]), float(after.split(" ", 1)[0]) - float(n.split(" ", 1)[0]))
                      for n, after in zip(notes, notes[1:]) if n.split(" ")[1] in STEPS])
    return Reference(seconds=seconds, writes=writes, appends=appends, snapshots=snapshots, steps=steps)


def draw_trial(index: int, seed: int, ref: Reference) -> Trial:
    """Trial ``index``'s kill point, from its own generator (a trial replays alone with ``--trial``)."""
    rng = random.Random(seed * 1_000_003 + index)
    kind = KINDS[index % len(KINDS)]
    counts = ref.writes if kind == "write" else ref.appends if kind == "append" else ref.seconds
    if kind == "time":
        total = sum(ref.seconds)
        t = rng.uniform(0.0, total * 0.97)
        command = 0
        while command < len(ref.seconds) - 1 and t >= ref.seconds[command]:
            t -= ref.seconds[command]
            command += 1
        return Trial(index, kind, command, f"SIGKILL {t:.1f} s after the imports of", delay=t)
    if kind == "inside":                           # a step kind, one of its calls, a moment inside it
        calls = [(c, call) for c, cmd in enumerate(ref.steps) for call in cmd]
        step = rng.choice(sorted({call[0] for _, call in calls}))
        command, (step, number, seconds) = rng.choice([(c, call) for c, call in calls if call[0] == step])
        delay = rng.uniform(0.0, 0.9 * seconds)
        total = sum(1 for call in ref.steps[command] if call[0] == step)
        return Trial(index, kind, command, f"inside {step} {number}/{total} ({delay:.1f} s into it) of",
                     spec=f"inside:{number}:{step}@{delay:.3f}")
    command = rng.choice([c for c, n in enumerate(counts) if n > 0])   # each command alike, then one of its
    pick = rng.randrange(counts[command])
    phases = ("before", "unrenamed", "after") if kind == "write" else ("before", "torn", "after")
    phase = rng.choice(phases)
    return Trial(index, kind, command, f"{kind} {pick + 1}/{counts[command]} ({phase}) of",
                 spec=f"{kind}:{pick + 1}:{phase}")


def run_trial(trial: Trial, cmds: list[Command], ref: Reference, ref_out: Path, folder: Path) -> Trial:
    """Run the commands into ``folder``/out with ``trial``'s kill point, resume, compare with ``ref_out``. The
    commands before the killed one are not rerun: their output is copied from the reference."""
    out, logs = folder / "out", folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmds = [Command(c.name, [str(out) if a == str(ref_out) else a for a in c.argv]) for c in cmds]
    t0 = time.monotonic()
    if ref.snapshots[trial.command].exists():
        shutil.copytree(ref.snapshots[trial.command], out, symlinks=True)
    victim = cmds[trial.command]
    code, notes = run_child(victim, logs, "killed", trial.spec, trial.delay if trial.kind == "time" else None)
    if code == -signal.SIGKILL:
        last = notes[-1].split(" ", 1)[1] if notes else ""
        trial.landed = (last if last.startswith("killed:") else f"during '{last}'" if last
                        else "before the first note (interpreter start)")
    elif code == 0:
        trial.landed = "missed: the command completed first"
    else:
        trial.problems.append(f"{victim.name} exited {code} before its kill point: "
                              f"{_last_line((logs / 'killed.err').read_text())}")
        return trial
    errors = ""
    for i, cmd in enumerate(cmds[trial.command:]):
        code, err = run_plain(cmd, logs, f"resume-{i}")
        errors += err
        if code != 0 or "Traceback" in err:
            trial.problems.append(f"resumed {cmd.name} exited {code}: {_last_line(err)}")
            return trial
    fragments = sorted(p for p in out.rglob("results.jsonl.torn-*") if p.is_file())
    if trial.spec.endswith(":torn"):
        if "cut short" not in errors:
            trial.problems.append("the resumed run did not report the torn line of results.jsonl")
        if len(fragments) != 1 or not fragments[0].read_bytes() or fragments[0].read_bytes().endswith(b"\n"):
            trial.problems.append(f"the torn line was not moved aside whole into one results.jsonl.torn-k "
                                  f"(found {[p.name for p in fragments]})")
    elif fragments:
        trial.problems.append(f"{fragments[0].name}: a torn line was moved aside where no append was cut short")
    trial.seconds = time.monotonic() - t0
    trial.problems += compare_folders(ref_out, out)
    return trial


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-root", default=os.environ.get("FKAL_DATA_ROOT"),
                      help="folder that holds MNIST/raw (default: $FKAL_DATA_ROOT)")
    data.add_argument("--tiny", action="store_true",
                      help="write a 600/200-image MNIST-format data set and use smaller settings")
    p.add_argument("--trials", type=int, default=20, help="kill points to try (trials whose kill missed are redrawn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points (not of the experiment)")
    p.add_argument("--trial", type=int, default=None, help="run only this trial index (a replay)")
    p.add_argument("--only", nargs="+", default=CONFIGS, help="configurations of the experiment")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the reference and the trials, kept afterwards (default: a temporary folder, "
                        "removed)")
    p.add_argument("--keep-failed", action="store_true", help="keep the folder of every failed trial")
    p.add_argument("extra", nargs="*", help="more run.py options after --, e.g. -- --epoch-selection val")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kill, log, rest = argv[1], argv[2], argv[4:]
        return child(kill, log, rest)
    args = parse_args(argv)
    if not args.tiny and not (args.data_root and (Path(args.data_root) / "MNIST" / "raw").is_dir()):
        print("error: give --data-root (the folder that holds MNIST/raw) or --tiny", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-injection-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return experiment(args, work.resolve())
    finally:
        if args.work is None and not args.keep_failed:
            shutil.rmtree(work, ignore_errors=True)


def experiment(args: argparse.Namespace, work: Path) -> int:
    data_root = write_tiny_mnist(work / "data") if args.tiny else Path(args.data_root).resolve()
    settings = TINY_SETTINGS if args.tiny else MNIST_SETTINGS
    ref_out = work / "reference" / "out"
    if ref_out.exists():
        shutil.rmtree(work / "reference")
    (work / "reference" / "logs").mkdir(parents=True)
    cmds = commands(settings, args.only, data_root, ref_out, args.extra)
    print("experiment: " + " && ".join(f"python run.py {' '.join(c.argv)}" for c in cmds), flush=True)
    ref = make_reference(cmds, ref_out, work / "reference")
    print(f"reference: {' + '.join(f'{s:.0f} s' for s in ref.seconds)} after the imports; "
          f"{sum(ref.writes)} file writes, "
          f"{sum(ref.appends)} results appends", flush=True)
    indices = [args.trial] if args.trial is not None else None
    survived = tried = missed = 0
    failed_folders = []
    index = 0
    while (tried < args.trials and index < 3 * args.trials) if indices is None else indices:
        i = indices.pop() if indices is not None else index
        index += 1
        trial = draw_trial(i, args.seed, ref)
        folder = work / f"trial{i:03d}"
        if folder.exists():
            shutil.rmtree(folder)
        run_trial(trial, cmds, ref, ref_out, folder)
        where = f"{trial.point} {cmds[trial.command].name}"
        if trial.landed.startswith("missed"):
            missed += 1
            print(f"trial {i:3d}  {where}: {trial.landed} (redrawn)", flush=True)
        else:
            tried += 1
            ok = not trial.problems
            survived += ok
            verdict = "survived" if ok else f"FAILED ({len(trial.problems)}): " + "; ".join(trial.problems[:4]) + \
                (f"; and {len(trial.problems) - 4} more" if len(trial.problems) > 4 else "")
            print(f"trial {i:3d}  {where} -> landed {trial.landed} -> {verdict}", flush=True)
            if not ok and (args.keep_failed or args.work is not None):
                failed_folders.append(folder)
                continue
        if args.work is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"survived {survived}/{tried}"
          + (f" ({missed} kills missed, the command ending first, and were redrawn)" if missed else ""))
    if failed_folders:
        print("kept: " + " ".join(str(f) for f in failed_folders))
    return 0 if survived == tried and tried > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
