"""User-facing errors: one clear line and exit code 2, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment. The message names the problem and the fix."""

    exit_code = 2


class SharedUserError(UserError):
    """A ``UserError`` that every process of a ``torchrun`` run raised together (``fkal.distributed``): rank 0
    alone prints it."""
