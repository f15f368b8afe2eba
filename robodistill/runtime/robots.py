"""Robots the control loop drives: anything with `read_obs()` and `send_action(a)`. Numpy only.

`CallbackRobot` wraps a user's two functions (their controller's observation read-out and command). The MuJoCo task
as a stand-in robot (`robot=sim`) lives in `robodistill/sim_robot.py`, outside this torch- and MuJoCo-free package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Robot(Protocol):
    """What ControlLoop needs from a robot; an optional `done` attribute ends an episode."""

    def read_obs(self) -> dict[str, np.ndarray]: ...

    def send_action(self, action: np.ndarray) -> None: ...


class CallbackRobot:
    """A robot given as two callables: `read_obs() -> {key: array}` and `send_action(action)`; `done()` (optional)
    says when the episode is over."""

    def __init__(
        self,
        read_obs: Callable[[], dict[str, Any]],
        send_action: Callable[[np.ndarray], Any],
        action_dim: int,
        done: Callable[[], bool] | None = None,
    ):
        if not callable(read_obs) or not callable(send_action):
            raise TypeError("CallbackRobot needs callables read_obs() and send_action(action)")
        self._read, self._send, self._done = read_obs, send_action, done
        self.action_dim = int(action_dim)

    def read_obs(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._read().items()}

    def send_action(self, action: np.ndarray) -> None:
        self._send(np.asarray(action, dtype=np.float32))

    @property
    def done(self) -> bool:
        return bool(self._done()) if self._done is not None else False
