"""Mixing schedules: the probability beta that the teacher acts, as a function of DAgger round or progress; the
weight of RPD's loss toward the teacher; the student's horizon in a curriculum (how many steps it drives)."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "exponential")


@dataclass(frozen=True)
class BetaSchedule:
    """beta(i) for round i: constant `start`; linear from `start` to `end` over `horizon` rounds; exponential start*decay^i."""

    kind: str = "linear"
    start: float = 1.0
    end: float = 0.0
    horizon: int = 5
    decay: float = 0.5

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown beta schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"beta {name}={v} must be in [0, 1]")

    def __call__(self, i: float) -> float:
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            frac = min(max(i / max(self.horizon, 1), 0.0), 1.0)
            return self.start + frac * (self.end - self.start)
        return max(self.end, self.start * math.pow(self.decay, i))


DISTILL_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DistillWeight:
    """lambda(t) for env step t: constant `value`; or cosine from `value` down to `floor` over `anneal_steps`, then
    `floor` for good (floor 0: the teacher is no longer called once annealed)."""

    kind: str = "constant"
    value: float = 1.0
    anneal_steps: int = 100_000
    floor: float = 0.0

    def __post_init__(self):
        if self.kind not in DISTILL_SCHEDULES:
            raise ValueError(f"unknown lambda schedule {self.kind!r}; choose one of {', '.join(DISTILL_SCHEDULES)}")
        if self.value < 0:
            raise ValueError(f"lambda value={self.value} must be >= 0")
        if self.kind == "cosine" and self.anneal_steps <= 0:
            raise ValueError(f"cosine lambda needs anneal_steps > 0, got {self.anneal_steps}")
        if not 0 <= self.floor <= self.value:
            raise ValueError(f"lambda floor={self.floor} must be in [0, value={self.value}]")

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            return self.value
        if t >= self.anneal_steps:
            return self.floor
        cos = 0.5 * (1.0 + math.cos(math.pi * max(t, 0.0) / self.anneal_steps))
        return self.floor + (self.value - self.floor) * cos


HORIZON_SCHEDULES = ("off", "constant", "linear", "exponential")


@dataclass(frozen=True)
class StudentHorizon:
    """H(r) for round r of `rounds` (a horizon curriculum, TCOD): the student drives the first H steps of each
    episode and the teacher the rest. `off`: no limit (None); `constant`: `start`; `linear` / `exponential`: from
    `start` at the first round to `end` at the last, in equal steps or by a constant factor. `end` None: the
    episode limit `limit`."""

    kind: str = "off"
    start: int = 10
    end: int | None = None

    def __post_init__(self):
        if self.kind not in HORIZON_SCHEDULES:
            raise ValueError(f"kind must be one of {', '.join(HORIZON_SCHEDULES)}, got {self.kind!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a whole number of steps >= 1, got {v!r}")

    def __call__(self, r: int, rounds: int, limit: int | None) -> int | None:
        if self.kind == "off":
            return None
        end = self.end if self.end is not None else limit
        if end is None:
            raise ValueError("end is null and the task has no episode limit: set collector.student_horizon.end")
        if self.kind == "constant":
            return self.start
        frac = min(max(r / max(rounds - 1, 1), 0.0), 1.0)
        if self.kind == "linear":
            return round(self.start + frac * (end - self.start))
        return round(self.start * math.pow(end / self.start, frac))
