"""Evaluate a policy over N seeded episodes (episode i uses seed + i, so every policy sees the same starts).

"Seeded" holds as far as the env honours `reset(seed=...)`. Evaluation checks it once per call: two resets with the
same seed must give the same first observation. An env that ignores the seed gets one warning line and
`seed_reproducible: false` in the result; its `np_random` and action space are then reseeded with each episode's
seed, which makes episodes repeatable only where the env draws from those.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policies import chunked
from policies.samplers import ChunkRunner, driving, make_sampler
from robodistill.errors import UserError
from robodistill.evaluation.video import overlay, write_video
from robodistill.observations import as_dict, view
from robodistill.progress import progress_bar
from robodistill.tasks import SUCCESS, make_env

PolicyFn = Callable[[dict[str, np.ndarray]], np.ndarray]  # batched obs dict -> actions (B, A)


def student_policy(student: Any, sampler: Mapping[str, Any] | None = None) -> PolicyFn:
    """A student's deterministic action on the observations it reads, as an evaluation policy.

    A diffusion-family student runs its chunks through `sampler` (the `sampler` config group) in a ChunkRunner,
    which keeps per-episode state; any other student takes no sampler (None or conf/sampler/auto), and is stateless
    unless it reads stacked frames (a HistoryRunner keeps them).
    """
    kind = sampler["kind"] if sampler else "auto"
    if chunked(student):
        try:
            return ChunkRunner(student, make_sampler(student, sampler or {}))
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    if kind != "auto":
        name = getattr(student, "kind", type(student).__name__)
        raise UserError(
            f"sampler={kind} needs a diffusion-family policy (algo=diffusion or consistency), but this student is {name!r}"
        )
    runner = driving(student)  # stacked frames: a HistoryRunner keeps each episode's history
    if runner is not student:
        return runner

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        return student.act(view(obs, student.obs_keys), deterministic=True)[0]

    return policy


def teacher_policy(teacher: Any) -> PolicyFn:
    """A teacher's action on the observations it reads, as an evaluation policy."""

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        return teacher.act(view(obs, teacher.obs_keys)).action

    return policy


def reset_reproduces(env: gym.Env, seed: int) -> bool:
    """Whether `env.reset(seed=seed)` twice gives the same first observation."""
    first, _ = env.reset(seed=seed)
    again, _ = env.reset(seed=seed)
    a, b = as_dict(first), as_dict(again)
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def can_film(task: Mapping[str, Any], obs_mode: str, seed: int) -> bool:
    """Whether the task's env renders RGB frames; if not, one warning line says why, and evaluation goes on unfilmed."""
    name = task.get("env_id")
    try:
        env = make_env(task, obs_mode, render_mode="rgb_array")
        try:
            env.reset(seed=seed)
            frame = env.render()
        finally:
            env.close()
    except Exception as exc:  # the env's own renderer failing (a missing package, no render_mode): film nothing
        why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError) else str(exc)
        print(f"warning: cannot film {name} ({why}); evaluating without videos", file=sys.stderr)
        return False
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
        print(f"warning: {name} renders no RGB frames; evaluating without videos", file=sys.stderr)
        return False
    return True


def seeded_reset(env: gym.Env, seed: int, reproducible: bool) -> Any:
    """`env.reset(seed=seed)`; for an env that ignores the seed, also reseed what can be reseeded from outside."""
    if not reproducible:
        env.unwrapped.np_random = np.random.default_rng(seed)
        env.action_space.seed(seed)
    return env.reset(seed=seed)[0]


def headline(result: Mapping[str, Any]) -> dict[str, float]:
    """What an evaluation is summarised and compared by: its success rate, or, for a task that reports no success,
    its mean return."""
    key = "success_rate" if result["success_rate"] is not None else "return_mean"
    return {key: result[key]}


def score(result: Mapping[str, Any]) -> float:
    """The one number best checkpoints are chosen by (see `headline`)."""
    return next(iter(headline(result).values()))


def evaluate(
    policy: PolicyFn,
    task: Mapping[str, Any],
    obs_mode: str,
    episodes: int,
    seed: int,
    num_envs: int = 10,
    video_dir: str | Path | None = None,
    num_videos: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Success rate, returns and lengths over `episodes` episodes; films the first `num_videos` of them. A task that
    reports no success gets `success_rate: None` (its episodes' `success` too) and is judged by its return.

    A policy with per-episode state (a `reset(slot)` method, e.g. a ChunkRunner) is reset when env slot `slot`
    starts an episode and called as `policy(obs, slots)` with the slots the batch comes from.
    """
    stateful = hasattr(policy, "reset")
    num_envs = max(1, min(num_envs, episodes))
    filming = num_videos > 0 and video_dir is not None and can_film(task, obs_mode, seed)
    env_list = [make_env(task, obs_mode, render_mode="rgb_array" if filming else None) for _ in range(num_envs)]
    results: list[dict[str, Any]] = [None] * episodes  # type: ignore[list-item]
    next_episode = 0
    slots: list[dict[str, Any] | None] = [None] * num_envs
    obs_slots: list[dict[str, np.ndarray] | None] = [None] * num_envs
    videos: list[str] = []
    reproducible = reset_reproduces(env_list[0], seed)
    if not reproducible:
        print(
            f"warning: {task.get('env_id')} ignores reset(seed=...): evaluation reseeds its np_random and action "
            "space per episode, but its episodes may differ between policies and runs",
            file=sys.stderr,
        )
    bar = progress_bar(total=episodes, enabled=progress, desc="evaluate", leave=False)

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            slots[slot] = obs_slots[slot] = None
            return
        ep = next_episode
        next_episode += 1
        obs_slots[slot] = as_dict(seeded_reset(env_list[slot], seed + ep, reproducible))
        slots[slot] = {"episode": ep, "return": 0.0, "length": 0, "success": None, "frames": []}
        if filming and ep < num_videos:
            slots[slot]["frames"].append(overlay(env_list[slot].render(), 0, 0.0, False))
        if stateful:
            policy.reset(slot)

    for s in range(num_envs):
        start(s)
    try:
        while any(s is not None for s in slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            batch = {k: np.stack([obs_slots[i][k] for i in active]) for k in obs_slots[active[0]]}
            actions = np.asarray(policy(batch, active) if stateful else policy(batch))
            for j, i in enumerate(active):
                rec = slots[i]
                obs, reward, term, trunc, info = env_list[i].step(actions[j])
                obs_slots[i] = as_dict(obs)
                rec["return"] += float(reward)
                rec["length"] += 1
                rec["success"] = info.get(SUCCESS)  # any step so far (tasks.EpisodeSuccess); None: not reported
                if rec["frames"]:
                    frame = overlay(env_list[i].render(), rec["length"], float(reward), bool(rec["success"]))
                    rec["frames"].append(frame)
                if term or trunc:
                    if rec["frames"]:
                        path = write_video(Path(video_dir) / f"episode_{rec['episode']:03d}.mp4", rec["frames"])
                        videos.append(str(path))
                    results[rec["episode"]] = {k: rec[k] for k in ("episode", "return", "length", "success")}
                    bar.update(1)
                    start(i)
    finally:
        bar.close()
        for e in env_list:
            e.close()
    reported = [r["success"] for r in results if r["success"] is not None]
    extra = {"nfe_per_step": policy.nfe_per_step} if hasattr(policy, "nfe_per_step") else {}
    return {
        **extra,
        "success_rate": float(np.mean(reported)) if reported else None,
        "return_mean": float(np.mean([r["return"] for r in results])),
        "length_mean": float(np.mean([r["length"] for r in results])),
        "episodes": episodes,
        "seed": seed,
        "seed_reproducible": reproducible,
        "videos": videos,
        "per_episode": results,
    }
