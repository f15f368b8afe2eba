"""Deploy an exported policy end to end: the torch-free runtime drives a robot at a fixed rate.

`robot=sim` is the MuJoCo task as a stand-in robot (`SimRobot`): the control loop reads its observation and sends it
actions at the artifact's rate, and each action steps the simulation by one control step, so the task runs in real
time as a robot would, and its success says whether the deployed policy does what the run's evaluation measured.
`robot=callback` calls a user's `read_obs()` / `send_action(a)` functions for `duration_s`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from robodistill.config import load_callable, require_values, to_dict
from robodistill.errors import UserError
from robodistill.observations import as_dict, obs_mode_for
from robodistill.progress import progress_bar
from robodistill.runtime.artifact import Artifact, ArtifactPolicy, load_artifact
from robodistill.runtime.control import ControlLoop, LoopStats, SafetyFilter, claim_realtime, percentile
from robodistill.runtime.monitor import JOINT, ArtifactScorer, Monitoring, alarm_rates, monitor_rule
from robodistill.runtime.process_policy import ProcessPolicy
from robodistill.runtime.robots import CallbackRobot
from robodistill.tasks import SUCCESS, make_env, task_for_keys

ROBOTS = ("sim", "callback")
INFERENCE = ("thread", "process")  # where the policy's inference runs: a worker thread, or its own process


def runtime_policy(artifact: Artifact, inference: str = "thread", seed: int = 0) -> ArtifactPolicy | ProcessPolicy:
    """The artifact's policy with its inference on the loop's worker thread, or in a child process (no interpreter
    lock shared with the loop; close it when done)."""
    if inference == "thread":
        return ArtifactPolicy(artifact, seed=seed)
    if inference == "process":
        return ProcessPolicy(artifact.path, seed=seed)
    raise UserError(f"inference={inference!r}: choose one of {', '.join(INFERENCE)}")


def monitoring(
    artifact: Artifact, policy: ArtifactPolicy | ProcessPolicy, cfg: Mapping[str, Any] | None, seed: int = 0
) -> Monitoring | None:
    """The artifact's failure monitor for a control loop (conf/deploy.yaml `monitor`), with the alarm rule of `method`
    at `alpha`: scored on the loop's scoring thread, or, beside an inference process, in a process of its own that
    runs below it (a plan never waits behind a score); None when disabled, or with `enabled: auto` for an artifact
    that carries none. Close it (`close`) when done."""
    cfg = dict(cfg or {"enabled": "auto"})
    enabled = cfg.get("enabled", "auto")
    if enabled not in ("auto", True, False):
        raise UserError(f"monitor.enabled={enabled!r}: choose auto, true or false")
    if enabled is False or (enabled == "auto" and "monitor" not in artifact.contract):
        return None
    rule = monitor_rule(artifact, str(cfg.get("method") or JOINT), cfg.get("alpha"))  # refuses an artifact without
    on_alarm = str(cfg.get("on_alarm") or "log")
    if isinstance(policy, ProcessPolicy):
        scorer = ProcessPolicy(artifact.path, seed, below=20)
        return Monitoring(scorer.score, rule, on_alarm, close=scorer.close)
    return Monitoring(ArtifactScorer(artifact, seed), rule, on_alarm)


def close_all(policy: ArtifactPolicy | ProcessPolicy, watch: Monitoring | None) -> None:
    """Stop the processes a deployment started (an inference process, a scoring process)."""
    if watch is not None and watch.close is not None:
        watch.close()
    if isinstance(policy, ProcessPolicy):
        policy.close()


class SimRobot:
    """One env of `task` offering the observation keys `obs_keys` (the smallest obs mode that has them, rendering
    only the cameras they name)."""

    def __init__(self, task: Mapping[str, Any], obs_keys: list[str]):
        self.env = make_env(task_for_keys(task, obs_keys), obs_mode_for(obs_keys))
        self.action_dim = int(self.env.action_space.shape[0])
        self.obs: dict[str, np.ndarray] = {}
        self.done, self.steps, self.episode_return = True, 0, 0.0
        self.success: bool | None = None  # the episode's success (tasks.EpisodeSuccess); None: the task has none

    def start_episode(self, seed: int) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=seed)
        self.obs = as_dict(obs)
        self.done, self.success, self.steps, self.episode_return = False, None, 0, 0.0
        return self.obs

    def read_obs(self) -> dict[str, np.ndarray]:
        return self.obs

    def send_action(self, action: np.ndarray) -> None:
        if self.done:
            return  # the episode ended at the previous step; the loop stops after this tick
        obs, reward, term, trunc, info = self.env.step(np.asarray(action, dtype=np.float32))
        self.obs = as_dict(obs)
        self.steps += 1
        self.episode_return += float(reward)
        self.success = info.get(SUCCESS)
        self.done = bool(term or trunc)

    def close(self) -> None:
        self.env.close()


def safety_filter(artifact: Artifact, max_delta: float | None) -> SafetyFilter:
    """Bounds from the contract, an optional per-tick change limit; holds start from the zero action (no motion
    for delta control modes), clipped into bounds."""
    a = artifact.contract["action"]
    return SafetyFilter(np.asarray(a["low"]), np.asarray(a["high"]), max_delta)


def loop_summary(runs: list[LoopStats]) -> dict[str, Any]:
    """Tick-weighted figures over several loop runs: misses per 10k ticks and lateness / latency percentiles."""
    ticks = sum(s.ticks for s in runs)
    late = [t["late_ms"] for s in runs for t in s.log]
    latency = [t["latency_ms"] for s in runs for t in s.log if t["latency_ms"] is not None]
    counts: dict[str, int] = {}
    for s in runs:
        for k, v in s.interventions.items():
            counts[k] = counts.get(k, 0) + v
    misses = sum(s.misses for s in runs)
    return {
        "ticks": ticks,
        "misses": misses,
        "misses_per_10k": 1e4 * misses / max(ticks, 1),
        "errors": sum(s.errors for s in runs),
        "dropped": sum(s.dropped for s in runs),
        "interventions": counts,
        "late_ms_p50": percentile(late, 50),
        "late_ms_p99": percentile(late, 99),
        "latency_ms_p50": percentile(latency, 50),
        "latency_ms_p99": percentile(latency, 99),
        "scored": sum(s.scored for s in runs),  # failure-monitor scores (0 without a monitor)
        "score_ms_p99": max((s.score_ms_p99 for s in runs if s.score_ms_p99 is not None), default=None),
        "alarms": sum(s.alarms for s in runs),
        "stopped_by_alarm": sum(s.stopped_by_alarm for s in runs),
    }


def deploy_sim(
    artifact: Artifact,
    episodes: int,
    seed: int,
    rate_hz: float | None = None,
    deadline_s: float | None = None,
    max_delta: float | None = None,
    task: Mapping[str, Any] | None = None,
    log_dir: str | Path | None = None,
    progress: bool = True,
    inference: str = "thread",
    monitor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes (seeds seed, seed + 1, ...) of the artifact's task in real time; success and loop
    figures, and with the artifact's failure monitor (`monitoring`) its alarms against the outcomes. Each episode's
    ticks go to <log_dir>/episode_<i>.jsonl. None: the contract's task, rate, half a period as deadline, bounds
    only."""
    task = dict(task or artifact.contract["task"])
    robot = SimRobot(task, list(artifact.observations))
    policy = runtime_policy(artifact, inference, seed)
    rate = float(rate_hz or artifact.rate_hz)
    log_dir = Path(log_dir) if log_dir is not None else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    per_episode, runs, watch = [], [], None
    try:
        watch = monitoring(artifact, policy, monitor, seed)
        artifact.check_robot(robot.start_episode(seed), robot.action_dim)
        for i in progress_bar(range(episodes), enabled=progress, desc="deploy"):
            robot.start_episode(seed + i)
            log = log_dir / f"episode_{i:03d}.jsonl" if log_dir else None
            loop = ControlLoop(policy, robot, rate, safety_filter(artifact, max_delta), deadline_s, log, monitor=watch)
            stats = loop.run()  # until the episode ends (robot.done) or the monitor stops it
            runs.append(stats)
            per_episode.append(
                {
                    "episode": i,
                    "seed": seed + i,
                    "success": robot.success,
                    "steps": robot.steps,
                    "return": robot.episode_return,
                    **stats.summary(),
                }
            )
    finally:
        robot.close()
        close_all(policy, watch)
    reported = [e["success"] for e in per_episode if e["success"] is not None]  # none: the task reports no success
    alarms = {}
    if watch is not None:
        episodes_ = [{"success": e["success"], "length": e["ticks"]} for e in per_episode]
        alarms = {
            "monitor": {
                "method": watch.rule.method,
                "on_alarm": watch.on_alarm,
                "thresholds": dict(watch.rule.thresholds),
                **alarm_rates(episodes_, [e["first_alarm_tick"] for e in per_episode], rate),
            }
        }
    return {
        "artifact": str(artifact.path),
        "kind": artifact.kind,
        "task": task["env_id"],
        "rate_hz": rate,
        "episodes": episodes,
        "success_rate": float(np.mean(reported)) if reported else None,
        "return_mean": float(np.mean([e["return"] for e in per_episode])),
        **loop_summary(runs),
        **alarms,
        "per_episode": per_episode,
    }


def deploy_callback(
    artifact: Artifact,
    cfg: Mapping[str, Any],
    rate_hz: float | None = None,
    deadline_s: float | None = None,
    max_delta: float | None = None,
    log_dir: str | Path | None = None,
    inference: str = "thread",
    monitor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Drive the user's robot (conf/robot/callback.yaml: `read_obs`, `send_action`, optional `done`, each a
    'package.module:function') for `cfg.duration_s` seconds or until done."""
    fns = {k: load_callable(cfg[k], f"robot.{k}") for k in ("read_obs", "send_action", "done") if cfg[k]}
    robot = CallbackRobot(
        fns["read_obs"], fns["send_action"], int(cfg["action_dim"] or artifact.action_dim), fns.get("done")
    )
    artifact.check_robot(robot.read_obs(), robot.action_dim)
    rate = float(rate_hz or artifact.rate_hz)
    log = Path(log_dir) / "callback.jsonl" if log_dir is not None else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    policy, watch = runtime_policy(artifact, inference), None
    try:
        watch = monitoring(artifact, policy, monitor)
        loop = ControlLoop(policy, robot, rate, safety_filter(artifact, max_delta), deadline_s, log, monitor=watch)
        stats = loop.run(duration_s=float(cfg["duration_s"]))
    finally:
        close_all(policy, watch)
    return {"artifact": str(artifact.path), "kind": artifact.kind, "rate_hz": rate, **loop_summary([stats])}


def deploy(cfg: DictConfig) -> dict[str, Any]:
    """`scripts/deploy.py`'s job (conf/deploy.yaml): load and check the artifact, run it on `cfg.robot`, write
    deploy.json."""
    kind = cfg.robot.kind
    if kind not in ROBOTS:
        raise UserError(f"unknown robot {kind!r}; choose one of {', '.join(ROBOTS)}")
    require_values(cfg, f"scripts/deploy.py robot={kind}")
    cfg = to_dict(cfg)
    artifact = load_artifact(cfg["artifact"])
    log_dir = Path(cfg["log_dir"] or Path(cfg["artifact"]) / "deploy")
    common = {k: cfg[k] for k in ("rate_hz", "deadline_s", "max_delta", "inference", "monitor")}
    if cfg["realtime"]:  # the loop runs on this thread: ask for real-time priority (and CPU affinity) for it
        cpus = None if cfg["cpus"] is None else {int(c) for c in cfg["cpus"]}
        print(claim_realtime(cpus=cpus), file=sys.stderr)
    if kind == "sim":
        episodes, seed, progress = int(cfg["episodes"]), int(cfg["seed"]), bool(cfg["progress"])
        result = deploy_sim(
            artifact, episodes, seed, task=cfg["robot"]["task"], log_dir=log_dir, progress=progress, **common
        )
    else:
        result = deploy_callback(artifact, cfg["robot"], log_dir=log_dir, **common)
    (log_dir / "deploy.json").write_text(json.dumps(result, indent=2))
    return result
