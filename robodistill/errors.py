"""User-facing errors: one clear line on the command line instead of a traceback wall."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (config, files, spaces) that the message alone explains."""


def report_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator for entry points: print a UserError (or any error marked `user_facing`) as one line, exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not (isinstance(exc, UserError) or getattr(exc, "user_facing", False)):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper
