"""Runtime failure prediction (FIPER-style), the part that runs beside a deployed policy: numpy only.

Two scores per control step, each calibrated on successful rollouts only: an out-of-distribution score of the
policy's observation embedding (random network distillation: a trained predictor against a fixed random target;
its error is the score) and the action-chunk spread (several chunks sampled for one observation; a wide spread
means the policy is unsure). Each is averaged over a short window of steps and compared with a split-conformal
threshold at level alpha; FIPER's alarm fires when both exceed, the single-signal baselines when theirs does.
FIPER's two thresholds come either from each signal at alpha (`fiper`: the AND then fires on far fewer than alpha of
the successes) or from calibrating the AND as one rule at alpha (`fiper_joint`, `joint_thresholds`).

Calibration treats rollouts, not windows, as exchangeable: a rollout's score is the largest window score it reached,
and the threshold is the ceil((n + 1)(1 - alpha))-th smallest of n rollouts' scores. A new successful rollout then
raises an alarm (anywhere in it) with probability at most alpha.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robodistill.runtime.artifact import Artifact, ddim_chunks

SIGNALS = ("rnd", "entropy")
JOINT = "fiper_joint"  # FIPER's AND at thresholds calibrated jointly (joint_thresholds)
# which signals must exceed their thresholds for each method's alarm
METHODS = {JOINT: SIGNALS, "fiper": SIGNALS, "rnd": ("rnd",), "entropy": ("entropy",)}
ON_ALARM = ("log", "hold", "stop")  # what a control loop does on an alarm: log it, hold the robot still, stop the run


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


def thresholds_at(scores: Mapping[str, Sequence[float]], alpha: float) -> dict[str, float]:
    """Each signal's conformal threshold at `alpha` from the calibration rollouts' scores."""
    return {s: conformal_threshold(v, alpha) for s, v in scores.items()}


def joint_thresholds(traces: Sequence[Mapping[str, Sequence[float]]], window: int, alpha: float) -> dict[str, float]:
    """FIPER's AND calibrated as one rule at level alpha (rather than each signal at alpha, which makes the AND fire
    on far fewer than alpha of the successes): each signal's window means over its scale (the median per-rollout
    score), a step's joint score the smaller of the two, a rollout's the largest joint score it reached; lam is the
    conformal threshold of those rollout scores, and the thresholds are lam * scale. The AND of window means above
    them fires exactly where the joint score exceeds lam, so a new successful rollout alarms with probability at
    most alpha. `traces`: per calibration rollout, each signal's per-step scores."""
    scale = {s: float(np.median([rollout_score(t[s], window) for t in traces])) for s in SIGNALS}
    if any(not v > 0 for v in scale.values()):  # a signal <= 0 throughout (e.g. a log std): shift it to be positive
        raise MonitorError(f"joint calibration needs positive scores; the calibration rollouts' scales are {scale}")
    joint = [float(np.max(np.minimum(*(window_means(t[s], window) / scale[s] for s in SIGNALS)))) for t in traces]
    lam = conformal_threshold(joint, alpha)
    return {s: lam * scale[s] for s in SIGNALS}


def alarm_rates(
    episodes: Sequence[Mapping[str, Any]], alarms: Sequence[int | None], control_hz: float = 20.0
) -> dict[str, Any]:
    """One method's figures from its first alarm step per episode (None: none): the share of successful episodes
    with an alarm (false alarms), of failed ones (detections) and the mean lead time in seconds from a detection
    to the failed episode's end (`length` steps)."""
    ok = [a for e, a in zip(episodes, alarms, strict=True) if e["success"]]
    failed = [(e, a) for e, a in zip(episodes, alarms, strict=True) if e["success"] is False]
    detected = [(e, a) for e, a in failed if a is not None]
    return {
        "false_alarm_rate": float(np.mean([a is not None for a in ok])) if ok else None,
        "detection_rate": len(detected) / len(failed) if failed else None,
        "lead_time_s": float(np.mean([(e["length"] - a) / control_hz for e, a in detected])) if detected else None,
        "successes": len(ok),
        "failures": len(failed),
    }


def alarm_summary(per_episode: Sequence[Mapping[str, Any]], control_hz: float = 20.0) -> dict[str, dict[str, Any]]:
    """`alarm_rates` of each method whose alarm steps the episodes report (`alarm_step`: {method: step or None})."""
    methods = sorted({m for e in per_episode for m in e.get("alarm_step", {})})
    return {m: alarm_rates(per_episode, [e["alarm_step"].get(m) for e in per_episode], control_hz) for m in methods}


# ---- the monitor an exported artifact carries ----------------------------------------------------------------------
def monitor_spec(artifact: Artifact) -> dict[str, Any]:
    """The contract's `monitor` section; MonitorError for an artifact exported without one."""
    spec = artifact.contract.get("monitor")
    if spec is None:
        raise MonitorError(
            f"{artifact.path} carries no failure monitor: calibrate the run (python scripts/calibrate.py run=<run>) "
            "and export it again"
        )
    return spec


def method_thresholds(monitor: Mapping[str, Any], method: str) -> dict[str, float]:
    """A calibrated monitor's (monitor.pt's, or a contract's `monitor`) thresholds for `method`: the joint ones for
    fiper_joint, each signal's own for the others."""
    if method not in METHODS:
        raise MonitorError(f"monitor method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != JOINT:
        return dict(monitor["thresholds"])
    if not monitor.get("joint_thresholds"):
        raise MonitorError(
            f"this monitor has no {JOINT} thresholds ({monitor.get('joint_note') or 'calibrated before there were'}):"
            " calibrate the run again (python scripts/calibrate.py run=<run>), or use method fiper, rnd or entropy"
        )
    return dict(monitor["joint_thresholds"])


def monitor_rule(artifact: Artifact, method: str = JOINT, alpha: float | None = None) -> FailureMonitor:
    """The alarm rule of an artifact's monitor: its window, and `method`'s thresholds at its calibrated alpha or,
    given another `alpha`, recomputed from the per-rollout calibration scores it carries (single-signal thresholds;
    fiper_joint's need the rollouts' per-step scores, which an artifact does not carry: calibrate at that alpha)."""
    spec = monitor_spec(artifact)
    if alpha is None or math.isclose(float(alpha), float(spec["alpha"])):
        return FailureMonitor(method_thresholds(spec, method), int(spec["window"]), method)
    if method == JOINT:
        raise MonitorError(
            f"monitor.alpha={alpha}: {JOINT}'s thresholds at another alpha than the calibrated {spec['alpha']} need "
            f"the calibration rollouts' per-step scores: calibrate the run with alpha={alpha} and export it again, or "
            "use method fiper, rnd or entropy"
        )
    return FailureMonitor(thresholds_at(spec["calibration_scores"], float(alpha)), int(spec["window"]), method)


def _embedding(artifact: Artifact, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The monitor's embedding graph: [embedding (B, D)] or, for a Gaussian student, [embedding, spread (B,)]."""
    session = artifact.sessions["monitor_embedding"]
    return session.run(None, {k: inputs[k] for k in artifact.contract["models"]["monitor_embedding"]["inputs"]})


class ArtifactScorer:
    """The failure monitor's scores of one observation history, from an artifact's own graphs (numpy + onnxruntime):
    `scorer(inputs) -> {"rnd": float, "entropy": float}` for `ArtifactPolicy.observe`'s graph inputs (batch 1).

    rnd: the RND graph's error on the student's embedding (a diffusion policy's encoder condition, else the
    monitor's embedding graph). entropy: `samples` chunks sampled for the observation with the artifact's own
    sampler (DDIM for diffusion, the one-step head for consistency; the noise from this scorer's rng, apart from the
    policy's), the mean standard deviation (n - 1) of their actions; a Gaussian student's predicted spread."""

    def __init__(self, artifact: Artifact, seed: int = 0):
        self.spec = monitor_spec(artifact)
        if artifact.kind not in SPREADS:
            raise MonitorError(f"a {artifact.kind} artifact cannot report its action spread (no sampler to draw from)")
        self.artifact, self.samples = artifact, int(self.spec["samples"])
        self.rng = np.random.default_rng([seed, 1])

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, float]:
        embedding, spread = SPREADS[self.artifact.kind](self, inputs)
        rnd = self.artifact.sessions["monitor_rnd"].run(["score"], {"embedding": embedding})[0]
        return {"rnd": float(rnd[0]), "entropy": float(spread)}

    def noise(self) -> np.ndarray:
        """(samples, T_p, A) standard normal."""
        chunk = self.artifact.contract["chunk"]
        shape = (self.samples, int(chunk["pred_horizon"]), self.artifact.action_dim)
        return self.rng.standard_normal(shape).astype(np.float32)


def _spread(chunks: np.ndarray) -> float:
    """The mean per-element standard deviation (n - 1, as torch's) of sampled chunks (K, T_a, A)."""
    return float(chunks.reshape(len(chunks), -1).std(0, ddof=1).mean())


def _diffusion_spread(scorer: ArtifactScorer, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    cond = scorer.artifact.sessions["encoder"].run(["cond"], inputs)[0]  # (1, C): also the embedding
    return cond, _spread(ddim_chunks(scorer.artifact, np.repeat(cond, scorer.samples, 0), scorer.noise()))


def _consistency_spread(scorer: ArtifactScorer, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    (embedding,) = _embedding(scorer.artifact, inputs)
    feeds = {k: np.repeat(v, scorer.samples, 0) for k, v in inputs.items()}
    chunks = scorer.artifact.sessions["policy"].run(["actions"], {**feeds, "noise": scorer.noise()})[0]
    return embedding, _spread(chunks)


def _gaussian_spread(scorer: ArtifactScorer, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    embedding, spread = _embedding(scorer.artifact, inputs)
    return embedding, float(spread[0])


# how each kind's spread is drawn (a token policy has none: its export carries no monitor)
SPREADS: dict[str, Callable[[ArtifactScorer, dict[str, np.ndarray]], tuple[np.ndarray, float]]] = {
    "diffusion": _diffusion_spread,
    "consistency": _consistency_spread,
    "gaussian": _gaussian_spread,
}


@dataclass
class Monitoring:
    """What a control loop needs to run a failure monitor: `score(inputs) -> {signal: value}` (called off the loop
    thread, on the policy's graph inputs of a tick), the alarm `rule`, what to do on an alarm, and what to call
    when done with the scorer (its process, if it has one)."""

    score: Callable[[dict[str, np.ndarray]], Mapping[str, float]]
    rule: FailureMonitor
    on_alarm: str = "log"
    close: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.on_alarm not in ON_ALARM:
            raise MonitorError(f"monitor.on_alarm must be one of {', '.join(ON_ALARM)}, got {self.on_alarm!r}")
