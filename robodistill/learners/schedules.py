"""Mixing schedules: the probability beta that the teacher acts, as a function of DAgger round or progress."""

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
    """lambda(t) for env step t: constant `value`; or cosine from `value` to 0 over `anneal_steps`, then 0 for good."""

    kind: str = "constant"
    value: float = 1.0
    anneal_steps: int = 100_000

    def __post_init__(self):
        if self.kind not in DISTILL_SCHEDULES:
            raise ValueError(f"unknown lambda schedule {self.kind!r}; choose one of {', '.join(DISTILL_SCHEDULES)}")
        if self.value < 0:
            raise ValueError(f"lambda value={self.value} must be >= 0")
        if self.kind == "cosine" and self.anneal_steps <= 0:
            raise ValueError(f"cosine lambda needs anneal_steps > 0, got {self.anneal_steps}")

    def __call__(self, t: float) -> float:
        if self.kind == "constant":
            return self.value
        if t >= self.anneal_steps:
            return 0.0
        return self.value * 0.5 * (1.0 + math.cos(math.pi * max(t, 0.0) / self.anneal_steps))
