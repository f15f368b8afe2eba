"""Teachers that are plain functions: a user's batched callable `obs -> action`, or a task's scripted expert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robodistill.teachers.protocol import TeacherOutput


class CallableTeacher:
    """Wraps a plain callable `obs -> action` (batched) as a teacher.

    With one observation key the callable gets that array (N, ...); with several it gets the dict.
    """

    def __init__(self, fn: Callable[[Any], np.ndarray], obs_keys: list[str] = ("state",)):
        self.fn = fn
        self.obs_keys = list(obs_keys)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        x = obs[self.obs_keys[0]] if len(self.obs_keys) == 1 else {k: obs[k] for k in self.obs_keys}
        return TeacherOutput(action=np.asarray(self.fn(x), dtype=np.float32))
