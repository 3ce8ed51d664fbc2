"""Entry points of the scripts, light to import: PyTorch loads inside them, so Ctrl-C while it loads ends with one
line instead of a traceback."""
from __future__ import annotations

import sys
from typing import Optional


def _interrupted() -> int:
    print("interrupted before anything started", file=sys.stderr)
    return 130


def run_main(argv: Optional[list[str]] = None) -> int:
    """``run.py``."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        return _interrupted()
    return main(argv)


def run_stage(script: str) -> int:
    """A dataset folder's stage script ``{dataset}/{stage}.py``."""
    try:
        from .cli import stage_main
    except KeyboardInterrupt:
        return _interrupted()
    return stage_main(script)
