"""The teacher protocol: `teacher.act(obs_batch) -> TeacherOutput`, its errors and the checks on its labels.

A leaf: it imports nothing of robodistill, so every layer (collector, learners, the policy server) can depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class TeacherOutput:
    """A batch of teacher labels: the action always; a distribution or action chunk where the source gives one."""

    action: np.ndarray  # (N, A)
    mean: np.ndarray | None = None  # (N, A)
    std: np.ndarray | None = None  # (N, A)
    logits: np.ndarray | None = None  # (N, A, V) per-dimension token logits
    chunk: np.ndarray | None = None  # (N, T_p, A)


OPTIONAL_LABELS = ("mean", "std", "logits", "chunk")  # the TeacherOutput fields a source may leave None


class Teacher(Protocol):
    """`act(obs_batch)`; a teacher that keeps per-env state also has `reset(slot)` and `act(obs, slots=...)`."""

    obs_keys: list[str]

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput: ...


class TeacherError(RuntimeError):
    """The teacher failed or returned unusable labels during a run."""

    user_facing = True  # entry points print it as one line; checkpoints already written stay as they are


def _stateful(policy: Any) -> Any | None:
    """The policy, or the first one it wraps (`.teacher`), that keeps per-episode state (has `reset`); else None."""
    while policy is not None:
        if hasattr(policy, "reset"):
            return policy
        policy = getattr(policy, "teacher", None)
    return None


def reset_episode(policy: Any, slot: int | None) -> None:
    """Reset the per-episode state of env `slot` (all: None) in a stateful policy, looking through wrappers."""
    stateful = _stateful(policy)
    if stateful is not None:
        stateful.reset(slot)


def act_in_slots(policy: Any, obs: dict[str, np.ndarray], slots: list[int] | None, *args: Any) -> Any:
    """`policy.act(obs, *args)` for a batch whose row j comes from env `slots[j]` (None: env j).

    A stateful policy (one with `reset`, or wrapping one) keeps state per env, so it is told the slots
    (`act(obs, *args, slots=slots)`); a stateless one (a batched callable, SB3, a remote server) keeps the plain
    call.
    """
    if slots is not None and _stateful(policy) is not None:
        return policy.act(obs, *args, slots=slots)
    return policy.act(obs, *args)


def query_teacher(
    teacher: Teacher, obs: dict[str, np.ndarray], action_dim: int, slots: list[int] | None = None
) -> TeacherOutput:
    """One batched teacher call on the teacher's view of `obs` (row j from env `slots[j]`; None: env j); any failure
    or bad label becomes a TeacherError."""
    n = len(next(iter(obs.values())))
    return _checked(lambda: act_in_slots(teacher, {k: obs[k] for k in teacher.obs_keys}, slots), n, action_dim)


def request_teacher(
    teacher: Teacher, obs: dict[str, np.ndarray], action_dim: int, slots: list[int] | None = None
) -> Callable[[], TeacherOutput]:
    """Start `query_teacher` and return what finishes it. A teacher in another process (one with `submit(obs,
    slots)` and `result(ticket)`, e.g. the Ray teacher actor's client) labels while the caller works on, e.g. runs
    the student; any other teacher is called at once."""
    if not hasattr(teacher, "submit"):
        out = query_teacher(teacher, obs, action_dim, slots)
        return lambda: out
    n = len(next(iter(obs.values())))
    ticket = _checked(lambda: teacher.submit({k: obs[k] for k in teacher.obs_keys}, slots), n, None)
    return lambda: _checked(lambda: teacher.result(ticket), n, action_dim)


def _checked(call: Callable[[], Any], n: int, action_dim: int | None) -> Any:
    """`call()`, any failure inside a user's teacher as one clear TeacherError; its labels checked (action_dim)."""
    try:
        out = call()
    except TeacherError:  # already says what failed
        raise
    except Exception as exc:
        raise TeacherError(f"teacher raised {type(exc).__name__}: {exc}") from exc
    if action_dim is not None:
        check_labels(out, n, action_dim)
    return out


def check_labels(out: TeacherOutput, n: int, action_dim: int) -> None:
    """Raise TeacherError unless the teacher returned finite actions of shape (n, action_dim)."""
    a = out.action
    if a.shape != (n, action_dim):
        unbatched = a.shape in ((action_dim,), ()) and n > 1  # one action for a batch: a per-observation function
        hint = " (a function of one observation at a time needs teacher.batched=false)" if unbatched else ""
        raise TeacherError(
            f"teacher returned actions of shape {a.shape}, but the task's action space needs ({n}, {action_dim}): "
            f"teacher and student action spaces do not match{hint}"
        )
    if not np.all(np.isfinite(a)):
        raise TeacherError("teacher returned NaN or inf actions")
