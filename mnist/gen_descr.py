#!/usr/bin/env python
"""A stage script of a dataset folder: a thin front to the shared core; `--help` says what it does."""
import sys

from fkal.launch import run_stage

if __name__ == "__main__":
    sys.exit(run_stage(__file__))
