"""Runtime failure prediction (FIPER-style), the part that runs beside a deployed policy: numpy only.

Two scores per control step, each calibrated on successful rollouts only: an out-of-distribution score of the
policy's observation embedding (random network distillation: a trained predictor against a fixed random target;
its error is the score) and the action-chunk spread (several chunks sampled for one observation; a wide spread
means the policy is unsure). Each is averaged over a short window of steps and compared with a split-conformal
threshold at level alpha; FIPER's alarm fires when both exceed, the single-signal baselines when theirs does.

Calibration treats rollouts, not windows, as exchangeable: a rollout's score is the largest window score it reached,
and the threshold is the ceil((n + 1)(1 - alpha))-th smallest of n rollouts' scores. A new successful rollout then
raises an alarm (anywhere in it) with probability at most alpha.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SIGNALS = ("rnd", "entropy")
METHODS = {"fiper": SIGNALS, "rnd": ("rnd",), "entropy": ("entropy",)}  # which signals must exceed for an alarm


class MonitorError(ValueError):
    """A monitor that cannot be calibrated or used as asked."""

    user_facing = True


def min_rollouts(alpha: float) -> int:
    """The fewest calibration rollouts for which the conformal threshold at level alpha exists: n with
    ceil((n + 1)(1 - alpha)) <= n."""
    if not 0 < alpha < 1:
        raise MonitorError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while math.ceil((n + 1) * (1 - alpha) - 1e-9) > n:
        n += 1
    return n


def conformal_threshold(scores: Sequence[float], alpha: float) -> float:
    """The split-conformal threshold of per-rollout scores at level alpha: the ceil((n + 1)(1 - alpha))-th smallest.
    Too few rollouts for alpha is one error naming the minimum."""
    n, need = len(scores), min_rollouts(alpha)
    if n < need:
        raise MonitorError(
            f"{n} successful calibration rollouts are too few for alpha={alpha}: it needs at least {need} (collect "
            "more episodes, or raise alpha)"
        )
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    return float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


def window_means(scores: Sequence[float], window: int) -> np.ndarray:
    """The mean of each step's last `window` scores (fewer at the start of a rollout)."""
    x = np.asarray(scores, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def rollout_score(scores: Sequence[float], window: int) -> float:
    """A rollout's calibration score: the largest window mean it reached."""
    return float(window_means(scores, window).max()) if len(scores) else -math.inf


@dataclass
class FailureMonitor:
    """Window means of each signal per env slot, and the alarm rule of `method` against `thresholds`."""

    thresholds: Mapping[str, float]
    window: int = 4
    method: str = "fiper"
    _windows: dict[int, dict[str, deque]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise MonitorError(f"monitor method must be one of {', '.join(METHODS)}, got {self.method!r}")
        missing = [s for s in METHODS[self.method] if s not in self.thresholds]
        if missing:
            raise MonitorError(f"monitor method {self.method} needs thresholds for {', '.join(missing)}")
        if self.window < 1:
            raise MonitorError(f"monitor window must be >= 1 step, got {self.window}")

    def reset(self, slot: int = 0) -> None:
        """A new episode in `slot`: its windows start empty."""
        self._windows[slot] = {s: deque(maxlen=self.window) for s in SIGNALS}

    def update(self, scores: Mapping[str, float], slot: int = 0) -> bool:
        """Add one step's scores of `slot`; whether the alarm fires at this step."""
        if slot not in self._windows:
            self.reset(slot)
        windows = self._windows[slot]
        for s, v in scores.items():
            windows[s].append(float(v))
        return all(windows[s] and sum(windows[s]) / len(windows[s]) > self.thresholds[s] for s in METHODS[self.method])

    def signals(self) -> tuple[str, ...]:
        """The signals this monitor's method reads."""
        return METHODS[self.method]
