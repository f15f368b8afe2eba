"""Run an exported policy on a robot at a fixed control rate, safely. Standard library and numpy only.

    safety = SafetyFilter(low, high, max_delta=0.05)
    stats = ControlLoop(policy, robot, rate_hz=50, safety=safety, log_path="ticks.jsonl").run(duration_s=60)
    print(stats.summary())

`policy(obs) -> (T, A)` returns an action chunk: action i, computed from the observation read at tick j, is meant
for tick j + i. Inference runs on one background thread, so the loop keeps its rate whatever the policy does: each
chunk is used on the time grid it was planned for (actions for ticks already gone are dropped), a new one is asked
for early enough to cover the measured latency, and a tick with no action by its deadline holds the last safe one.
Every action passes through a SafetyFilter on its way to the robot.

A policy that reads an observation history (a diffusion policy's T_o frames) must see every tick's observation,
not only those it plans from: if it has `observe(obs) -> inputs`, the loop calls it at every tick (on the loop
thread) and plans with `policy.plan(inputs)` on the worker, from a snapshot that later ticks cannot change.

On a busy computer the loop keeps its deadline by: no garbage collection inside a tick (the collector is frozen and
disabled while the loop runs; the young generation is collected, and the tick log written, in the slack after a
tick), the robot's tick on real-time priority with CPU affinity where the OS grants them (`claim_realtime`, one
line saying what was granted), and, with `ProcessPolicy`, inference in its own process so that no interpreter lock
is shared with it.

With a failure monitor (`Monitoring`: the artifact's scorer and alarm rule), every tick's observation is scored off
the loop thread (the newest tick's when the previous score is still running); each score that arrives updates the
rule's windows at the tick it arrives, and an alarm does what `on_alarm` says: `log` (a warning and the tick log),
`hold` (from then on the robot gets the safety filter's rest action: no motion in delta control modes) or `stop`
(the rest action, then the run ends).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from robodistill.runtime.monitor import SIGNALS, MonitorError, Monitoring
from robodistill.runtime.robots import Robot

logger = logging.getLogger(__name__)

INTERVENTIONS = ("nonfinite", "hold", "clip", "rate", "rest")  # what SafetyFilter can do to an action
LATENCY_EMA = 0.2  # weight of each new inference latency in the running estimate


class ControlError(ValueError):
    """A control loop or safety filter was set up wrong, or given an action of the wrong size."""

    user_facing = True  # entry points print it as one line


class SafetyFilter:
    """Makes each action safe to send: finite, inside [low, high], and at most `max_delta` from the last one.

    A non-finite action (any NaN or inf) or no action (None) holds the last safe action instead. The action returned
    becomes the new last safe action; `initial` (default zeros, clipped into bounds) is the first one, and the rest
    action a failure-monitor alarm commands (`rest`: for a position-controlled robot, pass its holding pose).
    """

    def __init__(
        self,
        low: np.ndarray,
        high: np.ndarray,
        max_delta: float | np.ndarray | None = None,
        initial: np.ndarray | None = None,
    ):
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if low.ndim != 1 or low.size == 0 or low.shape != high.shape:
            raise ControlError(f"low and high must be 1-D and of one size, got shapes {low.shape} and {high.shape}")
        if np.isnan(low).any() or np.isnan(high).any() or (low > high).any():
            raise ControlError(f"need low <= high everywhere (no NaN), got low={low}, high={high}")
        self.low, self.high, self.size = low, high, low.size
        self.max_delta: np.ndarray | None = None
        if max_delta is not None:
            delta = np.asarray(max_delta, dtype=np.float64)
            if delta.shape not in ((), (self.size,)):
                raise ControlError(f"max_delta must be a number or of size {self.size}, got shape {delta.shape}")
            if np.isnan(delta).any() or (delta <= 0).any():
                raise ControlError(f"max_delta must be > 0, got {max_delta}")
            self.max_delta = np.broadcast_to(delta, (self.size,)).copy()
        start = np.zeros(self.size) if initial is None else self._check(initial, "initial")
        if not np.isfinite(start).all():
            raise ControlError(f"initial must be finite, got {start}")
        self._last = np.clip(start, low, high)
        self._rest = self._last.copy()
        self.counts: dict[str, int] = dict.fromkeys(INTERVENTIONS, 0)

    @property
    def last(self) -> np.ndarray:
        """The last safe action (a copy)."""
        return self._last.copy()

    def __call__(self, action: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
        """Return the action to send and the interventions applied to it (empty when it passed unchanged)."""
        if action is None:
            return self.hold()
        wanted = self._check(action, "action")
        if not np.isfinite(wanted).all():
            return self._emit(self._last.copy(), ["nonfinite"])
        done = []
        safe = np.clip(wanted, self.low, self.high)
        if (safe != wanted).any():
            done.append("clip")
        if self.max_delta is not None:
            limited = np.clip(safe, self._last - self.max_delta, self._last + self.max_delta)
            if (limited != safe).any():
                done.append("rate")
            safe = limited
        return self._emit(safe, done)

    def hold(self) -> tuple[np.ndarray, list[str]]:
        """No action available: send the last safe action again."""
        return self._emit(self._last.copy(), ["hold"])

    def rest(self) -> tuple[np.ndarray, list[str]]:
        """Come to rest: the initial action, within the rate limit of the last one."""
        action, done = self(self._rest)
        self.counts["rest"] += 1
        return action, ["rest", *done]

    def _check(self, action: Any, what: str) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.size,):
            raise ControlError(f"{what} has shape {a.shape} (size {a.size}); the safety filter takes size {self.size}")
        return a

    def _emit(self, action: np.ndarray, done: list[str]) -> tuple[np.ndarray, list[str]]:
        self._last = action
        for name in done:
            self.counts[name] += 1
        return action.copy(), done


@dataclass
class LoopStats:
    """What a ControlLoop.run did; `log` holds one dict per tick (see ControlLoop) and stays out of the repr."""

    ticks: int
    rate_hz: float
    misses: int  # ticks with no policy action by their deadline: the last safe action was held
    errors: int  # inferences that raised or returned a malformed chunk
    overruns: int  # grid points skipped because the loop fell a whole period behind
    dropped: int  # chunk actions that arrived too late for their tick
    inferences: int  # chunks received
    interventions: dict[str, int]
    late_ms_p50: float | None
    late_ms_p99: float | None
    late_ms_max: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    misses_per_10k: float
    last_error: str | None = None
    scored: int = 0  # failure-monitor scores received (none without a monitor)
    score_ms_p50: float | None = None  # a score's latency, from its tick's start to its result
    score_ms_p99: float | None = None
    alarms: int = 0  # ticks at which the monitor's alarm fired
    first_alarm_tick: int | None = None
    stopped_by_alarm: bool = False
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """Every field but the per-tick log."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "log"}


def percentile(xs: list[float], q: float) -> float | None:
    """The q-th percentile of xs, None for no data."""
    return float(np.percentile(xs, q)) if xs else None


REALTIME_PRIORITY = 50  # SCHED_FIFO priority of the loop's thread (1-99; inference runs 10 below it)
# what claim_realtime got: the CPUs before it pinned the loop, the loop's CPUs, the loop's SCHED_FIFO priority
_PINNED: dict[str, Any] = {"all": None, "loop": None, "priority": None}
_INFERENCE_PIDS: dict[int, int] = {}  # inference processes and how far below the loop each runs


def claim_realtime(priority: int = REALTIME_PRIORITY, cpus: set[int] | None = None) -> str:
    """Ask the OS for real-time scheduling (SCHED_FIFO at `priority`) of the calling thread, the one that will run
    the loop, and pin it to `cpus` (default: leave the affinity as it is); inference then runs below it, on the
    other CPUs (`run_below_loop`). Returns one line saying what was granted and what was not (and why); nothing
    fails if neither is."""
    said = []
    if cpus is not None:
        try:
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, cpus)
            _PINNED.update(all=set(before), loop=set(cpus))
            said.append(f"CPU affinity {sorted(cpus)} granted")
        except (AttributeError, OSError, ValueError) as exc:
            said.append(f"CPU affinity {sorted(cpus)} not granted ({exc})")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        _PINNED["priority"] = int(priority)
        said.append(f"real-time priority (SCHED_FIFO {priority}) granted")
        for pid, below in list(_INFERENCE_PIDS.items()):  # processes started before: below the loop
            run_below_loop(pid=pid, below=below)
    except AttributeError:
        said.append("real-time priority not granted (this OS has no SCHED_FIFO)")
    except (OSError, ValueError) as exc:
        said.append(
            f"real-time priority (SCHED_FIFO {priority}) not granted ({exc}; needs CAP_SYS_NICE or an rtprio "
            "limit, e.g. a line '<user> - rtprio 99' in /etc/security/limits.conf)"
        )
    return "control loop: " + "; ".join(said)


def inference_cpus() -> set[int] | None:
    """The CPUs inference should run on: those the loop was not pinned to (None: the loop is not pinned, or it
    holds every CPU)."""
    if _PINNED["loop"] is None or _PINNED["all"] is None:
        return None
    return (_PINNED["all"] - _PINNED["loop"]) or None


def run_below_loop(cpus: set[int] | None = None, pid: int = 0, below: int = 10) -> None:
    """For the thread or process that runs inference (`pid`, 0: the calling thread; threads and children inherit
    the loop's scheduling): `below` under the loop's real-time priority where the loop has one (inference 10, the
    failure monitor's scoring 20: a plan never waits for a score), on `cpus` (default `inference_cpus()`)."""
    try:
        loop = os.sched_getparam(0).sched_priority if os.sched_getscheduler(0) == os.SCHED_FIFO else None
        if loop is None and _PINNED["priority"] is not None:  # called on another thread than the loop's
            loop = _PINNED["priority"]
        if loop is not None:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(max(1, loop - below)))
        cpus = inference_cpus() if cpus is None else cpus
        if cpus:
            os.sched_setaffinity(pid, cpus)
    except (AttributeError, OSError):
        pass


def register_inference_process(pid: int, below: int = 10) -> None:
    """A process that runs inference for a loop (`ProcessPolicy`'s child): a later `claim_realtime` puts it `below`
    the loop too (one started after the claim inherits the loop's scheduling and lowers itself)."""
    _INFERENCE_PIDS[int(pid)] = int(below)
    if _PINNED["priority"] is not None:
        run_below_loop(pid=pid, below=below)


class _Chunk(NamedTuple):
    actions: np.ndarray  # (T, A)
    tick: int  # tick of the observation it was computed from
    latency_s: float


class ControlLoop:
    """Runs `policy` on `robot` at `rate_hz`, with action chunks, latency compensation and a deadline watchdog.

    `policy(obs) -> (T, A)` (optionally with `reset()`, called at the start of each run) runs on one worker thread,
    at most one inference at a time. `robot` needs `read_obs() -> dict`, `send_action(action)` and optionally a
    boolean `done`. read_obs must return fresh arrays: the policy reads them while the loop goes on.

    Tick k is scheduled at t0 + k / rate_hz. It reads an observation, takes the action of the newest chunk meant for
    tick k, waits for the inference in flight at most until its deadline (`deadline_s` after the scheduled time,
    default half a period) when there is none, holds the last safe action if there is still none (a miss), and sends
    the result through `safety`. A new inference starts once the current chunk has at most ceil(latency / period)
    actions left. The loop never bursts to catch up: grid points it fell a whole period behind are skipped.

    Each tick's log dict: tick, t_scheduled, t_start, t_sent (s since t0), late_ms, obs_tick and index (the chunk
    and position the action came from, None when held), latency_ms (of that chunk), action, interventions, miss,
    error (a policy error noticed at that tick, or None); with a monitor also scores (those that arrived at this
    tick, or None), scored_tick (the tick they are of) and alarm. With `log_path`, each is also written as a JSON
    line, in the slack after ticks (flushed there) and at the end of the run, also when it raised.
    """

    def __init__(
        self,
        policy: Callable[[dict[str, np.ndarray]], np.ndarray],
        robot: Robot,
        rate_hz: float,
        safety: SafetyFilter,
        deadline_s: float | None = None,
        log_path: str | Path | None = None,
        spin_s: float = 0.0015,
        monitor: Monitoring | None = None,
    ):
        if not callable(policy):
            raise ControlError(f"policy must be callable as policy(obs) -> (T, A) actions, got {type(policy).__name__}")
        if not (callable(getattr(robot, "read_obs", None)) and callable(getattr(robot, "send_action", None))):
            raise ControlError(f"robot needs read_obs() and send_action(action), got {type(robot).__name__}")
        rate_hz = float(rate_hz)
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ControlError(f"rate_hz must be > 0, got {rate_hz}")
        period = 1.0 / rate_hz
        deadline_s = 0.5 * period if deadline_s is None else float(deadline_s)
        if not 0 < deadline_s < period:
            raise ControlError(
                f"deadline_s must be > 0 and < one period ({period:g} s at {rate_hz:g} Hz), got {deadline_s}"
            )
        if not spin_s >= 0:
            raise ControlError(f"spin_s must be >= 0, got {spin_s}")
        self.policy, self.robot, self.safety, self.monitor = policy, robot, safety, monitor
        observe = getattr(policy, "observe", None)
        if callable(observe) and not callable(getattr(policy, "plan", None)):
            raise ControlError(
                f"{type(policy).__name__} has observe() but no plan(inputs): a history policy needs both"
            )
        self._observe = observe if callable(observe) else None
        self.rate_hz, self.period, self.deadline_s, self.spin_s = rate_hz, period, deadline_s, float(spin_s)
        self.log_path = None if log_path is None else Path(log_path)
        self.log: list[dict[str, Any]] = []  # the latest run's ticks, also after it raised
        self._executor: ThreadPoolExecutor | None = None
        self._scoring: ThreadPoolExecutor | None = None
        self._sink: Any = None
        self._written = 0  # ticks of the latest run already in the log file
        self._reset_state()

    def run(self, ticks: int | None = None, duration_s: float | None = None) -> LoopStats:
        """Run until `ticks` ticks ran, `duration_s` passed or `robot.done` (whichever first); return the stats.

        The worker is shut down without waiting: a hung inference is abandoned (its thread ends when it returns).
        """
        if ticks is not None and (isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0):
            raise ControlError(f"ticks must be an int >= 0, got {ticks!r}")
        if duration_s is not None and not duration_s > 0:
            raise ControlError(f"duration_s must be > 0, got {duration_s}")
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()
        self._reset_state()
        self.log = []
        self._sink = None if self.log_path is None else self.log_path.open("w")
        self._written = 0
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="policy-infer", initializer=run_below_loop
        )
        if self.monitor is not None:
            self.monitor.rule.reset(0)
            self._scoring = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="monitor-score", initializer=run_below_loop
            )
        gc_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()  # what exists now is never scanned again; nothing is collected inside a tick
        gc.disable()
        try:
            self._loop(ticks, duration_s)
        finally:
            if gc_enabled:
                gc.enable()
            gc.unfreeze()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._future = None
            if self._scoring is not None:
                self._scoring.shutdown(wait=False, cancel_futures=True)
                self._scoring = self._score_future = None
            if self._sink is not None:
                self._write_log()  # every tick is in the log, also when the loop raised
                self._sink.close()
                self._sink = None
        return self._stats()

    # --- the loop

    def _reset_state(self) -> None:
        self._chunk: _Chunk | None = None
        self._future: Future | None = None
        self._future_tick = -1
        self._latency_est = 0.0
        self._latencies: list[float] = []
        self._errors = self._overruns = self._dropped = 0
        self._last_error: str | None = None
        self._tick_error: str | None = None
        self._score_future: Future | None = None
        self._score_tick = -1
        self._score_ms: list[float] = []
        self._alarm_tick: int | None = None
        self._resting = False  # after an alarm with on_alarm hold or stop: the rest action, no more plans
        self._stopped = False

    def _loop(self, ticks: int | None, duration_s: float | None) -> None:
        t0 = time.perf_counter()
        k = 0
        while ticks is None or len(self.log) < ticks:
            if duration_s is not None and k * self.period >= duration_s:
                break
            t_scheduled = t0 + k * self.period
            self._sleep_until(t_scheduled)
            self.log.append(self._tick(k, t_scheduled, t0))
            if self._stopped or getattr(self.robot, "done", False):
                break
            k += 1
            current = int((time.perf_counter() - t0) * self.rate_hz)  # grid points before it have fully passed
            if current > k:
                self._overruns += current - k
                k = current
            self._idle(t0 + k * self.period)

    def _idle(self, next_tick: float) -> None:
        """Housekeeping in the slack before the next tick, if at least half a period is left: write the pending
        tick log lines, then collect the garbage collector's young generation once it is due."""
        if next_tick - time.perf_counter() < 0.5 * self.period:
            return
        if self._sink is not None and self._written < len(self.log):
            self._write_log()
        if gc.get_count()[0] >= gc.get_threshold()[0] and next_tick - time.perf_counter() > 0.25 * self.period:
            gc.collect(0)

    def _write_log(self) -> None:
        """Write the ticks not yet in the log file, one JSON line each, and flush."""
        assert self._sink is not None
        for entry in self.log[self._written :]:
            self._sink.write(json.dumps(entry) + "\n")
        self._written = len(self.log)
        self._sink.flush()

    def _sleep_until(self, target: float) -> None:
        """time.sleep until `spin_s` before target, then busy-wait: sub-millisecond wake-up jitter."""
        coarse = target - self.spin_s - time.perf_counter()
        if coarse > 0:
            time.sleep(coarse)
        while time.perf_counter() < target:
            pass

    def _tick(self, k: int, t_scheduled: float, t0: float) -> dict[str, Any]:
        t_start = time.perf_counter()
        self._tick_error = None
        obs = self.robot.read_obs()
        if self._observe is not None:  # a history policy sees every observation; it plans from this snapshot
            obs = self._observe(obs)
        monitored = {} if self.monitor is None else self._monitor_tick(k, obs, t_start)
        resting = self._resting
        if not resting:
            self._collect(k)
            self._maybe_submit(k, obs)
            if self._action_index(k) is None and self._future is not None:
                self._collect(k, until=t_scheduled + self.deadline_s)  # the watchdog
        index, chunk = self._action_index(k), self._chunk
        held = index is None or chunk is None
        if resting:
            action, done = self.safety.rest()
            index = None
        elif held:
            action, done = self.safety.hold()
        else:
            action, done = self.safety(chunk.actions[index])
        self.robot.send_action(action)
        t_sent = time.perf_counter()
        since = t_start - t0
        return {
            "tick": k,
            "t_scheduled": k * self.period,
            "t_start": since,
            "t_sent": t_sent - t0,
            "late_ms": (since - k * self.period) * 1000,
            "obs_tick": None if held else chunk.tick,
            "index": index,
            "latency_ms": None if held else chunk.latency_s * 1000,
            "action": [float(x) for x in action],
            "interventions": done,
            "miss": held and not resting,
            "error": self._tick_error,
            **monitored,
        }

    # --- the failure monitor

    def _monitor_tick(self, k: int, inputs: dict[str, np.ndarray], t_start: float) -> dict[str, Any]:
        """Take the score that arrived (if any) into the alarm rule, start scoring this tick's observation when no
        score is running, and act on an alarm. The tick log's fields: the scores taken at this tick, the tick they
        are of, and whether the alarm fired."""
        assert self.monitor is not None and self._scoring is not None
        scores, scored_tick, alarm, future = None, None, False, self._score_future
        if future is not None and future.done():
            self._score_future = None
            try:
                values, ms = future.result()
                missing = [s for s in self.monitor.rule.signals() if s not in values]
                if missing:
                    raise MonitorError(f"the scorer gave no {', '.join(missing)} score, only {sorted(values)}")
            except Exception as exc:  # a failed score is an error of this tick; the loop goes on
                self._errors += 1
                self._tick_error = self._last_error = f"monitor: {type(exc).__name__}: {exc}"
            else:
                self._score_ms.append(ms)
                scores = {s: float(values[s]) for s in SIGNALS if s in values}
                scored_tick = self._score_tick
                alarm = self.monitor.rule.update(scores, 0)
        if alarm and self._alarm_tick is None:
            self._alarm_tick = k
            logger.warning(
                "failure monitor (%s): alarm at tick %d, on the observation of tick %d (%s); on_alarm=%s",
                self.monitor.rule.method, k, scored_tick, scores, self.monitor.on_alarm,
            )  # fmt: skip
            self._resting = self.monitor.on_alarm in ("hold", "stop")
            self._stopped = self.monitor.on_alarm == "stop"
        if self._score_future is None:
            self._score_future = self._scoring.submit(self._score, inputs, t_start)
            self._score_tick = k
        return {"scores": scores, "scored_tick": scored_tick, "alarm": alarm}

    def _score(self, inputs: dict[str, np.ndarray], t_start: float) -> tuple[dict[str, float], float]:
        """On the scoring thread: the monitor's scores of one tick's inputs and their latency (ms)."""
        assert self.monitor is not None
        values = dict(self.monitor.score(inputs))
        return values, (time.perf_counter() - t_start) * 1000

    # --- chunks and inference

    def _action_index(self, k: int) -> int | None:
        """Index of the current chunk's action for tick k, None if it has none."""
        chunk = self._chunk
        if chunk is None:
            return None
        i = k - chunk.tick
        return i if 0 <= i < len(chunk.actions) else None

    def _maybe_submit(self, k: int, obs: dict[str, np.ndarray]) -> None:
        """Start an inference on tick k's observation if none is in flight and the current chunk is running out."""
        if self._future is not None:
            return
        left = 0 if self._chunk is None else max(0, self._chunk.tick + len(self._chunk.actions) - k)
        if left > math.ceil(self._latency_est / self.period):
            return
        assert self._executor is not None
        self._future = self._executor.submit(self._infer, obs if self._observe else dict(obs), time.perf_counter())
        self._future_tick = k

    def _infer(self, obs: dict[str, np.ndarray], t_submit: float) -> tuple[np.ndarray, float]:
        """On the worker thread: the policy's checked chunk and its latency since submission."""
        out = self.policy.plan(obs) if self._observe is not None else self.policy(obs)
        latency = time.perf_counter() - t_submit
        try:
            chunk = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ControlError(f"policy returned {type(out).__name__}, not an array of numbers: {exc}") from exc
        if chunk.ndim != 2 or len(chunk) < 1 or chunk.shape[1] != self.safety.size:
            raise ControlError(
                f"policy returned an action chunk of shape {chunk.shape}, expected (T, {self.safety.size}) with T >= 1"
            )
        return chunk, latency

    def _collect(self, k: int, until: float | None = None) -> None:
        """Take the in-flight inference's result if it is done (waiting until `until` at most), at tick k."""
        future = self._future
        if future is None:
            return
        if not future.done():
            if until is None:
                return
            wait((future,), timeout=max(0.0, until - time.perf_counter()))
            if not future.done():
                return
        self._future = None
        try:
            actions, latency = future.result()
        except Exception as exc:
            self._errors += 1
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:
                logger.warning("policy failed on the observation of tick %d: %s", self._future_tick, text)
            self._tick_error = self._last_error = text
            return
        self._dropped += min(len(actions), max(0, k - self._future_tick))  # meant for ticks already gone
        if k - self._future_tick < len(actions) or self._action_index(k) is None:
            self._chunk = _Chunk(actions, self._future_tick, latency)  # else all stale: keep the current chunk
        self._latency_est = (
            latency if not self._latencies else (1 - LATENCY_EMA) * self._latency_est + LATENCY_EMA * latency
        )
        self._latencies.append(latency)

    def _stats(self) -> LoopStats:
        late = [e["late_ms"] for e in self.log]
        latency = [s * 1000 for s in self._latencies]
        n, misses = len(self.log), sum(e["miss"] for e in self.log)  # from the ticks: no second counter
        score_ms = self._score_ms
        return LoopStats(
            ticks=n,
            rate_hz=self.rate_hz,
            misses=misses,
            errors=self._errors,
            overruns=self._overruns,
            dropped=self._dropped,
            inferences=len(self._latencies),
            interventions={n: sum(n in e["interventions"] for e in self.log) for n in INTERVENTIONS},
            late_ms_p50=percentile(late, 50),
            late_ms_p99=percentile(late, 99),
            late_ms_max=max(late) if late else None,
            latency_ms_p50=percentile(latency, 50),
            latency_ms_p99=percentile(latency, 99),
            misses_per_10k=misses / n * 1e4 if n else 0.0,
            last_error=self._last_error,
            scored=len(score_ms),
            score_ms_p50=percentile(score_ms, 50),
            score_ms_p99=percentile(score_ms, 99),
            alarms=sum(bool(e.get("alarm")) for e in self.log),
            first_alarm_tick=self._alarm_tick,
            stopped_by_alarm=self._stopped,
            log=self.log,
        )
