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
from robodistill.evaluation.video import Filming, VideoWriter, camera_keys, choose_filmed, compose, overlay
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
    filming: Filming | None = None,
    progress: bool = True,
    wrap_env: Callable[[gym.Env], gym.Env] | None = None,
) -> dict[str, Any]:
    """Success rate, returns and lengths over `episodes` episodes. A task that reports no success gets
    `success_rate: None` (its episodes' `success` too) and is judged by its return.

    With `filming` and a `video_dir`, the episodes `choose_filmed` picks (failures first) are then run again from
    their seeds and filmed: `filmed` lists each video with the outcome of its own run and whether that matches the
    evaluated episode (a stochastic sampler, or an env that ignores its seed, can differ).

    A policy with per-episode state (a `reset(slot)` method, e.g. a ChunkRunner) is reset when env slot `slot`
    starts an episode and called as `policy(obs, slots)` with the slots the batch comes from. `wrap_env` wraps each
    env (e.g. `evaluation.faults.Perturbed`: injected faults).
    """
    num_envs = max(1, min(num_envs, episodes))
    wrap = wrap_env or (lambda env: env)
    env_list = [wrap(make_env(task, obs_mode)) for _ in range(num_envs)]
    reproducible = reset_reproduces(env_list[0], seed)
    if not reproducible:
        print(
            f"warning: {task.get('env_id')} ignores reset(seed=...): evaluation reseeds its np_random and action "
            "space per episode, but its episodes may differ between policies and runs",
            file=sys.stderr,
        )
    bar = progress_bar(total=episodes, enabled=progress, desc="evaluate", leave=False)
    try:
        results = run_episodes(policy, env_list, list(range(episodes)), seed, reproducible, on_done=bar.update)
    finally:
        bar.close()
        for e in env_list:
            e.close()
    filmed: list[dict[str, Any]] = []
    if filming is not None and filming.videos > 0 and video_dir is not None and can_film(task, obs_mode, seed):
        chosen = choose_filmed(results, filming)
        film_envs = [
            wrap(make_env(task, obs_mode, "rgb_array", filming.size)) for _ in range(min(num_envs, len(chosen)))
        ]
        try:
            again = run_episodes(policy, film_envs, chosen, seed, reproducible, film=(filming, Path(video_dir)))
        finally:
            for e in film_envs:
                e.close()
        for r in again:  # failures first, as chosen
            evaluated = results[r["episode"]]
            same = all(r[k] == evaluated[k] for k in ("success", "length")) and np.isclose(
                r["return"], evaluated["return"]
            )
            filmed.append({**r, "matches_evaluation": bool(same)})
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
        "videos": [f["video"] for f in filmed],
        "filmed": filmed,
        "per_episode": results,
    }


def run_episodes(
    policy: PolicyFn,
    env_list: list[gym.Env],
    episode_ids: list[int],
    seed: int,
    reproducible: bool,
    on_done: Callable[[int], Any] | None = None,
    film: tuple[Filming, Path] | None = None,
) -> list[dict[str, Any]]:
    """Run episodes `episode_ids` (episode i from seed + i) on the envs, as many at once as there are envs; each
    result {episode, return, length, success}, in the order of `episode_ids`. `film` (settings, directory) writes
    each as `episode_<i>.mp4` (result key `video`) from the envs' rgb_array renders with the student's cameras."""
    stateful = hasattr(policy, "reset")
    queue = list(episode_ids)
    done: dict[int, dict[str, Any]] = {}
    slots: list[dict[str, Any] | None] = [None] * len(env_list)
    obs_slots: list[dict[str, np.ndarray] | None] = [None] * len(env_list)

    def frame(slot: int, rec: dict[str, Any], reward: float, finished: bool) -> None:
        filming, _ = film
        scene = compose(env_list[slot].render(), obs_slots[slot], rec["cameras"], filming.size)
        rec["writer"].append(overlay(scene, rec["length"], reward, rec["success"], finished))

    def start(slot: int) -> None:
        if not queue:
            slots[slot] = obs_slots[slot] = None
            return
        ep = queue.pop(0)
        obs_slots[slot] = as_dict(seeded_reset(env_list[slot], seed + ep, reproducible))
        slots[slot] = {"episode": ep, "return": 0.0, "length": 0, "success": None}
        if film is not None:
            filming, directory = film
            slots[slot]["writer"] = VideoWriter(directory / f"episode_{ep:03d}.mp4", filming.fps)
            slots[slot]["cameras"] = camera_keys(obs_slots[slot])
            frame(slot, slots[slot], 0.0, False)
        if stateful:
            policy.reset(slot)

    for s in range(len(env_list)):
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
                if film is not None:
                    frame(i, rec, float(reward), term or trunc)
                if term or trunc:
                    result = {k: rec[k] for k in ("episode", "return", "length", "success")}
                    if hasattr(policy, "episode_report"):  # a monitored policy: when its alarm fired, its scores
                        result.update(policy.episode_report(i))
                    if film is not None:
                        result["video"] = str(rec.pop("writer").close())
                    done[rec["episode"]] = result
                    if on_done is not None:
                        on_done(1)
                    start(i)
    finally:
        for rec in slots:  # an error mid-episode: close its video file (the episode is not reported)
            if rec is not None and "writer" in rec:
                rec["writer"].close()
    return [done[ep] for ep in episode_ids]
