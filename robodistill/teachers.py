"""The teacher protocol: `teacher.act(obs_batch) -> TeacherOutput`, and adapters for each source."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

import envs
from robodistill.errors import UserError


@dataclass
class TeacherOutput:
    """A batch of teacher labels: the action always; a distribution or action chunk where the source gives one."""

    action: np.ndarray  # (N, A)
    mean: np.ndarray | None = None  # (N, A)
    std: np.ndarray | None = None  # (N, A)
    logits: np.ndarray | None = None  # (N, A, V) per-dimension token logits
    chunk: np.ndarray | None = None  # (N, T_p, A)


class Teacher(Protocol):
    obs_keys: list[str]

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput: ...


class TeacherError(RuntimeError):
    """The teacher failed or returned unusable labels during a run."""


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


def load_callable(target: str) -> Callable:
    """Import `package.module:function`."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise UserError(f"teacher.target must look like 'package.module:function', got {target!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import teacher.target {target!r}: {exc}") from exc


def make_teacher(cfg: Mapping[str, Any], env: gym.Env) -> Teacher:
    """Build the teacher named by `cfg.kind` for `env` (a single env of the task)."""
    kind = cfg.get("kind")
    obs_keys = list(cfg.get("obs_keys") or ["state"])
    if kind == "scripted":
        try:
            return CallableTeacher(envs.make_expert(env), obs_keys)
        except TypeError as exc:
            raise UserError(str(exc)) from exc
    if kind == "callable":
        return CallableTeacher(load_callable(str(cfg.get("target"))), obs_keys)
    raise UserError(f"unknown teacher kind {kind!r}; available: scripted, callable")


def check_labels(out: TeacherOutput, n: int, action_dim: int) -> None:
    """Raise TeacherError unless the teacher returned finite actions of shape (n, action_dim)."""
    a = out.action
    if a.shape != (n, action_dim):
        raise TeacherError(
            f"teacher returned actions of shape {a.shape}, but the task's action space needs ({n}, {action_dim}): "
            "teacher and student action spaces do not match"
        )
    if not np.all(np.isfinite(a)):
        raise TeacherError("teacher returned NaN or inf actions")
