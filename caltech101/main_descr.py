#!/usr/bin/env python
"""A stage script of a dataset folder: a thin front to the shared core; `--help` says what it does."""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702
from fkal.launch import run_stage  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage(__file__))
