"""The deployable control loop: safety filter, fixed rate, action chunks with latency compensation, the deadline
watchdog and the per-tick log. Real threads and real time, but no assertion on how fast anything ran: on a loaded
machine ticks run late and inferences miss their deadlines, so each test checks what the loop logged and runs until
what it needs has happened (timing figures belong to `scripts/bench.py deploy`)."""

import gc
import json
import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from robodistill.runtime.control import ControlLoop, SafetyFilter, claim_realtime
from robodistill.runtime.monitor import FailureMonitor, Monitoring

RATE = 100.0  # Hz
PERIOD = 1 / RATE
LOG_FIELDS = {
    "tick",
    "t_scheduled",
    "t_start",
    "t_sent",
    "late_ms",
    "obs_tick",
    "index",
    "latency_ms",
    "action",
    "interventions",
    "miss",
}


class TickRobot:
    """Observes {"tick": [n]}, n counting reads; records every action it is sent; done after `stop_after` reads, or
    once `until()` holds (a test runs as long as the machine needs to get there, capped at MAX_TICKS)."""

    def __init__(self, stop_after: int | None = None, until: Callable[[], bool] | None = None):
        self.reads, self.sent, self.stop_after, self.until, self.done = 0, [], stop_after, until, False

    def read_obs(self) -> dict:
        obs = {"tick": np.array([self.reads])}
        self.reads += 1
        self.done = self.stop_after is not None and self.reads >= self.stop_after
        return obs

    def send_action(self, action: np.ndarray) -> None:
        self.sent.append(np.array(action))
        self.done = self.done or (self.until is not None and self.until())


MAX_TICKS = 3000  # 30 s at 100 Hz: far more than any test needs on a loaded machine


class RampPolicy:
    """Action i of the chunk from observation tick j is [(j + i) * 0.01], after `delay_s`; `kind(call)` can break a
    call: "slow" sleeps `slow_s`, "nan" returns NaN, "raise" raises, "hang" waits for `release`."""

    def __init__(self, horizon: int = 1, delay_s: float = 0.0, kind=lambda call: None, slow_s: float = 0.0):
        self.horizon, self.delay_s, self.kind, self.slow_s = horizon, delay_s, kind, slow_s
        self.calls = self.resets = 0
        self.release = threading.Event()

    def reset(self) -> None:
        self.resets += 1

    def __call__(self, obs: dict) -> np.ndarray:
        call, self.calls = self.calls, self.calls + 1
        kind = self.kind(call)
        time.sleep(self.slow_s if kind == "slow" else self.delay_s)
        if kind == "raise":
            raise RuntimeError(f"boom on call {call}")
        if kind == "hang":
            self.release.wait(10)
        chunk = ((int(obs["tick"][0]) + np.arange(self.horizon)) * 0.01)[:, None]
        return np.full_like(chunk, np.nan) if kind == "nan" else chunk


def wide_filter(**kw) -> SafetyFilter:
    return SafetyFilter(np.array([-100.0]), np.array([100.0]), **kw)


def assert_held_repeat_previous(log: list[dict]) -> None:
    """A held tick (miss or non-finite action) sends the last safe action again."""
    for prev, e in zip(log, log[1:]):
        if e["miss"] or "nonfinite" in e["interventions"]:
            assert e["action"] == prev["action"]


# --- safety filter


def test_safety_filter_clips_and_rate_limits():
    f = SafetyFilter(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), max_delta=0.5)
    assert f.last.tolist() == [0.0, 0.0]
    action, done = f(np.array([0.2, -0.3]))
    assert action.tolist() == [0.2, -0.3] and done == []
    action, done = f(np.array([5.0, -0.3]))  # clipped to 1, then limited to 0.2 + 0.5
    assert action == pytest.approx([0.7, -0.3]) and done == ["clip", "rate"]
    action, done = f(np.array([0.9, 0.9]))  # in bounds, 1.2 away in the second dimension
    assert action == pytest.approx([0.9, 0.2]) and done == ["rate"]
    action, done = f(np.array([2.0, 0.3]))
    assert action == pytest.approx([1.0, 0.3]) and done == ["clip"]
    assert f.counts == {"nonfinite": 0, "hold": 0, "clip": 2, "rate": 2, "rest": 0}
    action, done = f.rest()  # back toward the initial action (zeros), within the rate limit
    assert action == pytest.approx([0.5, 0.0]) and done == ["rest", "rate"] and f.counts["rest"] == 1


def test_safety_filter_holds_on_nonfinite_and_none():
    f = SafetyFilter(-np.ones(2), np.ones(2), max_delta=np.array([1.0, 1.0]), initial=np.array([3.0, 0.5]))
    assert f.last.tolist() == [1.0, 0.5]  # initial is clipped into bounds
    f(np.array([0.4, 0.6]))
    for bad in ([np.nan, 0.0], [0.0, np.inf], [-np.inf, 0.0]):
        action, done = f(np.array(bad))
        assert action.tolist() == [0.4, 0.6] and done == ["nonfinite"]
    action, done = f(None)
    assert action.tolist() == [0.4, 0.6] and done == ["hold"]
    action, done = f.hold()
    assert action.tolist() == [0.4, 0.6] and done == ["hold"]
    action[:] = 9  # the returned action is a copy
    assert f.last.tolist() == [0.4, 0.6]
    assert f.counts == {"nonfinite": 3, "hold": 2, "clip": 0, "rate": 0, "rest": 0}


def test_safety_filter_validates_shapes():
    f = SafetyFilter(-np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"size 2.*size 3"):
        f(np.zeros(2))
    with pytest.raises(ValueError, match="size 3"):
        f(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="low and high"):
        SafetyFilter(-np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="low <= high"):
        SafetyFilter(np.ones(2), -np.ones(2))
    with pytest.raises(ValueError, match="max_delta"):
        SafetyFilter(-np.ones(3), np.ones(3), max_delta=np.ones(2))
    with pytest.raises(ValueError, match="max_delta"):
        SafetyFilter(-np.ones(3), np.ones(3), max_delta=0.0)
    with pytest.raises(ValueError, match="initial"):
        SafetyFilter(-np.ones(3), np.ones(3), initial=np.zeros(4))


# --- the loop


def test_loop_validates_its_settings():
    policy, robot, f = RampPolicy(), TickRobot(), wide_filter()
    for bad in (0, -10, math.nan):
        with pytest.raises(ValueError, match="rate_hz"):
            ControlLoop(policy, robot, bad, f)
    for bad in (0.0, -0.001, PERIOD, 2 * PERIOD):
        with pytest.raises(ValueError, match="deadline_s"):
            ControlLoop(policy, robot, RATE, f, deadline_s=bad)
    with pytest.raises(ValueError, match="robot"):
        ControlLoop(policy, object(), RATE, f)
    with pytest.raises(ValueError, match="ticks"):
        ControlLoop(policy, robot, RATE, f).run(ticks=-1)


def test_chunks_join_time_aligned_with_latency_compensation():
    """Inference takes 2.5 periods: each chunk's actions for ticks already gone are dropped, and every sent action is
    the one planned for its tick (no backward jump, no averaged seam)."""
    policy = RampPolicy(horizon=8, delay_s=2.5 * PERIOD)
    robot = TickRobot(until=lambda: policy.calls >= 5)  # 4 chunks back
    stats = ControlLoop(policy, robot, RATE, wide_filter()).run(ticks=MAX_TICKS)
    log = stats.log
    assert stats.ticks == len(log) == len(robot.sent) and policy.resets == 1
    assert [e["action"] for e in log] == [a.tolist() for a in robot.sent]
    used = [e for e in log if not e["miss"]]
    assert stats.inferences >= 4 and stats.errors == 0
    # the policy counts observations in reads, the loop in grid ticks: they differ only after an overrun
    reads_at = {e["tick"]: n for n, e in enumerate(log)}
    for e in used:
        assert e["obs_tick"] + e["index"] == e["tick"] and e["index"] >= 0
        assert e["action"] == [(reads_at[e["obs_tick"]] + e["index"]) * 0.01]
        assert e["latency_ms"] >= 2.5 * PERIOD * 1000 * 0.9  # a lower bound: load only adds to the delay
    if stats.overruns == 0:
        assert all(e["action"] == [e["tick"] * 0.01] for e in used)
        sent = np.array([e["action"][0] for e in log])
        assert (np.diff(sent) >= 0).all()
    # chunks take over one after another, never going back to an older one
    chunk_ticks = [e["obs_tick"] for e in used]
    assert chunk_ticks == sorted(chunk_ticks)
    # a chunk takes 2.5 periods: it arrives at a later tick than its observation's, and its actions for the ticks
    # already gone are dropped, at least one per chunk
    assert stats.dropped >= stats.inferences
    assert_held_repeat_previous(log)


class HistoryPolicy(RampPolicy):
    """Keeps the last 2 observed ticks (observe, on the loop thread); plans from that snapshot (plan, on the worker),
    its chunk computed from the newest tick, after `delay_s`."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.observed, self.planned = [], []

    def observe(self, obs: dict) -> list[int]:
        self.observed.append(int(obs["tick"][0]))
        return list(self.observed[-2:])  # a fresh list: later observations do not change it

    def plan(self, history: list[int]) -> np.ndarray:
        self.planned.append(history)
        return super().__call__({"tick": np.array([history[-1]])})


def test_a_history_policy_observes_every_tick_and_plans_from_a_snapshot():
    policy = HistoryPolicy(horizon=8, delay_s=0.025)
    robot = TickRobot(until=lambda: len(policy.planned) >= 3)
    stats = ControlLoop(policy, robot, 100.0, wide_filter()).run(ticks=MAX_TICKS)
    assert policy.observed == list(range(stats.ticks))  # every tick's observation, not only the planned ones
    assert len(policy.planned) >= 3 and all(h == [h[-1] - 1, h[-1]] for h in policy.planned[1:])
    used = [e for e in stats.log if not e["miss"]]
    if stats.overruns == 0:  # grid ticks are read counts: every action used is the one planned for its tick
        assert all(abs(e["action"][0] - e["tick"] * 0.01) < 1e-9 for e in used)


def test_watchdog_holds_on_slow_inference():
    policy = RampPolicy(kind=lambda call: "slow" if call % 5 == 4 else None, slow_s=3 * PERIOD)
    robot = TickRobot(until=lambda: policy.calls >= 10)  # two slow calls started
    stats = ControlLoop(policy, robot, RATE, wide_filter()).run(ticks=MAX_TICKS)
    n = stats.ticks
    assert stats.errors == 0
    # a one-action chunk that takes 3 periods cannot be there by the next tick's deadline: that tick holds
    assert stats.misses > 0 and stats.misses_per_10k == pytest.approx(stats.misses / n * 1e4)
    misses = [e for e in stats.log if e["miss"]]
    assert len(misses) == stats.misses == stats.interventions["hold"]
    assert all(e["obs_tick"] is None and e["index"] is None and e["interventions"] == ["hold"] for e in misses)
    assert_held_repeat_previous(stats.log)
    late = sorted(e["late_ms"] for e in stats.log)
    assert stats.late_ms_p50 == pytest.approx(float(np.percentile(late, 50)))  # the summary is the log's


def test_nonfinite_actions_are_held():
    policy, safety = RampPolicy(kind=lambda call: "nan" if call % 3 == 1 else None), wide_filter()
    robot = TickRobot(until=lambda: safety.counts["nonfinite"] > 0 and len(robot.sent) >= 30)
    stats = ControlLoop(policy, robot, RATE, safety).run(ticks=MAX_TICKS)
    assert stats.interventions["nonfinite"] > 0 and stats.errors == 0
    assert all(math.isfinite(a) for e in stats.log for a in e["action"])
    assert_held_repeat_previous(stats.log)


def test_policy_errors_are_counted_and_the_loop_goes_on():
    policy = RampPolicy(kind=lambda call: "raise" if call % 3 == 0 else None)
    robot = TickRobot(until=lambda: policy.calls >= 4 and any(a[0] != 0.0 for a in robot.sent))  # an action came
    stats = ControlLoop(policy, robot, RATE, wide_filter()).run(ticks=MAX_TICKS)
    assert stats.errors > 0 and "boom on call" in stats.last_error
    assert 1 <= sum(e["error"] is not None for e in stats.log) <= stats.errors
    assert any(not e["miss"] for e in stats.log)


def test_malformed_chunks_are_policy_errors():
    stats = ControlLoop(lambda obs: np.zeros(1), TickRobot(), RATE, wide_filter()).run(ticks=10)
    assert stats.ticks == stats.misses == 10 and 1 <= stats.errors <= 10  # a slow worker may report one late
    assert "shape (1,)" in stats.last_error and "(T, 1)" in stats.last_error


def test_hung_policy_does_not_stall_the_loop():
    n = 20
    policy = RampPolicy(kind=lambda call: "hang")
    try:
        stats = ControlLoop(policy, TickRobot(), RATE, wide_filter()).run(ticks=n)
    finally:
        policy.release.set()  # lets the abandoned worker thread end
    # the loop went on holding while the one inference hung (a loop that waited for it would have got its chunk
    # after the 10 s hang and started a second call)
    assert stats.ticks == n and stats.misses == n and policy.calls == 1


def test_jsonl_log_has_one_line_per_tick(tmp_path):
    path = tmp_path / "ticks.jsonl"
    stats = ControlLoop(RampPolicy(horizon=4), TickRobot(), RATE, wide_filter(), log_path=path).run(ticks=12)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 12 and lines == stats.log
    for k, line in enumerate(lines):
        assert LOG_FIELDS <= line.keys()
        assert line["tick"] >= k and line["t_scheduled"] == pytest.approx(line["tick"] * PERIOD)
        assert line["t_start"] <= line["t_sent"]
        assert line["late_ms"] == pytest.approx((line["t_start"] - line["t_scheduled"]) * 1000, abs=1e-6)
    summary = stats.summary()
    assert "log" not in summary and summary["ticks"] == 12 and "log=" not in repr(stats)


def test_robot_done_and_duration_stop_the_loop():
    robot = TickRobot(stop_after=7)
    assert ControlLoop(RampPolicy(), robot, RATE, wide_filter()).run(ticks=100).ticks == 7
    assert robot.reads == 7
    stats = ControlLoop(RampPolicy(), TickRobot(), RATE, wide_filter()).run(duration_s=0.1)
    assert 1 <= stats.ticks <= 10 and stats.ticks + stats.overruns <= 10  # 10 grid points in 0.1 s, late or not


# --- a busy computer


class GarbageRobot(TickRobot):
    """Makes reference cycles at every read, so that the garbage collector would run every few ticks; notes when
    each tick reads and sends (its window)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.windows: list[list[float]] = []

    def read_obs(self) -> dict:
        self.windows.append([time.perf_counter(), math.inf])
        for _ in range(300):
            a: list = []
            a.append(a)
        return super().read_obs()

    def send_action(self, action: np.ndarray) -> None:
        super().send_action(action)
        self.windows[-1][1] = time.perf_counter()


def test_no_garbage_collection_runs_inside_a_tick():
    starts: list[float] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            starts.append(time.perf_counter())

    robot = GarbageRobot(stop_after=300)
    gc.callbacks.append(record)
    try:
        t0 = time.perf_counter()
        ControlLoop(RampPolicy(horizon=4), robot, RATE, wide_filter()).run(ticks=300)
        t1 = time.perf_counter()
    finally:
        gc.callbacks.remove(record)
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the collector is back as it was
    during = [t for t in starts if t0 < t < t1]  # 90,000 cycles made: an enabled collector runs every few ticks
    assert not [t for t in during for a, b in robot.windows if a <= t <= b]  # here never inside a tick


def test_realtime_priority_is_granted_or_said_not_to_be():
    result: dict = {}

    def claim() -> None:  # on its own thread: SCHED_FIFO is per thread, the test's own stays as it is
        result["line"] = claim_realtime(priority=10, cpus=set(os.sched_getaffinity(0)))
        result["policy"] = os.sched_getscheduler(0)

    t = threading.Thread(target=claim)
    t.start()
    t.join()
    line = result["line"]
    assert line.startswith("control loop: ") and "CPU affinity" in line and "granted" in line
    granted = "real-time priority (SCHED_FIFO 10) granted" in line
    assert granted == (result["policy"] == os.SCHED_FIFO)
    assert granted or "not granted" in line


# --- the failure monitor in the loop


def rising_scores(from_tick: int) -> Callable[[dict], dict]:
    """Scores of an observation {"tick": [n]}: low before `from_tick`, far above any threshold from it on."""

    def score(obs: dict) -> dict:
        high = int(obs["tick"][0]) >= from_tick
        return {"rnd": 9.0 if high else 0.0, "entropy": 9.0 if high else 0.0}

    return score


def monitored_loop(on_alarm: str, path=None) -> tuple[ControlLoop, TickRobot]:
    rule = FailureMonitor({"rnd": 1.0, "entropy": 1.0}, window=2, method="fiper")
    robot = TickRobot()
    loop = ControlLoop(RampPolicy(horizon=4), robot, RATE, wide_filter(initial=np.array([-1.0])), log_path=path,
                       monitor=Monitoring(rising_scores(10), rule, on_alarm))  # fmt: skip
    return loop, robot


def test_the_monitor_scores_off_the_loop_and_logs_every_alarm(tmp_path):
    loop, _ = monitored_loop("log", tmp_path / "ticks.jsonl")
    stats = loop.run(ticks=40)
    lines = [json.loads(line) for line in (tmp_path / "ticks.jsonl").read_text().splitlines()]
    scored = [e for e in lines if e["scores"] is not None]
    assert stats.scored == len(scored) > 0 and stats.score_ms_p50 is not None
    for e in scored:  # a score arrives at or after the tick it is of
        assert e["scored_tick"] <= e["tick"]
    alarms = [e["tick"] for e in lines if e["alarm"]]
    assert stats.alarms == len(alarms) > 0 and stats.first_alarm_tick == alarms[0]
    high = [e for e in scored if e["scored_tick"] >= 10]
    assert alarms[0] >= high[0]["tick"]  # no alarm before a high score arrived; FIPER's window of 2 needs two
    assert all(not e["alarm"] for e in scored if e["scored_tick"] < 10)
    assert not stats.stopped_by_alarm and stats.misses == 0 and len(lines) == 40  # `log` only logs


def test_on_alarm_hold_rests_the_robot_and_stop_ends_the_run():
    loop, robot = monitored_loop("hold")
    stats = loop.run(ticks=60)
    first = stats.first_alarm_tick
    assert first is not None and stats.ticks == 60
    after = [e for e in stats.log if e["tick"] >= first]
    assert all("rest" in e["interventions"] and e["action"] == [-1.0] for e in after)  # the rest action
    assert all(not e["miss"] and e["index"] is None for e in after)
    assert all("rest" not in e["interventions"] for e in stats.log if e["tick"] < first)

    loop, robot = monitored_loop("stop")
    stats = loop.run(ticks=200)
    assert stats.stopped_by_alarm and stats.log[-1]["tick"] == stats.first_alarm_tick
    assert stats.log[-1]["alarm"] and stats.log[-1]["action"] == [-1.0]
    with pytest.raises(ValueError, match="on_alarm must be one of log, hold, stop"):
        Monitoring(rising_scores(0), FailureMonitor({"rnd": 1.0}, method="rnd"), "brake")


def test_a_failing_score_is_a_tick_error_and_the_loop_goes_on():
    def broken(obs: dict) -> dict:
        raise RuntimeError("scorer down")

    rule = FailureMonitor({"rnd": 1.0, "entropy": 1.0}, window=2)
    loop = ControlLoop(RampPolicy(horizon=4), TickRobot(), RATE, wide_filter(), monitor=Monitoring(broken, rule))
    stats = loop.run(ticks=30)
    assert stats.ticks == 30 and stats.errors > 0 and "monitor: RuntimeError: scorer down" in stats.last_error
    assert stats.alarms == 0 and stats.misses == 0
    half = Monitoring(lambda obs: {"rnd": 9.0}, rule)  # FIPER needs both signals: a scorer that gives one
    stats = ControlLoop(RampPolicy(horizon=4), TickRobot(), RATE, wide_filter(), monitor=half).run(ticks=20)
    assert stats.errors > 0 and "the scorer gave no entropy score" in stats.last_error and stats.alarms == 0
