#!/usr/bin/env python
"""MNIST stage `unsup`: a thin front to the shared core (`fkal`); see `python mnist/unsup.py --help`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fkal.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(dataset="mnist", stage="unsup"))
