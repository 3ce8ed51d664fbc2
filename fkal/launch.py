"""Entry points of the scripts, light to import: PyTorch loads inside them, so Ctrl-C while it loads ends with one
line instead of a traceback."""
from __future__ import annotations

import signal
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional


@contextmanager
def interruptible_imports() -> Iterator[None]:
    """Run the imports of a script so that Ctrl-C meanwhile ends it with one line and exit code 130.

    Ctrl-C is noted when it arrives, not only seen as the ``KeyboardInterrupt`` it raises: one that lands while a
    C extension initialises can be swallowed there and surface later as another error (numpy's "cannot load
    module more than once per process"), or not at all; any of these ends the script the same way. A SIGINT
    that the script was started ignoring (``nohup``, ``&`` in a shell without job control) stays ignored.
    """
    hits: list[int] = []
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def on_sigint(signum, frame):
        hits.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:                      # not the main thread: leave Ctrl-C as it is
        yield
        return
    try:
        yield
    except BaseException:
        if not hits:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if hits:
        print("interrupted before anything started", file=sys.stderr)
        raise SystemExit(130)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings shown as one ``warning: {message}`` line each (not Python's two lines of file, line and code)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def run_main(argv: Optional[list[str]] = None) -> int:
    """``run.py`` (``fkal-run``): the experiments."""
    with interruptible_imports():
        from .cli import main
    with one_line_warnings():
        return main(argv)


def plot_main(argv: Optional[list[str]] = None) -> int:
    """``run_plot.py`` (``fkal-plot``): tables and figures of a results folder."""
    with interruptible_imports():               # PyTorch and matplotlib load here: Ctrl-C meanwhile is one line
        from .reporting.cli import main
    return main(argv)


def label_main(argv: Optional[list[str]] = None) -> int:
    """``label_next.py`` (``fkal-label``): labeling rounds on your own images."""
    with interruptible_imports():
        from .labeling.cli import main
    return main(argv)


def run_stage(script: str) -> int:
    """A dataset folder's stage script ``{dataset}/{stage}.py``."""
    with interruptible_imports():
        from .cli import stage_main
    with one_line_warnings():
        return stage_main(script)
