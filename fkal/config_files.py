"""Experiments as files: ``run.py --config FILE`` and ``run_plot.py --config FILE`` (``configs/*.yaml``).

A file names one experiment of the documentation: the ``run.py`` options every one of its jobs shares, the jobs
(each a set of options over the shared ones, e.g. ten runs of two configurations, then three runs of a costly
baseline), and the ``run_plot.py`` commands that make its tables and figures::

    name: paper-ir100
    description: the ten-run comparison with the paper's Figure 4 at IR = 100
    options:                      # run.py options by their flag names, without the leading dashes
      data-root: ../shared/datasets
      epoch-selection: val
      imbalance-ratios: [100]
    jobs:
      - {only: [random, pfk-phat-L80], run-stop: 10}
      - {only: [varR-E4-K32], run-stop: 3}
    plots:
      - {epoch-selection: val, imbalance-ratios: [100], targets: ["85", "90", final]}

Values are what the flag takes: a list for a flag of several values, ``true`` for a switch. Flags given on the
command line beside ``--config`` come after the file's and win (``run.py --config FILE --run-stop 1`` tries it on
one run). Every record of a job carries the file's name and the SHA-256 of its bytes in its settings
(``settings.config_file``), as information: two runs made with the same options, by a file or by hand, are the
same row of a table and resume each other.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import UserError

KEYS = ("name", "description", "options", "jobs", "plots")


@dataclass(frozen=True)
class ExperimentFile:
    """A parsed ``configs/*.yaml``: its ``name``, the shared ``options``, the ``jobs`` and the ``plots``."""

    path: Path
    name: str
    description: str
    options: dict
    jobs: list = field(default_factory=list)
    plots: list = field(default_factory=list)
    sha256: str = ""

    def provenance(self) -> dict:
        """What every record of a job carries in its settings: ``{"name", "file", "sha256"}``."""
        return {"name": self.name, "file": self.path.name, "sha256": self.sha256}


def load(path: str | Path) -> ExperimentFile:
    """Read an experiment file; a missing file, bad YAML or an unknown key is a ``UserError`` naming it."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror or e}); give the path of a configs/*.yaml "
                        "file") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]}); see configs/README.md") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping with {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UserError(f"--config {path}: unknown key {unknown[0]!r}; an experiment file has {', '.join(KEYS)}")
    options = data.get("options") or {}
    jobs = data.get("jobs") or [{}]
    plots = data.get("plots") or []
    for what, value in (("options", options), *((f"jobs[{i}]", j) for i, j in enumerate(jobs)),
                        *((f"plots[{i}]", p) for i, p in enumerate(plots))):
        if not isinstance(value, dict):
            raise UserError(f"--config {path}: {what} must be a mapping of flag names to values")
    return ExperimentFile(path, str(data.get("name") or path.stem), str(data.get("description") or ""),
                          dict(options), [dict(j) for j in jobs], [dict(p) for p in plots],
                          hashlib.sha256(raw).hexdigest())


def argv_of(options: dict, what: str = "options") -> list[str]:
    """``{"run-stop": 3, "only": ["a", "b"], "no-progress": true}`` -> ``["--run-stop", "3", "--only", "a", "b",
    "--no-progress"]``; ``false`` or null leaves a flag out."""
    argv = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-").lstrip("-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            if not value:
                raise UserError(f"{what}: {key} is an empty list; give at least one value or leave it out")
            argv += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            raise UserError(f"{what}: {key} holds a mapping; a flag takes a value or a list")
        else:
            argv += [flag, str(value)]
    return argv


def split_config(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """``(the --config FILE value or None, the other arguments)`` of a command line."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a file: --config configs/NAME.yaml")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if a.startswith("--config="):
            return a.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def job_argvs(experiment: ExperimentFile, given: Sequence[str]) -> list[list[str]]:
    """The command line of each job: the shared options, the job's, then ``given`` (which wins)."""
    return [argv_of(experiment.options) + argv_of(job, f"jobs[{i}]") + list(given)
            for i, job in enumerate(experiment.jobs)]


def plot_argvs(experiment: ExperimentFile, given: Sequence[str]) -> list[list[str]]:
    """The ``run_plot.py`` command line of each plot: ``out`` and ``dataset`` from the shared options where the
    plot does not set them, the plot's options, then ``given``."""
    shared = {k: v for k, v in experiment.options.items() if str(k).replace("_", "-") in ("out", "dataset")}
    return [argv_of({**shared, **plot}, f"plots[{i}]") + list(given) for i, plot in enumerate(experiment.plots)]


def describe(argv: Sequence[Any]) -> str:
    return " ".join(str(a) for a in argv)
