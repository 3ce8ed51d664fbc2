#!/usr/bin/env python
"""A stage script of the CIFAR-10 folder: a thin front to the shared core; `--help` says what it does."""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702
from fkal.cli import stage_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(stage_main(__file__))
