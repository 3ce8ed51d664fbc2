#!/usr/bin/env python
"""The toolkit checked on one GPU at the paper's sizes, every check inside one deadline, in one command; ``--smoke``
runs the same checks on the CPU at tiny sizes (what the test runs, so that this script does not rot).

The device command (one GPU, the working tree copied there with the ignored folder ``.gpu_carry`` carried):

    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --carry .gpu_carry --out $OUT --deadline 480

with the device tool's timeout_s at 560 or more (the deadline covers the checks, not the transfers). Preparing the
carry folder here first (``--wheels`` needs the network; the folder must be ignored by git, e.g. a line
``/.gpu_carry/`` in ``.git/info/exclude``; the device tool carries at most 64 MiB, which DALI's wheel alone exceeds):

    python benchmarks/gpu_check.py --prepare-carry .gpu_carry --data-root ../shared/datasets [--wheels]

The smoke run (a machine without CUDA, about a minute on one core):

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/gpu_check.py --smoke --out /tmp/gpu_smoke --deadline 120

The checks, cheapest and most important first. Each runs in a subprocess of its own, with a time allowance taken
from what is left of the deadline (keeping the minimum of every later check in reserve), and is killed at the end of
it; one that would not fit is recorded as ``skipped: deadline``. A failing check does not stop the others.

  tests               the CUDA tests: tests/test_runs_on_devices.py, tests/test_device.py and the DALI tests of
                      tests/test_image_loaders.py, with pytest; passed / failed / skipped counts
  repeat-resume       a tiny MNIST run (``run.py --initial``, then ``--only random pfk-phat-L80``) made twice into two
                      --out folders (the second in one command, its initial models made on demand), and once, from
                      the first one's initial models, killed (SIGKILL as soon as results.jsonl holds the first
                      record) and resumed with the same command: records (all fields but query_seconds,
                      train_seconds and code_version), the saved state_b*.pt weights and the initial models compared
                      bit for bit
  dali                the folder loader (fkal/data/folder.py) over the same generated JPEGs with DALI (as it chooses
                      it on a CUDA run) and with torchvision: mean and max absolute difference in pixel levels, and
                      DALI twice with one seed; "skipped: nvidia-dali not installed" without DALI
  matching            Algorithm 1's matching and selection as fkal/acquisitions/fisher_kernel.py wires it, on
                      generated features (L = 768: 256 + 512, z and g): 1,250 centers (k-center greedy among 20,000
                      rows) and 50,000 centers against 1,280,000 pool rows; seconds and peak GPU memory
                      (goal: at most 10 s for 50,000 x 1.28M)
  pool-pass-resnet10  the pool pass of pfk-phat (descriptors and Fisher scores, L = 768, ``fkal.descriptors.extract``)
                      against a plain inference pass (``fkal.training.predict``) over the same images, in images/s:
                      ResNet-10 at 32 px on an SVHN-size pool of 604,388 generated images (goal: at least 45%)
  pool-pass-resnet18  the same for ResNet-18 at 224 px, on as many generated images as the allowance permits (DALI
                      on generated JPEGs where it is installed, else uint8 tensors in memory; the figures say which)
  successors          BADGE, GALAXY, DIRECT and BASE on the GPU at ImageNet size (N = 1.28M, C = 1,000, P = 64,000)
                      through their pure tensor functions, on benchmarks/successors_scale.py's synthetic pool (built
                      here on the GPU); GALAXY and BADGE run a probe of P/64 picks first and the whole P only where
                      the probe says it fits, else the probe and a linear extrapolation marked as such
  mnist-throughput    the MNIST figure's throughput: configuration runs of the paper's cfg list (``run.py --list``)
                      at IR 100, full protocol, per minute with N processes side by side on the GPU (--processes,
                      default the CPU count, OMP_NUM_THREADS=1 each), counted from results.jsonl over a fixed
                      window; and the wall time of the whole Figure 4 projected from that rate

Each check writes what it measured as it goes; the report is rewritten after every check: DIR/gpu_check.json,
DIR/gpu_check.md (a table) and DIR/gpu_check.log (the end of every check's output), so a run killed at its limit
still leaves one. A check passes when it ran and what it compares held; a speed goal is reported beside it (met /
missed) and does not decide the exit status: 0 when every check that ran passed, 1 otherwise, 2 on a usage error
(no CUDA without --smoke). No figure is written that was not measured in the run; projections and extrapolations
say so and name the measured rate they come from; in smoke mode every figure is labelled "smoke (cpu, tiny sizes):
not a speed figure".

MNIST: --data-root (the folder that holds MNIST/raw) if given, else the gzipped IDX files in --carry/MNIST/raw,
else generated IDX files (as tests/conftest.py writes them). Wheels in --carry/wheels (kornia, nvidia-dali) are
installed with pip into /tmp/gpu_check_site, which goes on the path of this process and of its subprocesses.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from fkal.data.synthetic import write_mnist

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
SITE = Path("/tmp/gpu_check_site")
REPORT_JSON, REPORT_MD, REPORT_LOG = "gpu_check.json", "gpu_check.md", "gpu_check.log"
SMOKE_LABEL = "smoke (cpu, tiny sizes): not a speed figure"
TIMING_FIELDS = frozenset({"query_seconds", "train_seconds", "code_version"})   # left out of record comparisons
MARGIN_S = 3.0            # kept back from the deadline for the last report
CHILD_MARGIN_S = 2.0      # a check aims to end this long before its allowance
LOG_TAIL_LINES = 150      # lines of each check's output kept in gpu_check.log
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
WHEELS = (("kornia", ()), ("kornia_rs", ()),
          ("nvidia-dali-cuda120", ("--extra-index-url", "https://pypi.nvidia.com")))
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TEST_FILES = ("tests/test_runs_on_devices.py", "tests/test_device.py", "tests/test_image_loaders.py")
TEST_SELECTION = "not test_image_loaders or dali"   # the first two files whole, the third's DALI tests
RUN_CONFIGS = ("random", "pfk-phat-L80")
FIGURE4_RUNS, FIGURE4_IRS = 10, (1, 100)
SCALES = (256, 512)       # L = 768: layer3 + layer4 of the ResNets


class UsageError(Exception):
    """Bad usage: one ``error:`` line, exit status 2."""


class Skip(Exception):
    """A check that does not apply here (e.g. DALI not installed): recorded as skipped, not failed."""


# ----------------------------------------------------------------------------------------------------------------
# The checks and their sizes
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    what: str
    need: tuple[float, float]       # seconds it asks for (gpu, smoke); inf: whatever is left
    minimum: tuple[float, float]    # below this it is skipped (gpu, smoke)

    def need_for(self, smoke: bool) -> float:
        return self.need[1] if smoke else self.need[0]

    def minimum_for(self, smoke: bool) -> float:
        return self.minimum[1] if smoke else self.minimum[0]


CHECKS = (
    Check("tests", "CUDA tests with pytest (test_runs_on_devices, test_device, DALI tests)", (150, 30), (40, 10)),
    Check("repeat-resume", "tiny MNIST run twice and killed + resumed: records and weights bit for bit",
          (120, 60), (30, 15)),
    Check("dali", "folder loader with DALI against torchvision on generated JPEGs", (45, 10), (10, 3)),
    Check("matching", "Fisher-kernel matching and selection, 1,250 and 50,000 centers x 1.28M rows, L = 768",
          (75, 12), (20, 4)),
    Check("pool-pass-resnet10", "pfk-phat pool pass vs plain inference, ResNet-10 32 px, 604,388 images",
          (90, 12), (25, 5)),
    Check("pool-pass-resnet18", "pfk-phat pool pass vs plain inference, ResNet-18 224 px", (60, 12), (20, 5)),
    Check("successors", "BADGE, GALAXY, DIRECT, BASE selection at ImageNet size on the GPU", (120, 12), (25, 5)),
    Check("mnist-throughput", "MNIST cfg list at IR 100, full protocol, N processes: config runs/min",
          (math.inf, 45), (90, 12)),
)
CHECK_NAMES = tuple(c.name for c in CHECKS)

SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "mnist": (60_000, 10_000),        # generated MNIST (train, test) when none is given: the full protocol's
        "tiny_run": {"--train-size": 1000, "--val-size": 200, "--epochs": 2, "--iterations": 3, "--pool-size": 20,
                     "--unsup-epochs": 1, "--eval-batch": 256},
        "jpegs": dict(count=48, image_size=224, resize_size=256, sides=(180, 420), batch=16, workers=4),
        "matching": dict(rows=1_280_000, cases=(dict(centers=1_250, budget=1_250, misclassified=20_000),
                                                dict(centers=50_000, budget=64_000, misclassified=0))),
        "pool10": dict(images=604_388, batch=1000),
        "pool18": dict(images=100_000, batch=256, jpeg_sides=(256, 400), max_jpegs=4096),
        "successors": dict(n=1_280_000, c=1_000, p=64_000, d=512, probe_share=64),
        "throughput": dict(args=(), min_window=45.0, iterations=10),
    },
    "smoke": {
        "mnist": (1_000, 200),
        "tiny_run": {"--train-size": 200, "--val-size": 60, "--epochs": 1, "--iterations": 2, "--pool-size": 10,
                     "--unsup-epochs": 1, "--eval-batch": 64},
        "jpegs": dict(count=12, image_size=32, resize_size=36, sides=(33, 61), batch=5, workers=0),
        "matching": dict(rows=4_000, cases=(dict(centers=25, budget=25, misclassified=400),
                                            dict(centers=200, budget=256, misclassified=0))),
        "pool10": dict(images=64, batch=32),
        "pool18": dict(images=8, batch=4, jpeg_sides=(230, 260), max_jpegs=8),
        "successors": dict(n=3_000, c=6, p=60, d=32, probe_share=4),
        "throughput": dict(args=("--train-size", "300", "--val-size", "60", "--epochs", "1", "--iterations", "2",
                                 "--pool-size", "10", "--unsup-epochs", "1", "--eval-batch", "64"),
                           min_window=3.0, iterations=2),
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Deciding: the deadline planner, record and weight comparisons, pytest's report
# ----------------------------------------------------------------------------------------------------------------
def plan_allowance(remaining: float, need: float, minimum: float, reserve: float) -> Optional[float]:
    """Seconds a check may take: what it needs, as far as ``remaining`` allows after keeping ``reserve`` (the later
    checks' minima) back, never below its ``minimum``; None (skipped: deadline) when not even that is left."""
    if remaining < minimum:
        return None
    return max(minimum, min(need, remaining - reserve))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """The first place where two JSON values differ (``"settings.cuda.deterministic_algorithms: true != false"``),
    fields in the first value's order; None when equal. Numbers compare exactly (1 and 1.0 differ), NaN equals NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            where = f"{path}.{key}" if path else str(key)
            if key not in b:
                return f"{where}: only in the first"
            if key not in a:
                return f"{where}: only in the second"
            found = first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if _same_value(a, b) else f"{path or 'value'}: {_short(a)} != {_short(b)}"


def record_difference(a: dict, b: dict) -> Optional[str]:
    """``first_difference`` of two results records, leaving out only the timings and code_version (top level)."""
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING_FIELDS}   # noqa: E731
    return first_difference(strip(a), strip(b))


def _record_key(r: dict) -> tuple:
    return (r.get("config"), r.get("run"), r.get("imbalance_ratio"), r.get("unsupervised"), r.get("iteration"))


def _key_label(key: tuple) -> str:
    config, run, ir, unsupervised, iteration = key
    return f"({config}, run{run}, IR={ir}, unsupervised={unsupervised}, b={iteration})"


def compare_records(first: list[dict], second: list[dict]) -> Optional[str]:
    """None when both lists hold the same records (by configuration, run, IR, initial model and iteration; each
    compared by ``record_difference``), else the first difference in one line."""
    if not first and not second:
        return "no records on either side"
    keyed: tuple[dict, dict] = ({}, {})
    for side, records in zip(keyed, (first, second)):
        for r in records:
            side.setdefault(_record_key(r), []).append(r)
    ka, kb = keyed
    for key in list(ka) + [k for k in kb if k not in ka]:
        if key not in kb:
            return f"record {_key_label(key)}: only in the first"
        if key not in ka:
            return f"record {_key_label(key)}: only in the second"
        if len(ka[key]) != len(kb[key]):
            return f"record {_key_label(key)}: {len(ka[key])} copies != {len(kb[key])}"
        for ra, rb in zip(ka[key], kb[key]):
            found = record_difference(ra, rb)
            if found:
                return f"record {_key_label(key)}: {found}"
    return None


def read_records(path: Path) -> tuple[list[dict], int]:
    """The records of a results.jsonl and the number of lines that did not parse (a line cut short by a kill)."""
    records, broken = [], 0
    if not path.exists():
        return records, broken
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            broken += 1
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            broken += 1
    return records, broken


def tensor_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """The first difference between two saved objects (state dicts, lists, tensors): tensors bit for bit."""
    import torch
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path or 'keys'}: keys differ ({sorted(set(map(str, a)) ^ set(map(str, b)))[:3]})"
        for key in a:
            found = tensor_difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = tensor_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype} {tuple(a.shape)} != {b.dtype} {tuple(b.shape)}"
        ba, bb = (t.detach().cpu().reshape(-1).contiguous().view(torch.uint8) for t in (a, b))
        if torch.equal(ba, bb):
            return None
        differ = int((a.detach().cpu() != b.detach().cpu()).sum())
        if differ == 0:
            return f"{path}: equal values in different bits (-0.0 against 0.0, or NaNs)"
        extra = ""
        if a.is_floating_point():
            extra = f", largest |difference| {float((a.detach().cpu() - b.detach().cpu()).abs().max()):.3g}"
        return f"{path}: {differ} of {a.numel()} elements differ{extra}"
    return None if _same_value(a, b) or a == b else f"{path}: {_short(str(a))} != {_short(str(b))}"


def compare_weights(first: Path, second: Path, patterns: tuple[str, ...]) -> tuple[int, Optional[str]]:
    """``(files compared, first difference or None)`` of the ``.pt`` files matching ``patterns`` in two run
    folders, loaded on the CPU and compared bit for bit."""
    import torch
    files = [{p.relative_to(root) for pattern in patterns for p in root.rglob(pattern)} for root in (first, second)]
    if files[0] != files[1]:
        odd = sorted(files[0] ^ files[1])[0]
        return len(files[0]), f"{odd}: only in the {'first' if odd in files[0] else 'second'} folder"
    if not files[0]:
        return 0, f"no {' or '.join(patterns)} files"
    for rel in sorted(files[0]):
        found = tensor_difference(*(torch.load(root / rel, map_location="cpu", weights_only=True)
                                    for root in (first, second)))
        if found:
            return len(files[0]), f"{rel}: {found}"
    return len(files[0]), None


def junit_summary(xml_text: str) -> dict:
    """Counts of a pytest ``--junitxml`` report, in total and by test file, the failures (``"id: message"``) and the
    reasons of the skips."""
    counts = lambda: {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}   # noqa: E731
    total, by_file, failures, reasons, cuda_passed = counts(), {}, [], {}, 0
    for case in ET.fromstring(xml_text).iter("testcase"):
        module = (case.get("classname") or "").split(".")
        file = next((m for m in module if m.startswith("test_")), ".".join(module) or "?")
        name = f"{file}::{case.get('name')}"
        kind = "passed"
        for tag, outcome in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            element = case.find(tag)
            if element is not None:
                kind = outcome
                message = " ".join((element.get("message") or element.text or "").split())
                if outcome == "skipped":
                    reason = message.removeprefix("Skipped: ")[:100]
                    reasons[reason] = reasons.get(reason, 0) + 1
                else:
                    failures.append(f"{name}: {message[:200]}")
                break
        total[kind] += 1
        by_file.setdefault(file, counts())[kind] += 1
        cuda_passed += kind == "passed" and "[cuda" in (case.get("name") or "")
    return {"total": total, "by_file": by_file, "failures": failures, "skip_reasons": reasons,
            "cuda_variants_passed": cuda_passed}


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "/").replace("\n", " ")


def render_markdown(data: dict) -> str:
    """The report as Markdown: the card, then a table of the checks, then each check's figures."""
    card = data["card"]
    lines = ["# GPU check", "", f"card: {card.get('card')}"]
    details = ", ".join(f"{k} {v}" for k, v in card.items() if k != "card" and v is not None)
    if details:
        lines.append(f"({details})")
    smoke = f" (every figure below: {SMOKE_LABEL})" if data["mode"] == "smoke" else ""
    lines += ["", f"mode: {data['mode']}{smoke}",
              f"deadline: {data['deadline_s']} s; elapsed: {data['elapsed_s']} s; exit status: {data['exit_status']}"]
    for key, value in data.get("environment", {}).items():
        lines.append(f"{key}: {value}")
    lines += ["", "| check | status | seconds | allowance | goal | result |", "| --- | --- | --- | --- | --- | --- |"]
    for c in data["checks"]:
        status = c["status"] + (f": {c['reason']}" if c.get("reason") else "")
        result = c.get("error") if c["status"] == "failed" else c.get("summary")
        lines.append(f"| {c['name']} | {_cell(status)} | {_cell(c.get('seconds'))} | {_cell(c.get('allowance'))} | "
                     f"{_cell(c.get('goal'))} | {_cell(result)} |")
    for c in data["checks"]:
        if c.get("figures"):
            lines += ["", f"## {c['name']}", "", f"{c['what']}", ""]
            for key, value in c["figures"].items():
                lines.append(f"- {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return "\n".join(lines) + "\n"


class Report:
    """gpu_check.json and gpu_check.md in ``out``, rewritten by ``write()``."""

    def __init__(self, out: Path, mode: str, deadline: float, card: dict, checks: tuple[Check, ...]):
        self.out = out
        self.data = {"mode": mode, "deadline_s": deadline, "elapsed_s": 0.0, "exit_status": None, "card": card,
                     "environment": {},
                     "checks": [{"name": c.name, "what": c.what, "status": "pending", "error": None, "reason": None,
                                 "seconds": None, "allowance": None, "goal": None, "summary": None, "figures": {}}
                                for c in checks]}

    def entry(self, name: str) -> dict:
        return next(c for c in self.data["checks"] if c["name"] == name)

    def write(self) -> None:
        _atomic_write(self.out / REPORT_JSON, json.dumps(self.data, indent=1, default=str) + "\n")
        _atomic_write(self.out / REPORT_MD, render_markdown(self.data))

    def exit_status(self) -> int:
        return 0 if all(c["status"] in ("passed", "skipped") for c in self.data["checks"]) else 1


Runner = Callable[[Check, float], dict]


def run_all(checks: tuple[Check, ...], runner: Runner, elapsed: Callable[[], float], deadline: float, smoke: bool,
            report: Report, say: Callable[[str], None] = print) -> None:
    """Run the checks in order, each with the allowance ``plan_allowance`` gives it from what is left of the
    deadline; the report is written before and after every check."""
    for i, check in enumerate(checks):
        entry = report.entry(check.name)
        remaining = deadline - elapsed() - MARGIN_S
        reserve = sum(c.minimum_for(smoke) for c in checks[i + 1:])
        allowance = plan_allowance(remaining, check.need_for(smoke), check.minimum_for(smoke), reserve)
        if allowance is None:
            entry.update(status="skipped", reason="deadline", seconds=0.0)
            report.data["elapsed_s"] = round(elapsed(), 1)
            report.write()
            say(f"{check.name}: skipped: deadline ({max(remaining, 0):.0f} s left, "
                f"needs {check.minimum_for(smoke):.0f})")
            continue
        entry.update(status="running", allowance=round(allowance, 1))
        report.write()
        start = elapsed()
        outcome = runner(check, allowance)
        entry.update({k: v for k, v in outcome.items() if k in entry}, seconds=round(elapsed() - start, 1))
        report.data["elapsed_s"] = round(elapsed(), 1)
        report.write()
        detail = entry.get("error") or entry.get("reason") or entry.get("summary") or ""
        say(f"{check.name}: {entry['status']} in {entry['seconds']:.1f} s: {detail}")


# ----------------------------------------------------------------------------------------------------------------
# The parent: environment, data, the children
# ----------------------------------------------------------------------------------------------------------------
def install_wheels(carry: Optional[Path]) -> Optional[str]:
    """Install ``carry/wheels/*.whl`` into ``SITE`` and put it on the path of this process and its children; a line
    for the report, or None without wheels."""
    wheels = sorted((carry / "wheels").glob("*.whl")) if carry else []
    if not wheels:
        return None
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(SITE),
           *map(str, wheels)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"pip install of {len(wheels)} wheels failed: {lines[-1] if lines else done.returncode}"
    sys.path.insert(0, str(SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
    return f"installed into {SITE}: " + ", ".join(w.name.split("-")[0] for w in wheels)


def _nvidia_smi_driver() -> Optional[str]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def card_info(smoke: bool) -> dict:
    """The card (``"cpu"`` in smoke mode), its memory and the driver, CUDA, cuDNN and torch versions, the CPUs."""
    import torch
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:                      # a build without cuDNN
        cudnn = None
    info = {"card": "cpu", "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]}
    if not smoke:
        props = torch.cuda.get_device_properties(0)
        info.update(card=torch.cuda.get_device_name(0), memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count(),
                    driver=_nvidia_smi_driver())
    return info


def prepare_mnist(data_root: Optional[str], carry: Optional[Path], work: Path, smoke: bool) -> tuple[Path, str]:
    """The folder that holds MNIST/raw for every run of the checks, and a line saying where it came from."""
    if data_root:
        root = Path(data_root).resolve()
        missing = [n for n in MNIST_FILES if not (root / "MNIST" / "raw" / n).is_file()]
        if missing:
            raise UsageError(f"--data-root {data_root}: no MNIST/raw/{missing[0]} there (the uncompressed IDX files)")
        return root, f"real MNIST from {root}"
    packed = carry / "MNIST" / "raw" if carry else None
    if packed and all((packed / f"{n}.gz").is_file() for n in MNIST_FILES):
        raw = work / "mnist" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in MNIST_FILES:
            with gzip.open(packed / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return work / "mnist", f"real MNIST unzipped from {packed}"
    n_train, n_test = SIZES["smoke" if smoke else "gpu"]["mnist"]
    return write_mnist(work / "mnist", n_train, n_test), f"generated MNIST-format data ({n_train} + {n_test} images)"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _show_tail(path: Path, lines: int = 40) -> None:
    """Print the end of a subprocess's log (it lands in gpu_check.log with the check's own output)."""
    print(f"--- end of {path.name} ---", *_tail(path, lines), sep="\n", flush=True)


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in _tail(path, 40) if line.strip()]
    return lines[-1][:300] if lines else "no output"


@dataclass
class ChildRunner:
    """Runs one check as ``gpu_check.py --child NAME`` in a process group of its own, killed at its allowance."""

    work: Path
    out: Path
    mnist_root: Path
    smoke: bool
    processes: int
    current: Optional[subprocess.Popen] = None

    def __call__(self, check: Check, allowance: float) -> dict:
        result, log = self.work / "results" / f"{check.name}.json", self.work / "logs" / f"{check.name}.log"
        result.parent.mkdir(exist_ok=True)
        log.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(SCRIPT), "--child", check.name, "--allowance", f"{allowance:.1f}",
               "--result", str(result), "--work", str(self.work / check.name), "--mnist-root", str(self.mnist_root),
               "--processes", str(self.processes)] + (["--smoke"] if self.smoke else [])
        timed_out = False
        with open(log, "wb") as sink:
            self.current = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, process_group=0)
            try:
                self.current.wait(timeout=allowance)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(self.current.pid)          # the check's leftovers too (run.py workers, pytest)
                self.current.wait()
                code, self.current = self.current.returncode, None
        self._append_log(check.name, log)
        outcome = _read_json(result)
        if timed_out:
            outcome.update(status="failed", error=f"did not finish within its allowance of {allowance:.0f} s "
                                                  f"(figures so far kept; last output: {_last_line(log)})")
        elif code != 0 or outcome.get("status") not in ("passed", "failed", "skipped"):
            outcome.update(status="failed", error=f"the check's process ended with status {code}: {_last_line(log)}")
        return outcome

    def stop(self) -> None:
        if self.current is not None:
            _kill_group(self.current.pid)

    def _append_log(self, name: str, log: Path) -> None:
        with open(self.out / REPORT_LOG, "a", encoding="utf-8") as f:
            f.write(f"===== {name} (last {LOG_TAIL_LINES} lines) =====\n")
            f.writelines(line + "\n" for line in _tail(log, LOG_TAIL_LINES))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def default_processes(smoke: bool) -> int:
    cpus = len(os.sched_getaffinity(0))
    return min(2, cpus) if smoke else cpus


def parent_main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    carry = Path(args.carry).resolve() if args.carry else None
    wheels_note = install_wheels(carry)
    import torch
    if not args.smoke and not torch.cuda.is_available():
        raise UsageError(f"no CUDA device here (torch {torch.__version__}, built for CUDA "
                         f"{torch.version.cuda or 'none'}): pass --smoke to run the checks on the CPU at tiny sizes")
    if importlib.util.find_spec("fkal") is None:
        raise UsageError("the package fkal is not importable: pip install the repository, or run with "
                         "PYTHONPATH set to the repository root")
    checks = tuple(c for c in CHECKS if not args.only or c.name in args.only)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_LOG).write_text("")
    report = Report(out, "smoke" if args.smoke else "gpu", args.deadline, card_info(args.smoke), checks)
    if wheels_note:
        report.data["environment"]["wheels"] = wheels_note
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    runner = None
    elapsed = lambda: time.monotonic() - started        # noqa: E731

    def on_term(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        mnist_root, note = prepare_mnist(args.data_root, carry, work, args.smoke)
        processes = args.processes or default_processes(args.smoke)
        report.data["environment"].update(mnist=note, processes=processes)
        report.write()
        print(f"card: {report.data['card']['card']}; {note}; deadline {args.deadline:.0f} s", flush=True)
        runner = ChildRunner(work, out, mnist_root, args.smoke, processes)
        run_all(checks, runner, elapsed, args.deadline, args.smoke, report,
                say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        if runner is not None:
            runner.stop()
        for entry in report.data["checks"]:
            if entry["status"] == "running":
                entry.update(status="failed", error="interrupted (SIGTERM or Ctrl-C)")
        print("interrupted: the report holds the checks that finished", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)
        report.data["elapsed_s"] = round(elapsed(), 1)
        report.data["exit_status"] = report.exit_status()
        report.write()
    print(f"report: {out / REPORT_MD} ({report.data['elapsed_s']:.0f} s, exit status {report.data['exit_status']})",
          flush=True)
    return report.data["exit_status"]


# ----------------------------------------------------------------------------------------------------------------
# Carry preparation (here, before the device run)
# ----------------------------------------------------------------------------------------------------------------
def prepare_carry(dest: Path, data_root: Optional[str], wheels: bool) -> int:
    """Gzip the MNIST IDX files into ``dest/MNIST/raw/*.gz`` and, with ``wheels``, download the wheels."""
    if not data_root:
        raise UsageError("--prepare-carry needs --data-root, the folder that holds MNIST/raw")
    src = Path(data_root) / "MNIST" / "raw"
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        target = raw / f"{name}.gz"
        if (src / name).is_file():
            with open(src / name, "rb") as f, open(target, "wb") as g, gzip.GzipFile(name, "wb", 9, g, mtime=0) as z:
                shutil.copyfileobj(f, z)
        elif (src / f"{name}.gz").is_file():
            shutil.copyfile(src / f"{name}.gz", target)
        else:
            raise UsageError(f"--data-root {data_root}: no MNIST/raw/{name} (or {name}.gz) there")
        print(f"{target} ({target.stat().st_size / 2 ** 20:.1f} MiB)")
    if wheels:
        folder = dest / "wheels"
        for name, extra in WHEELS:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.12", "--implementation", "cp"]
            for platform in PIP_PLATFORMS:
                cmd += ["--platform", platform]
            cmd += ["-d", str(folder), *extra, name]
            print(" ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                print(f"error: pip download {name} failed", file=sys.stderr)
                return 1
        for wheel in sorted(folder.glob("*.whl")):
            needs = _wheel_requirements(wheel)
            print(f"{wheel.name}: {wheel.stat().st_size / 2 ** 20:.1f} MiB" +
                  (f"; needs (not downloaded): {', '.join(needs)}" if needs else ""))
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {total / 2 ** 20:.1f} MiB in all" +
          (" (over the device tool's 64 MiB: leave the largest wheels out)" if total > 60 * 2 ** 20 else ""))
    inside = dest.resolve().is_relative_to(ROOT)
    ignored = inside and subprocess.run(["git", "check-ignore", "-q", str(dest.resolve())], cwd=ROOT,
                                        stderr=subprocess.DEVNULL).returncode == 0
    if inside and not ignored:
        print(f"note: {dest} is not ignored by git; add a line /{dest.name}/ to .git/info/exclude so that it travels "
              "only where carried")
    return 0


def _wheel_requirements(wheel: Path) -> list[str]:
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        text = z.read(meta).decode("utf-8", "replace") if meta else ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


# ----------------------------------------------------------------------------------------------------------------
# The child: one check in a process of its own
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What a check gets: its name, mode, allowance and folders; ``note()`` saves its figures as it goes."""

    name: str
    smoke: bool
    allowance: float
    started: float
    result: Path
    work: Path
    mnist_root: Path
    processes: int

    def __post_init__(self):
        self.figures: dict[str, Any] = {"label": SMOKE_LABEL} if self.smoke else {}
        self.sizes = SIZES["smoke" if self.smoke else "gpu"]

    def left(self) -> float:
        return self.allowance - (time.monotonic() - self.started) - CHILD_MARGIN_S

    def note(self, **figures: Any) -> None:
        self.figures.update(figures)
        self.save({})

    def save(self, outcome: dict) -> None:
        _atomic_write(self.result, json.dumps({**outcome, "figures": self.figures}, default=str) + "\n")

    def goal(self, met: bool, text: str) -> str:
        return "n/a (smoke)" if self.smoke else f"{'met' if met else 'missed'}: {text}"


def passed(summary: str, goal: Optional[str] = None) -> dict:
    return {"status": "passed", "summary": summary, "goal": goal}


def failed(error: str, summary: Optional[str] = None, goal: Optional[str] = None) -> dict:
    return {"status": "failed", "error": error, "summary": summary, "goal": goal}


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:300]


def _env(**extra: str) -> dict:
    return dict(os.environ, **extra)


def run_command(cmd: list[str], timeout: float, log: Path, env: Optional[dict] = None) -> Optional[int]:
    """Run ``cmd`` from the repository root, output into ``log``; its exit status, or None when killed at
    ``timeout``."""
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            return proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None


def _device(ctx: Ctx):
    """The CPU (smoke), or GPU 0 as a run selects it (``fkal.device.select_device``: determinism on, the
    run's default) with every CPU for the host's share of the work."""
    import torch
    if ctx.smoke:
        return torch.device("cpu")
    from fkal.device import select_device
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return select_device(0)


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> Optional[float]:
    import torch
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None


def _cuda_settings(device) -> Optional[dict]:
    from fkal.device import cuda_settings
    return cuda_settings(device)


# ---- a. correctness ----------------------------------------------------------------------------------------------
def check_tests(ctx: Ctx) -> dict:
    xml = ctx.work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", *TEST_FILES, "-k", TEST_SELECTION, f"--junitxml={xml}"]
    ctx.note(command="python -m pytest -q " + " ".join(TEST_FILES) + f" -k '{TEST_SELECTION}'")
    code = run_command(cmd, ctx.left(), ctx.work / "pytest.log")
    if code != 0:
        _show_tail(ctx.work / "pytest.log", 120)
    if code is None:
        return failed(f"pytest did not finish within the allowance: {_last_line(ctx.work / 'pytest.log')}")
    if not xml.exists():
        return failed(f"pytest ended with status {code} and no report: {_last_line(ctx.work / 'pytest.log')}")
    found = junit_summary(xml.read_text(encoding="utf-8"))
    ctx.note(**found, pytest_exit_status=code)
    t = found["total"]
    line = (f"{t['passed']} passed, {t['skipped']} skipped, {t['failed']} failed, {t['errors']} errors; "
            f"CUDA variants passed: {found['cuda_variants_passed']}")
    if code != 0 or t["failed"] or t["errors"] or not t["passed"]:
        return failed(found["failures"][0] if found["failures"] else f"pytest ended with status {code}", line)
    return passed(line)


def _run_args(ctx: Ctx, out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "run.py", "--data-root", str(ctx.mnist_root), "--out", str(out), "--run-stop", "1",
            "--imbalance-ratios", "4", "--no-progress"]
    for key, value in ctx.sizes["tiny_run"].items():
        args += [key, str(value)]
    return args + ([] if ctx.smoke else ["--gpu", "0"]) + list(extra)


class StepFailed(Exception):
    pass


def _step(ctx: Ctx, label: str, cmd: list[str]) -> None:
    log = ctx.work / f"{label.split()[0]}.log"
    code = run_command(cmd, ctx.left(), log, _env(OMP_NUM_THREADS="1"))
    if code != 0:
        _show_tail(log)
    if code is None:
        raise StepFailed(f"{label}: did not finish within the allowance")
    if code != 0:
        raise StepFailed(f"{label}: exit status {code}: {_last_line(log)}")


def _complete_records(path: Path) -> int:
    return len(read_records(path)[0]) if path.exists() else 0


def _run_and_kill(ctx: Ctx, cmd: list[str], results: Path) -> dict:
    """Start a run and SIGKILL it as soon as ``results`` holds a whole record; what happened."""
    log = ctx.work / "resumed.log"
    with open(log, "ab") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=_env(OMP_NUM_THREADS="1"))
        start = time.monotonic()
        while proc.poll() is None:
            if _complete_records(results) >= 1:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"killed": True, "records_at_kill": _complete_records(results),
                        "killed_after_s": round(time.monotonic() - start, 1)}
            if ctx.left() <= 0:
                proc.kill()
                proc.wait()
                raise StepFailed("the run to be killed wrote no record within the allowance")
            time.sleep(0.02)
    if proc.returncode != 0:
        raise StepFailed(f"the run to be killed ended with status {proc.returncode}: {_last_line(log)}")
    return {"killed": False, "records_at_kill": _complete_records(results)}


def check_repeat_resume(ctx: Ctx) -> dict:
    first, repeat, resumed = (ctx.work / name for name in ("first", "repeat", "resumed"))
    only = ("--only", *RUN_CONFIGS)
    results = lambda out: out / "MNIST" / "run0" / "results.jsonl"     # noqa: E731
    copied, errors, kill = threading.Event(), [], {}

    def lane_first():
        try:
            _step(ctx, "first --initial", _run_args(ctx, first, "--initial"))
            shutil.copytree(first, resumed)                  # the resumed run starts from the same initial models
        finally:
            copied.set()
        _step(ctx, "first run", _run_args(ctx, first, *only))

    def lane_repeat():                                  # its initial models made by the run itself, on demand
        _step(ctx, "repeat run", _run_args(ctx, repeat, *only))

    def lane_resumed():
        copied.wait()
        if not resumed.exists():
            raise StepFailed("no initial models to resume from (the first run's --initial failed)")
        kill.update(_run_and_kill(ctx, _run_args(ctx, resumed, *only), results(resumed)))
        _step(ctx, "resumed run", _run_args(ctx, resumed, *only))

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as e:
                errors.append(str(e) if isinstance(e, StepFailed) else one_line(e))
        return threading.Thread(target=run)
    lanes = [guarded(fn) for fn in (lane_first, lane_repeat, lane_resumed)]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    ctx.note(configs=list(RUN_CONFIGS), run_arguments=ctx.sizes["tiny_run"], device="cpu" if ctx.smoke else "cuda:0",
             **kill)
    if errors:
        return failed(errors[0])
    (a, _), (b, _), (c, broken) = (read_records(results(out)) for out in (first, repeat, resumed))
    repeat_records, resume_records = compare_records(a, b), compare_records(a, c)
    n_repeat, repeat_weights = compare_weights(first, repeat, ("state_b*.pt", "init_rotation*.pt"))
    n_resume, resume_weights = compare_weights(first, resumed, ("state_b*.pt",))
    ctx.note(records=len(a), broken_lines_after_kill=broken,
             repeat_records=repeat_records or "equal", repeat_weights=repeat_weights or f"equal ({n_repeat} files)",
             resume_records=resume_records or "equal", resume_weights=resume_weights or f"equal ({n_resume} files)")
    compared = (("repeat records", repeat_records), ("repeat weights", repeat_weights),
                ("resume records", resume_records), ("resume weights", resume_weights))
    differences = [f"{what}: {d}" for what, d in compared if d]
    summary = (f"{len(a)} records; repeat and resume (killed after {kill.get('records_at_kill')} record(s)): "
               f"{'equal' if not differences else 'different'}")
    if not kill.get("killed"):
        return failed("the run finished before it could be killed: nothing was resumed", summary)
    if differences:
        return failed(differences[0], summary)
    return passed(summary + f" (records and {n_repeat} + {n_resume} weight files bit for bit)")


def smooth_image(h: int, w: int, k: int) -> np.ndarray:
    """``[h, w, 3]`` uint8 sinusoids, a different phase per image and channel (as tests/test_image_loaders.py)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [127.5 + 60 * np.sin(2 * np.pi * x / (9 + 2 * c) + k) + 60 * np.cos(2 * np.pi * y / (13 + 5 * c) - k)
                for c in range(3)]
    return np.clip(np.rint(np.stack(channels, 2)), 0, 255).astype(np.uint8)


def write_jpeg_tree(base: Path, count: int, sides: tuple[int, int], seed: int = 0, classes: int = 2,
                    stop_at: Optional[float] = None) -> int:
    """``base/train/class{c}/*.JPEG`` (``count`` images of random sides, 4:4:4 chroma) and two of them per class
    in ``base/val``; stops early at the monotonic time ``stop_at``. Returns the number written."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    rng = np.random.default_rng(seed)
    shapes = rng.integers(sides[0], sides[1] + 1, size=(count, 2))
    for part in ("train", "val"):
        for c in range(classes):
            (base / part / f"class{c}").mkdir(parents=True, exist_ok=True)

    def one(k: int) -> bool:
        if stop_at is not None and time.monotonic() > stop_at:
            return False
        path = base / "train" / f"class{k % classes}" / f"img{k:06d}.JPEG"
        Image.fromarray(smooth_image(int(shapes[k, 0]), int(shapes[k, 1]), k)).save(path, quality=95, subsampling=0)
        if k < 2 * classes:
            shutil.copyfile(path, base / "val" / f"class{k % classes}" / path.name)
        return True
    with ThreadPoolExecutor(max(1, min(16, len(os.sched_getaffinity(0))))) as pool:
        return sum(pool.map(one, range(count)))


def _dali_version() -> Optional[str]:
    """nvidia-dali's version, None when it is not installed; an installed DALI that does not import raises."""
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return getattr(dali, "__version__", "?")


def _collect(batches) -> list:
    return [(p.copy(), x.clone()) for p, x in batches]


def check_dali(ctx: Ctx) -> dict:
    import torch

    from fkal.data.folder import IMAGENET_STD, ImageFolderLoader
    try:
        version = _dali_version()
    except Exception as e:
        return failed(f"nvidia-dali is installed but does not import: {one_line(e)}")
    if version is None and not ctx.smoke:
        raise Skip("nvidia-dali not installed")
    s = ctx.sizes["jpegs"]
    written = write_jpeg_tree(ctx.work / "jpegs" / "JPEG", s["count"], s["sides"])
    device = _device(ctx)
    common = dict(folder="JPEG", num_classes=2, image_size=s["image_size"], resize_size=s["resize_size"],
                  num_workers=s["workers"])
    tv = ImageFolderLoader(**common, backend="torchvision")(str(ctx.work / "jpegs"), device=device).train
    idx = np.arange(len(tv))[::-1].copy()
    gen = lambda seed: torch.Generator().manual_seed(seed)    # noqa: E731
    tv_eval = _collect(tv.batches(idx, s["batch"]))
    tv_train = _collect(tv.batches(idx, s["batch"], True, gen(11), True))
    ctx.note(jpegs=written, image_size=s["image_size"], torchvision_images=sum(len(p) for p, _ in tv_eval + tv_train),
             dali_version=version)
    if version is None:                       # smoke: the torchvision side ran, so the JPEG path does not rot
        raise Skip("nvidia-dali not installed")
    if device.type != "cuda":
        raise Skip("DALI decodes on a GPU: this smoke run is on the CPU")
    dali = ImageFolderLoader(**common, backend="auto")(str(ctx.work / "jpegs"), device=device).train
    if type(dali).__name__ != "DaliFolderSource":
        return failed(f"the folder loader chose {type(dali).__name__}, not DALI, on {device} with DALI installed")
    std = torch.tensor(IMAGENET_STD, device=device).view(1, -1, 1, 1)
    figures, worst = {}, []
    for what, a, b in (("evaluation", tv_eval, _collect(dali.batches(idx, s["batch"]))),
                       ("training", tv_train, _collect(dali.batches(idx, s["batch"], True, gen(11), True)))):
        if [p.tolist() for p, _ in a] != [p.tolist() for p, _ in b]:
            return failed(f"{what} pass: DALI gave the images in another order than torchvision")
        diff = ((torch.cat([x for _, x in a]).to(device) - torch.cat([x for _, x in b])) * std * 255.0).abs()
        figures[f"{what}_mean_abs_levels"] = round(float(diff.mean()), 3)
        figures[f"{what}_max_abs_levels"] = round(float(diff.max()), 2)
        worst.append((float(diff.mean()), float(diff.max())))
    again = [_collect(dali.batches(idx, s["batch"], True, gen(3), True)) for _ in range(2)]
    twice = all(np.array_equal(p, q) and torch.equal(x, y) for (p, x), (q, y) in zip(*again))
    ctx.note(**figures, dali_twice_with_one_seed="equal" if twice else "different")
    summary = (f"mean |diff| {max(m for m, _ in worst):.2f}, max {max(x for _, x in worst):.1f} levels; DALI twice "
               f"with one seed: {'equal' if twice else 'different'}")
    if not twice:
        return failed("DALI gave different batches twice with one seed", summary)
    if any(m > 2.0 or x > 16.0 for m, x in worst):
        return failed("DALI and torchvision differ beyond the tests' bounds (mean 2, max 16 levels)", summary)
    return passed(summary)


# ---- b. speed at the paper's sizes ---------------------------------------------------------------------------------
def _random_features(rows: int, device, generator) -> Any:
    """Standardized z and g of ``rows`` rows at L = 768 (256 + 512), generated on ``device``, a scale at a time."""
    import torch

    from fkal.kernels import Features, standardize
    parts = {"z": [], "g": []}
    for kind in parts:
        for width in SCALES:
            raw = torch.randn(rows, width, device=device, generator=generator)
            parts[kind].append(standardize(raw))
            del raw
    return Features(parts["z"], parts["g"])


def check_matching(ctx: Ctx) -> dict:
    import torch

    from fkal.acquisitions.fisher_kernel import best_similarity, gathered_candidates, kcenter_centers
    from fkal.kernels import pfk
    from fkal.selection import merge_by_rank
    s = ctx.sizes["matching"]
    device = _device(ctx)
    gen = torch.Generator(device=device).manual_seed(0)
    rows = s["rows"]
    t0 = time.perf_counter()
    pool = _random_features(rows, device, gen)
    _sync(device)
    where = np.arange(rows)
    ctx.note(pool_rows=rows, L=sum(SCALES), scales=list(SCALES), generate_s=round(time.perf_counter() - t0, 2),
             kernel="pfk (R_zg, eq. 12)", device=str(device), cuda=_cuda_settings(device), cases=[])
    summaries, goal = [], None
    for case in s["cases"]:
        centers_n, budget, mis = case["centers"], case["budget"], case["misclassified"]
        _reset_peak(device)
        figures = {"centers": centers_n, "budget": budget, "pool_rows": rows}
        wrong = _random_features(mis or centers_n, device, gen)
        _sync(device)
        t0 = time.perf_counter()
        if mis > centers_n:                              # Algorithm 1, lines 5-7: k-center greedy among M^
            pick = kcenter_centers(lambda i, rows=wrong: pfk(rows.rows([i]), rows)[0], mis, centers_n,
                                   torch.Generator().manual_seed(0))
            centers = wrong.rows(pick)
            _sync(device)
            figures.update(kcenter_from=mis, kcenter_s=round(time.perf_counter() - t0, 3))
        else:
            centers = wrong
        t1 = time.perf_counter()
        k = max(4, 2 * math.ceil(budget / len(centers)))
        while True:                                      # as fisher_kernel._query: top-k per center, merged by rank
            values, ranked = gathered_candidates(pfk, centers, pool, where, k, device)
            picked = merge_by_rank(ranked, values, budget)
            if len(picked) >= budget or k >= rows:
                break
            k *= 2
        _sync(device)
        t2 = time.perf_counter()
        best_similarity(pfk, centers, pool, where, picked)
        _sync(device)
        t3 = time.perf_counter()
        figures.update(k=k, match_and_merge_s=round(t2 - t1, 3), best_similarity_s=round(t3 - t2, 3),
                       total_s=round(t3 - t0, 3), peak_gpu_gb=_peak_gb(device), picks=int(len(picked)),
                       distinct=int(len(set(picked.tolist()))),
                       in_range=bool(len(picked) and picked.min() >= 0 and picked.max() < rows))
        ctx.figures["cases"].append(figures)
        ctx.note()
        summaries.append(f"{centers_n:,} x {rows:,}: {figures['total_s']:.2f} s"
                         + (f", peak {figures['peak_gpu_gb']} GB" if figures["peak_gpu_gb"] is not None else ""))
        if centers_n >= 50_000:
            goal = ctx.goal(figures["total_s"] <= 10.0, f"{figures['total_s']:.1f} s vs at most 10 s")
        del wrong, centers
    bad = [c for c in ctx.figures["cases"] if not (c["picks"] == c["distinct"] == c["budget"] and c["in_range"])]
    summary = "; ".join(summaries)
    if bad:
        return failed(f"{bad[0]['centers']} centers: {bad[0]['distinct']} distinct picks of {bad[0]['picks']} for a "
                      f"budget of {bad[0]['budget']}", summary, goal or ctx.goal(False, "not measured"))
    return passed(summary, goal or ctx.goal(False, "the 50,000-center case was not run"))


def _uint8_images(n: int, side: int, device, seed: int):
    """``[n, 3, side, side]`` uint8 random images on the CPU (drawn on ``device``, in blocks)."""
    import torch
    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, 3, side, side, dtype=torch.uint8)
    block = max(1, (1 << 28) // (3 * side * side))
    for start in range(0, n, block):
        stop = min(n, start + block)
        out[start:stop] = torch.randint(0, 256, (stop - start, 3, side, side), dtype=torch.uint8, device=device,
                                        generator=gen).cpu()
    return out


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _dali_jpeg_source(ctx: Ctx, device, classes: int, stop_at: float):
    """A DALI folder source over generated JPEGs (``fkal.data.folder``), or None with DALI absent."""
    if device.type != "cuda" or _dali_version() is None:
        return None
    from fkal.data.folder import ImageFolderLoader
    s = ctx.sizes["pool18"]
    written = write_jpeg_tree(ctx.work / "jpegs" / "JPEG", s["max_jpegs"], s["jpeg_sides"], stop_at=stop_at)
    source = ImageFolderLoader(folder="JPEG", num_classes=classes, backend="auto")(str(ctx.work / "jpegs"),
                                                                                   device=device).train
    if type(source).__name__ != "DaliFolderSource":
        raise RuntimeError(f"the folder loader chose {type(source).__name__} with DALI installed")
    ctx.note(jpegs_written=written)
    return source


def pool_pass(ctx: Ctx, model_name: str, classes: int, side: int, target: int, batch: int, dali: bool) -> dict:
    """Images/s of the pfk-phat pool pass (descriptors and Fisher scores, L = 768) and of a plain inference pass of
    the same model over the same images; the count of images fitted to the allowance from a calibration."""
    import torch

    from fkal.data import TensorSource
    from fkal.descriptors import extract
    from fkal.models import build_model, taps_for
    from fkal.training import predict
    device = _device(ctx)
    torch.manual_seed(0)
    model = build_model(model_name, classes).to(device).eval()
    taps = taps_for(model, 768)
    rng = np.random.default_rng(0)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    source, kind = None, "uint8 tensors in memory (fkal.data.TensorSource), generated"
    if dali:
        try:
            source = _dali_jpeg_source(ctx, device, classes, time.monotonic() + 0.3 * ctx.left())
            if source is not None:
                kind = "generated JPEGs decoded by DALI (fkal.data.folder.DaliFolderSource)"
                target = min(target, len(source))
        except Exception as e:
            ctx.note(dali_error=one_line(e))
            source = None
    calib = min(target, 2 * batch)
    t0 = time.perf_counter()
    images = None if source is not None else _uint8_images(calib, side, device, 0)
    generate_rate = calib / max(time.perf_counter() - t0, 1e-9)

    def tensors(imgs):
        return TensorSource(imgs, rng.integers(classes, size=len(imgs)), mean, std)
    src = source if source is not None else tensors(images)
    labels = rng.integers(classes, size=len(src))
    ctx.note(model=model_name, image_size=side, taps=list(taps), L=768, batch=batch, source=kind,
             pool_target=target, device=str(device), cuda=_cuda_settings(device))

    def passes(idx: np.ndarray) -> tuple[float, float, float]:
        s_src = _timed(lambda: [None for _ in src.batches(idx, batch)])
        s_ext = _timed(lambda: extract(model, src, idx, taps, device, batch, labels=labels[idx], fisher=True))
        s_pred = _timed(lambda: predict(model, src, idx, device, batch))
        return s_src, s_ext, s_pred
    warm = np.arange(min(batch, calib))
    extract(model, src, warm, taps, device, batch, labels=labels[warm], fisher=True)      # warm-up: kernels, cuDNN
    predict(model, src, warm, device, batch)
    _reset_peak(device)
    idx = np.arange(calib)
    timing = passes(idx)
    per_image = sum(t / calib for t in timing) + (0 if source is not None else 1 / generate_rate)
    fit = int(ctx.left() * 0.85 / per_image) // batch * batch
    n = min(target, fit)
    if n > calib:
        if source is None:
            del src, images
            images = _uint8_images(n, side, device, 1)
            src = tensors(images)
            labels = rng.integers(classes, size=n)
        idx = np.arange(n)
        timing = passes(idx)
    else:
        n = calib
    s_src, s_ext, s_pred = timing
    extract_rate, predict_rate = n / s_ext, n / s_pred
    ratio = extract_rate / predict_rate
    ctx.note(images=n, full_pool=n >= target, source_only_img_s=round(n / s_src, 1), extract_s=round(s_ext, 2),
             extract_img_s=round(extract_rate, 1), predict_s=round(s_pred, 2), predict_img_s=round(predict_rate, 1),
             ratio=round(ratio, 3), peak_gpu_gb=_peak_gb(device))
    summary = (f"extract {extract_rate:,.0f} img/s vs inference {predict_rate:,.0f} img/s: {ratio:.0%} "
               f"({n:,} images{'' if n >= target else f' of {target:,}'}; {kind.split(' (')[0]})")
    return passed(summary, ctx.goal(ratio >= 0.45, f"{ratio:.0%} vs at least 45%"))


def check_pool_pass_resnet10(ctx: Ctx) -> dict:
    s = ctx.sizes["pool10"]
    return pool_pass(ctx, "resnet10-small", 10, 32, s["images"], s["batch"], dali=False)


def check_pool_pass_resnet18(ctx: Ctx) -> dict:
    s = ctx.sizes["pool18"]
    return pool_pass(ctx, "resnet18", 1000, 224, s["images"], s["batch"], dali=True)


def synthetic_pool(n: int, c: int, d: int, ir: float, seed: int, device, chunk: int = 1 << 16) -> dict:
    """benchmarks/successors_scale.py's synthetic pool, built on ``device``: class c drawn with prior 1 for the first
    C/2 classes and 1/IR for the rest; means mu_c ~ N(0, I_d); h = relu(mu_y + 3.5 N(0, I_d)); W = mu + N(0, I);
    logits = h W^T / sqrt(d); softmax. Returns truth, features, logits, probs and weight (W / sqrt(d))."""
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    prior = torch.ones(c, device=device)
    prior[c // 2:] /= ir
    y = torch.multinomial(prior, n, replacement=True, generator=g)
    mu = torch.randn(c, d, device=device, generator=g)
    weight = mu + torch.randn(c, d, device=device, generator=g)
    out = {name: torch.empty(n, d if name == "features" else c, device=device)
           for name in ("features", "logits", "probs")}
    for r in range(0, n, chunk):
        yy = y[r:r + chunk]
        h = torch.relu(mu[yy] + 3.5 * torch.randn(len(yy), d, device=device, generator=g))
        z = (h @ weight.T) / math.sqrt(d)
        out["features"][r:r + chunk], out["logits"][r:r + chunk] = h, z
        out["probs"][r:r + chunk] = torch.softmax(z, 1)
    return {**out, "truth": y, "weight": weight / math.sqrt(d)}


def check_successors(ctx: Ctx) -> dict:
    import torch

    from fkal.acquisitions.badge import badge_select
    from fkal.acquisitions.base import base_select
    from fkal.acquisitions.direct import direct_select
    from fkal.acquisitions.galaxy import galaxy_select
    s = ctx.sizes["successors"]
    n, c, p = s["n"], s["c"], s["p"]
    device = _device(ctx)
    t0 = time.perf_counter()
    pool = synthetic_pool(n, c, s["d"], 100.0, 0, device)
    labeled_idx = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:p].to(device)
    labels = torch.full((n,), -1, dtype=torch.long, device=device)
    labels[labeled_idx] = pool["truth"][labeled_idx]
    truth = pool["truth"].cpu().tolist()
    _sync(device)
    ctx.note(n=n, c=c, p=p, d=s["d"], labeled=p, ir=100, generate_s=round(time.perf_counter() - t0, 2),
             inputs_on=str(device), cuda=_cuda_settings(device))

    def oracle(i: int) -> int:
        return truth[i]

    def select(method: str, picks: int):
        gen = torch.Generator().manual_seed(2)
        if method == "galaxy":
            return galaxy_select(pool["probs"], labels, picks, oracle, gen)
        if method == "direct":
            return direct_select(pool["probs"], labels, picks, oracle, gen)
        if method == "base":
            return base_select(pool["weight"], picks, logits=pool["logits"], labeled=labels >= 0)[0]
        return badge_select(pool["probs"], pool["features"], picks, gen, labeled=labels >= 0)[0]

    def timed(method: str, picks: int) -> dict:
        _reset_peak(device)
        _sync(device)
        t = time.perf_counter()
        out = select(method, picks)
        _sync(device)
        seconds = time.perf_counter() - t
        out = torch.as_tensor(out).to(device)
        ok = len(out) == picks and len(torch.unique(out)) == picks and bool((labels[out] < 0).all())
        if not ok:
            raise RuntimeError(f"{method} returned {len(out)} picks, not {picks} distinct unlabeled images")
        return {"picks": picks, "seconds": round(seconds, 3), "peak_gpu_gb": _peak_gb(device)}

    methods = ("base", "badge", "galaxy", "direct")      # DIRECT, which cannot be probed, last
    errors, parts = [], []
    for i, method in enumerate(methods):
        try:
            if method in ("direct", "base"):
                result = timed(method, p)
            else:
                probe = max(min(p, 10), p // s["probe_share"])
                result = {"probe": timed(method, probe)}
                whole = result["probe"]["seconds"] * p / probe
                share = ctx.left() / (len(methods) - i)
                if probe < p and whole * 1.2 < share:
                    result.update(timed(method, p))
                elif probe < p:
                    result["extrapolated_s"] = round(whole, 1)
                    result["extrapolation"] = (f"linear extrapolation to {p:,} picks from the probe's "
                                               f"{result['probe']['seconds']:.2f} s for {probe:,}: not measured")
                else:
                    result.update(result.pop("probe"))
            ctx.note(**{method: result})
            parts.append(f"{method} {result['seconds']:.2f} s" if "seconds" in result else
                         f"{method} ~{result['extrapolated_s']:,.0f} s (extrapolated from {result['probe']['picks']:,} "
                         f"picks)")
        except Exception as e:
            traceback.print_exc()
            ctx.note(**{method: {"error": one_line(e)}})
            errors.append(f"{method}: {one_line(e)}")
            parts.append(f"{method} failed")
    summary = f"N={n:,} C={c:,} P={p:,}: " + ", ".join(parts)
    return failed(errors[0], summary) if errors else passed(summary)


# ---- c. the MNIST figure's throughput ----------------------------------------------------------------------------
def check_throughput(ctx: Ctx) -> dict:
    s = ctx.sizes["throughput"]
    out = ctx.work / "runs"
    base = [sys.executable, "run.py", "--data-root", str(ctx.mnist_root), "--out", str(out), "--imbalance-ratios",
            "100", "--no-progress", *s["args"], *([] if ctx.smoke else ["--gpu", "0"])]
    env = _env(OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    listing = subprocess.Popen([sys.executable, "run.py", "--list"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    initial_cmd = lambda r: base + ["--initial", "--run-start", str(r), "--run-stop", str(r + 1)]   # noqa: E731
    initials = {0: subprocess.Popen(initial_cmd(0), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, env=env)}
    listed, _ = listing.communicate(timeout=max(ctx.left(), 1))
    cfgs = [line.strip() for line in listed.splitlines() if line.strip()]
    if listing.returncode != 0 or not cfgs:
        last = (listed.strip().splitlines() or ["?"])[-1]
        return failed(f"run.py --list ended with status {listing.returncode}: {last}")
    tasks = [(r, cfg) for r in range(FIGURE4_RUNS) for cfg in cfgs]
    n = max(1, ctx.processes)
    for r in sorted({r for r, _ in tasks[:n]} - {0}):  # the initial models the first round needs, side by side
        initials[r] = subprocess.Popen(initial_cmd(r), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True, env=env)
    for r, proc in initials.items():
        try:
            _, err = proc.communicate(timeout=max(ctx.left() - s["min_window"], 1))
        except subprocess.TimeoutExpired:
            for other in initials.values():
                other.kill()
            return failed(f"the initial models took longer than the allowance leaves for a {s['min_window']:.0f} s "
                          "window")
        if proc.returncode != 0:
            return failed(f"run.py --initial (run{r}) ended with status {proc.returncode}: "
                          f"{(err.strip().splitlines() or ['?'])[-1]}")
    initial_s = time.monotonic() - t0
    ctx.note(cfgs=cfgs, processes=n, protocol="full (run.py defaults)" if not s["args"] else " ".join(s["args"]),
             imbalance_ratio=100, initial_runs_side_by_side=len(initials), setup_s=round(initial_s, 1))
    # the kills, the count and the process's own exit after the window: seconds on a loaded machine
    window = ctx.left() - min(30.0, max(6.0, 0.1 * ctx.left()))
    if window < s["min_window"]:
        return failed(f"{window:.0f} s left for the window after {initial_s:.0f} s of setup (at least "
                      f"{s['min_window']:.0f} s needed)")
    stop, failures = threading.Event(), []

    def worker(k: int) -> None:
        for r, cfg in tasks[k::n]:
            if stop.is_set():
                return
            log = ctx.work / f"worker{k}-run{r}-{cfg}.log"
            with open(log, "wb") as sink:
                proc = subprocess.Popen(base + ["--run-start", str(r), "--run-stop", str(r + 1), "--only", cfg],
                                        cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
                while proc.poll() is None and not stop.wait(0.2):
                    pass
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    return
            if proc.returncode != 0:
                _show_tail(log, 20)
                failures.append(f"{cfg} run{r}: exit status {proc.returncode}: {_last_line(log)}")
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    start = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(window)
    stop.set()
    measured = time.monotonic() - start
    for t in threads:
        t.join()
    per_config: dict[str, int] = {}
    done_runs = 0
    for path in out.glob("MNIST/run*/results.jsonl"):
        records, _ = read_records(path)
        for rec in records:
            per_config[rec.get("config")] = per_config.get(rec.get("config"), 0) + 1
        done_runs += sum(rec.get("iteration") == s["iterations"] for rec in records)
    iterations = sum(per_config.values())
    per_min = iterations / (measured / 60.0)
    runs_per_min = per_min / s["iterations"]
    figure4 = FIGURE4_RUNS * len(cfgs) * len(FIGURE4_IRS)
    ctx.note(window_s=round(measured, 1), iterations=iterations, iterations_by_config=per_config,
             config_runs_finished=done_runs, iterations_per_min=round(per_min, 2),
             config_runs_per_min=round(runs_per_min, 3), iterations_per_config_run=s["iterations"])
    if runs_per_min > 0:
        minutes = figure4 / runs_per_min + len(FIGURE4_IRS) * FIGURE4_RUNS / len(initials) * initial_s / 60.0
        ctx.note(figure4_projection={
            "config_runs": figure4, "projected_wall_minutes": round(minutes, 1),
            "basis": (f"PROJECTION, not measured: {figure4} config runs ({FIGURE4_RUNS} runs x {len(cfgs)} cfgs x IR "
                      f"{' and '.join(map(str, FIGURE4_IRS))}) at the measured {runs_per_min:.3f} config runs/min "
                      f"({iterations} iterations in {measured:.0f} s, {n} processes, IR 100), plus the initial "
                      f"models at the measured setup time, {initial_s:.0f} s per {len(initials)} run(s) side by "
                      "side; IR 1 assumed to run at the IR 100 rate (its pool is about twice as large, its queries "
                      "cost more)")})
        projection = f"; Figure 4 projected (not measured) at {minutes:,.0f} min"
    else:
        projection = "; no projection: no iteration finished in the window"
    summary = (f"{n} processes: {runs_per_min:.2f} config runs/min ({iterations} iterations in "
               f"{measured:.0f} s){projection}")
    return failed(failures[0], summary) if failures else passed(summary)


CHILD_CHECKS: dict[str, Callable[[Ctx], dict]] = {
    "tests": check_tests, "repeat-resume": check_repeat_resume, "dali": check_dali, "matching": check_matching,
    "pool-pass-resnet10": check_pool_pass_resnet10, "pool-pass-resnet18": check_pool_pass_resnet18,
    "successors": check_successors, "mnist-throughput": check_throughput}


def _watch_parent(parent: int, allowance: float) -> None:
    """End this check's whole process group (its run.py, pytest and worker processes too) when the parent is gone
    (killed at the device's limit, say) or the check has far outrun its allowance."""
    start = time.monotonic()
    while os.getppid() == parent and time.monotonic() - start < allowance + 10.0:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)


def child_main(args: argparse.Namespace) -> int:
    if os.getpgid(0) == os.getpid():                # a group of its own, as the parent starts it
        threading.Thread(target=_watch_parent, args=(os.getppid(), args.allowance), daemon=True).start()
    ctx = Ctx(args.child, args.smoke, args.allowance, time.monotonic(), Path(args.result), Path(args.work),
              Path(args.mnist_root), args.processes)
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.save({"status": "running"})
    try:
        outcome = CHILD_CHECKS[args.child](ctx)
    except Skip as e:
        outcome = {"status": "skipped", "reason": str(e)}
    except Exception as e:
        traceback.print_exc()
        outcome = failed(one_line(e))
    if ctx.smoke and outcome.get("summary"):
        outcome["summary"] = f"[{SMOKE_LABEL}] {outcome['summary']}"
    ctx.save(outcome)
    detail = outcome.get("error") or outcome.get("reason") or outcome.get("summary")
    print(f"{args.child}: {outcome['status']}: {detail}", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="checks: " + ", ".join(CHECK_NAMES))
    p.add_argument("--out", help="folder of the report (gpu_check.json, gpu_check.md, gpu_check.log)")
    p.add_argument("--deadline", type=float, help="seconds the whole check may take")
    p.add_argument("--smoke", action="store_true", help="the same checks on the CPU at tiny sizes, generated data")
    p.add_argument("--data-root", help="the folder that holds MNIST/raw (default: --carry's, else generated)")
    p.add_argument("--carry", help="the carried folder: MNIST/raw/*.gz and wheels/*.whl")
    p.add_argument("--only", nargs="+", choices=CHECK_NAMES, metavar="CHECK", help="run only these checks")
    p.add_argument("--processes", type=int, default=None,
                   help="processes side by side in mnist-throughput (default: the CPU count; 2 at most in smoke)")
    p.add_argument("--prepare-carry", metavar="DIR", help="gzip MNIST (from --data-root) into DIR, then stop")
    p.add_argument("--wheels", action="store_true", help="with --prepare-carry: pip download the wheels (network)")
    for name in ("--child", "--result", "--work", "--mnist-root"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--allowance", type=float, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.child:
            return child_main(args)
        if args.prepare_carry:
            return prepare_carry(Path(args.prepare_carry), args.data_root, args.wheels)
        if not args.out or args.deadline is None:
            raise UsageError("--out and --deadline are needed (or --prepare-carry)")
        if args.deadline <= 0:
            raise UsageError(f"--deadline {args.deadline:g}: give the seconds the check may take, above 0")
        return parent_main(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
