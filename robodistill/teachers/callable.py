"""Teachers that are plain functions: a user's callable `obs -> action` (batched, or one observation at a time),
or a task's scripted expert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robodistill.teachers.protocol import TeacherOutput

UNBATCHED_HINT = "if your function takes one observation at a time, set teacher.batched=false"


class CallableTeacher:
    """Wraps a plain callable `obs -> action` as a teacher.

    With one observation key the callable gets that array, with several the dict of them. Batched (default): the
    whole batch, (N, ...) -> (N, A). `batched=False`: one observation at a time, (...) -> (A,), called per row.
    """

    def __init__(self, fn: Callable[[Any], np.ndarray], obs_keys: list[str] = ("state",), batched: bool = True):
        self.fn, self.obs_keys, self.batched = fn, list(obs_keys), batched

    def __repr__(self) -> str:
        name = f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"
        return f"CallableTeacher({name}, {'batched' if self.batched else 'one observation at a time'})"

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        x = obs[self.obs_keys[0]] if len(self.obs_keys) == 1 else {k: obs[k] for k in self.obs_keys}
        if self.batched:
            return TeacherOutput(action=np.asarray(self.fn(x), dtype=np.float32))
        n = len(obs[self.obs_keys[0]])
        rows = ({k: v[i] for k, v in x.items()} if isinstance(x, dict) else x[i] for i in range(n))
        actions = [np.atleast_1d(np.asarray(self.fn(row), dtype=np.float32)) for row in rows]  # a 1-D action: a float
        return TeacherOutput(action=np.stack(actions))  # (N, A)
