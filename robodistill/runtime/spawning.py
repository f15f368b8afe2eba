"""Starting helper processes (spawn) from any program, a script without a main guard included. Standard library."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """Processes spawned inside do not re-run the user's main script.

    spawn re-imports `__main__` in the child (from its `__spec__` or `__file__`) so that objects defined there can be
    unpickled; our children (the dataset writer, the inference process) need none of them. Re-running the script
    there would also re-run the top-level code of a script without an `if __name__ == "__main__":` guard (the
    collection or the control loop itself, in the child) and cannot work for code typed into stdin or a notebook. A
    bare `__main__` during `start()` leaves the child nothing to import.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
