"""examples/ run as a user runs them: exit 0 and the lines they promise."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "select_torchvision.py"), "--pool", "1200",
                           "--steps", "20", *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.e2e
def test_the_select_example_on_real_mnist(mnist_root):
    out = run_example("--data-root", str(mnist_root))
    lines = out.splitlines()
    assert lines[0].startswith("pool: ") and "D_v: 200 (balanced)" in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["pfk-phat-L768", "badge", "random"]
    assert all("rare " in line and "/50" in line for line in lines[1:])


@pytest.mark.e2e
def test_the_select_example_on_generated_images():
    out = run_example()
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == ["pfk-phat-L768", "badge", "random"]
