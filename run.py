#!/usr/bin/env python
"""Orchestrator: ``python run.py --initial``, then ``python run.py --unsupervised 1`` (see README.md)."""
import sys

from fkal.launch import run_main

if __name__ == "__main__":
    sys.exit(run_main())
