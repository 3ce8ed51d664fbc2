#!/usr/bin/env python
"""The experiments (``fkal.cli``): ``python run.py --initial``, then ``python run.py --unsupervised 1``; ``--help``."""
import sys

from fkal.launch import run_main

if __name__ == "__main__":
    sys.exit(run_main())
