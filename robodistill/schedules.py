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
