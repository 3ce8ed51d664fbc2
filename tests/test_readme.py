"""The README's commands run as written: every shell block a user is told to run is run here, on the real MNIST,
with only size-shrinking flags appended (argparse takes the last value of a flag given twice), so a README
command that no longer works fails CI.

A block is run unless the line before its fence is an HTML comment ``<!-- not run by the tests: WHY -->`` (a GPU,
a server, the full protocol's hours). A line's commands are joined by ``&&`` as in a shell; ``pip install`` is
left out (the environment under test is what it installed) and so is ``python -m pytest`` (this is it).
Every other command must be one this file knows how to shrink, so a new kind of command cannot slip through
unrun. Each block runs in a fresh folder where ``../shared/datasets`` is the real MNIST and the scripts, tools
and configs of this checkout sit as in a clone.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*not run by the tests:\s*(?P<why>.+?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<info>[\w-]*)\s*$")
SHELL = {"", "bash", "sh", "shell", "console"}

# Size-shrinking flags appended to each script's commands: smaller pools and validation sets, fewer epochs,
# iterations and runs. The README's main job keeps its own runs, epochs and iterations (what it promises is
# checked below), so only the data sizes shrink there.
RUN_DATA = ["--train-size", "3000", "--val-size", "500", "--no-progress"]
RUN_ALL = RUN_DATA + ["--run-stop", "1", "--iterations", "2", "--epochs", "2", "--unsup-epochs", "1"]
SHRINK = {
    "run.py": RUN_ALL,
    "run_plot.py": [],
    "visualize_tsne.py": ["--samples", "300"],
    "label_next.py select": ["--epochs", "2", "--unsup-epochs", "1", "--no-progress"],
    "label_next.py": [],
    "tools/mnist_folders.py write": ["--pool-size", "2000", "--val-per-class", "20"],
    "tools/mnist_folders.py": [],
}


@dataclass
class Block:
    line: int                 # the README line of the opening fence
    commands: list[str]       # one shell line each (continuations joined)
    skip: str | None          # why it is not run, or None


def blocks(text: str) -> list[Block]:
    """The README's shell blocks in order, with their commands and skip reasons."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, info = i, m.group("info")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        i = end + 1
        if info not in SHELL:
            continue
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.match(before.strip())
        body = "\n".join(lines[start + 1:end]).replace("\\\n", " ")
        commands = [re.sub(r"\s+#.*$", "", c).strip() for c in body.splitlines()]
        out.append(Block(start + 1, [c for c in commands if c and not c.startswith("#")],
                         skip.group("why") if skip else None))
    return out


def shrunk(command: str, main_job: bool) -> list[str] | None:
    """The argv of one command with its shrinking flags, or None for a command left out (pip, pytest)."""
    argv = shlex.split(command)
    if argv[0] == "pip" or argv[:3] == ["python", "-m", "pytest"]:
        return None
    if argv[0] == "torchrun":
        script_at = next(i for i, a in enumerate(argv) if a.endswith(".py"))
        launcher = [sys.executable, "-m", "torch.distributed.run", *argv[1:script_at]]
        argv = ["python", *argv[script_at:]]
    else:
        launcher = [sys.executable]
    if argv[0] != "python" or len(argv) < 2:
        raise AssertionError(f"README command {command!r}: this test does not know how to run it; shrink it here "
                             "or mark its block <!-- not run by the tests: WHY -->")
    script = argv[1]
    key = f"{script} {argv[2]}" if len(argv) > 2 and f"{script} {argv[2]}" in SHRINK else script
    if key not in SHRINK:
        raise AssertionError(f"README command {command!r}: no shrinking flags known for {key}")
    extra = RUN_DATA if (main_job and script == "run.py") else SHRINK[key]
    return [*launcher, *argv[1:], *extra]


def workspace(tmp_path: Path, data_root: Path) -> Path:
    """A folder laid out as a clone beside ``../shared/datasets``: the scripts and folders users run, linked."""
    (tmp_path / "shared").mkdir(parents=True)
    (tmp_path / "shared" / "datasets").symlink_to(data_root.resolve())
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("run.py", "run_plot.py", "label_next.py", "visualize_tsne.py", "tools", "configs", "examples"):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    return work


def run_block(block: Block, work: Path, main_job: bool = False) -> list[list[str]]:
    """Run every command of ``block`` in ``work`` (each line's ``&&`` chain stops at its first failure, as a
    shell's); returns the argv run. A failing command fails the test with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    ran = []
    for line in block.commands:
        for part in line.split("&&"):
            argv = shrunk(part.strip(), main_job)
            if argv is None:
                continue
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (f"README line {block.line}: {part.strip()!r} ended with exit status "
                                          f"{done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            ran.append(argv)
    return ran


def readme_blocks() -> list[Block]:
    return blocks(README.read_text())


def test_the_readme_names_why_each_block_it_does_not_run_and_knows_every_command_it_runs():
    """Parsing alone (no data needed): the first block is the main job and the tests, every other shell block
    is either shrinkable or marked with a reason."""
    found = readme_blocks()
    first = found[0]
    assert first.skip is None and len(first.commands) == 2
    assert "python run.py" in first.commands[0] and "run_plot.py" in first.commands[0]
    assert first.commands[1].endswith("python -m pytest -q")
    for block in found:
        if block.skip is None:
            for line in block.commands:
                for part in line.split("&&"):
                    shrunk(part.strip(), block is first)
    assert sum(b.skip is None for b in found) >= 3        # the main job, the labeling walk-through, torchrun


def test_the_main_job_runs_as_written_and_writes_the_figures_and_tables(mnist_root, tmp_path):
    """The first line of the first block, as written, with only --train-size and --val-size appended: exit 0,
    the records of both runs and configurations, and the figures and tables it promises."""
    import json

    work = workspace(tmp_path, mnist_root)
    first = readme_blocks()[0]
    ran = run_block(Block(first.line, first.commands[:1], None), work, main_job=True)
    assert [a[1] for a in ran] == ["run.py", "run.py", "run_plot.py"]
    out = work / "local_data" / "quick" / "MNIST"
    for run in (0, 1):
        records = [json.loads(line) for line in (out / f"run{run}" / "results.jsonl").read_text().splitlines()]
        assert sorted((r["config"], r["iteration"]) for r in records) == \
            sorted((c, b) for c in ("random", "pfk-phat-L80") for b in (1, 2, 3, 4))
        assert {r["settings"]["unsup"]["epochs"] for r in records} == {2}   # the initial models' own pretraining
        assert {r["settings"]["train"]["epochs"] for r in records} == {10}
    figures = out / "figures"
    for name in ("accuracy_IR100.png", "selection_IR100.png", "selection_summary_IR100.png", "results.md",
                 "accuracy.csv"):
        assert (figures / name).stat().st_size > 0, name
    table = (figures / "results.md").read_text()
    assert "pfk-phat-L80" in table and "random" in table


@pytest.mark.e2e
def test_every_other_readme_block_runs_shrunk(mnist_root, tmp_path):
    """Every other shell block that is not marked, each in a fresh clone folder, with its shrinking flags."""
    found = readme_blocks()[1:]
    runnable = [b for b in found if b.skip is None]
    assert runnable
    for i, block in enumerate(runnable):
        run_block(block, workspace(tmp_path / f"block{i}", mnist_root))
