"""Progress bars on long work: tqdm bars in a terminal, nothing when output goes to a file or a CI log (no
thousands of carriage-return updates there)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar shown only when `enabled` and stderr is a terminal; `kwargs` are tqdm's (total, desc, ...)."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)  # tqdm: disable=None hides it off a TTY
