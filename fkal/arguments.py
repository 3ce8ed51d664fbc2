"""Command-line value types that check their range when the line is parsed, and a parser whose errors are one
line: ``error: argument --iterations: must be at least 1 (got 0)``, exit code 2."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn, Optional


def integer(minimum: Optional[int] = None, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An ``int`` type for argparse within [minimum, maximum] (either bound optional)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum} (got {value})")
        return value
    parse.__name__ = "integer"
    return parse


def number(minimum: Optional[float] = None, maximum: Optional[float] = None, *, above: bool = False,
           below: bool = False) -> Callable[[str], float]:
    """A finite ``float`` type for argparse; ``above``/``below`` make the bounds exclusive."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'above' if above else 'at least'} {minimum:g} (got {value:g})")
        if maximum is not None and (value >= maximum if below else value > maximum):
            raise argparse.ArgumentTypeError(f"must be {'below' if below else 'at most'} {maximum:g} (got {value:g})")
        return value
    parse.__name__ = "number"
    return parse


class OneLineErrors(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error:`` line (the fix: ``--help``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
