"""Foundation figures: collector overhead vs raw stepping, expert success, DAgger vs BC, render speed."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from policies import GaussianPolicy
from robodistill.benchmarks.runs import train_once
from robodistill.config import option_defaults
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import BackgroundEpisodeWriter
from robodistill.tasks import env_fns, env_meta, shape_meta
from robodistill.teachers import CallableTeacher

WIDTH = int(option_defaults("collector", "default")["num_envs"])  # the collector's default width


def collector_over_raw(task: str, num_envs: int, steps: int, repeats: int) -> dict[str, Any]:
    """Env steps/s of the same envs: the collector (student acting, teacher labelling every step, HDF5 writer) vs raw
    stepping that replays the very env calls the collector made (its resets and executed actions, in order; no
    policy, no teacher, no recording).

    Replaying keeps the physics identical (same seeds, same contacts), so the ratio is the collector's own cost.
    """
    spec = {"env_id": task}
    venv = make_vector_env(env_fns(spec, num_envs))
    env = gym.make(task)
    student = GaussianPolicy(shape_meta(env), ["state"])
    student.eval()
    teacher = CallableTeacher(envs.make_expert(env), ["state"])
    calls: list[tuple[int, str, Any]] = []  # (env, "reset" or "step", seed or action), as the collector made them
    methods = [(e.reset, e.step) for e in venv.envs]

    def recording(i: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
        reset, step = methods[i]

        def recording_reset(seed: int | None = None) -> Any:
            calls.append((i, "reset", seed))
            return reset(seed=seed)

        def recording_step(action: np.ndarray) -> Any:
            calls.append((i, "step", np.array(action)))
            return step(action)

        return recording_reset, recording_step

    raw, coll, random = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):  # interleaved so machine noise hits both alike
            calls.clear()
            for i, e in enumerate(venv.envs):
                e.reset, e.step = recording(i)
            with BackgroundEpisodeWriter(Path(tmp) / f"c{rep}.hdf5", env_meta(env, spec, "state")) as w:
                c = Collector(venv, teacher, student, w, seed=rep)
                stats = c.collect(None, beta=0.5, seed=rep, min_steps=steps, progress=False)
            coll.append(stats.env_steps / stats.wall_s)
            for e, (reset, step) in zip(venv.envs, methods, strict=True):
                e.reset, e.step = reset, step
            t0 = time.perf_counter()
            for i, kind, arg in calls:
                if kind == "reset":
                    venv.envs[i].reset(seed=arg)
                else:
                    venv.envs[i].step(arg)
            raw.append(stats.env_steps / (time.perf_counter() - t0))
            # for reference: random actions rarely touch the cube, so their physics is cheaper than a policy's
            venv.reset(seed=rep)
            rng = np.random.default_rng(rep)
            t0 = time.perf_counter()
            for _ in range(stats.env_steps // num_envs):
                venv.step(rng.uniform(-1, 1, (num_envs, venv.single_action_space.shape[0])).astype(np.float32))
            random.append(stats.env_steps // num_envs * num_envs / (time.perf_counter() - t0))
    venv.close()
    r, c = statistics.median(raw), statistics.median(coll)
    return {
        "raw_steps_per_s": raw,
        "collector_steps_per_s": coll,
        "random_action_steps_per_s": random,
        "ratio": c / r,
        "ratio_vs_random_actions": c / statistics.median(random),
    }


def expert_success(task: str, episodes: int, control_mode: str = "pd_ee_delta_pos") -> float:
    """Success rate of the task's scripted expert over seeds 0 .. episodes-1."""
    env = gym.make(task, control_mode=control_mode)
    expert = envs.make_expert(env)
    wins = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        while True:
            obs, _, term, trunc, info = env.step(expert(obs))
            if term or trunc:
                break
        wins += bool(info["success"])
    return wins / episodes


def render_fps(size: int, frames: int) -> float:
    env = gym.make("robodistill/PickCube-v0", obs_mode="rgb", image_size=size, cameras=["front"]).unwrapped
    env.reset(seed=0)
    env._render_camera("front")  # first frame builds the GL context
    t0 = time.perf_counter()
    for _ in range(frames):
        env._render_camera("front")
    return frames / (time.perf_counter() - t0)


def dagger_vs_bc(task_cfg: str, seeds: list[int], episodes: int, dagger_extra: list[str], out: Path) -> dict[str, Any]:
    """DAgger, then BC given as many teacher labels as DAgger used, per seed."""
    runs: dict[str, list[dict[str, Any]]] = {"dagger": [], "bc": []}
    for seed in seeds:
        common = [f"task={task_cfg}", f"seed={seed}", f"eval.episodes={episodes}", "eval.videos=0"]
        d = train_once(["algo=dagger", *common, *dagger_extra], out / f"{task_cfg}_dagger_s{seed}")
        # BC gets DAgger's teacher labels (teacher-driven instead of student-driven) and its gradient steps
        same = [f"algo.labels={d['teacher_labels']}", f"algo.updates={d['updates']}"]
        b = train_once(["algo=bc", *same, *common], out / f"{task_cfg}_bc_s{seed}")
        runs["dagger"].append(d)
        runs["bc"].append(b)
    summary = {}
    for algo, rs in runs.items():
        s = [r["success_rate"] for r in rs]
        summary[algo] = {
            "success_mean": float(np.mean(s)),
            "success_std": float(np.std(s)),
            "wall_s": float(np.mean([r["wall_s"] for r in rs])),
            "cpu_s": float(np.mean([r["cpu_s"] for r in rs])),
            "teacher_labels": int(np.mean([r["teacher_labels"] for r in rs])),
            "runs": rs,
        }
    return summary


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """All foundation figures; returns (JSON payload, table lines)."""
    torch.set_num_threads(1)
    # the default width (16): one student and one teacher call per step are shared by twice as many env steps as 8
    ratio = collector_over_raw("robodistill/PushCube-v0", WIDTH, 800 if quick else 8000, 2 if quick else 5)
    ratio_8 = collector_over_raw("robodistill/PushCube-v0", 8, 800 if quick else 8000, 2 if quick else 5)
    expert = {t: expert_success(t, 10 if quick else 100) for t in envs.TASKS}
    fps = render_fps(96, 50 if quick else 500)
    seeds = [0] if quick else [0, 1, 2]
    episodes = 10 if quick else 50
    extra = ["algo.rounds=2", "algo.episodes_per_round=8", "algo.updates_per_round=100"] if quick else []
    dagger, bc = {}, {}
    for task_cfg, task_id in (("pushcube", "robodistill/PushCube-v0"), ("pickcube", "robodistill/PickCube-v0")):
        res = dagger_vs_bc(task_cfg, seeds, episodes, extra, out_dir / "runs")
        dagger[task_id], bc[task_id] = res["dagger"], res["bc"]
    payload = {
        "collector_over_raw": ratio["ratio"],
        "collector_width": WIDTH,
        "collector_detail": ratio,
        "collector_over_raw_8_envs": ratio_8["ratio"],
        "collector_detail_8_envs": ratio_8,
        "expert_success": expert,
        "dagger": dagger,
        "bc": bc,
        "render_fps_96": fps,
        "seeds": seeds,
        "eval_episodes": episodes,
    }
    lines = [
        f"collector / raw env steps per s (PushCube, {WIDTH} envs, the default; raw replays the collector's actions): {ratio['ratio']:.3f}  "
        f"(raw {statistics.median(ratio['raw_steps_per_s']):.0f}, collector {statistics.median(ratio['collector_steps_per_s']):.0f}; "
        f"random-action stepping {statistics.median(ratio['random_action_steps_per_s']):.0f}, "
        f"collector / that {ratio['ratio_vs_random_actions']:.3f})",
        f"the same with 8 envs: {ratio_8['ratio']:.3f}",
        f"render fps at 96x96 (observation camera): {fps:.1f}",
        "",
        f"{'task':28s} expert success",
        *[f"{t:28s} {v:.2f}" for t, v in expert.items()],
        "",
        f"{'task':28s} {'algo':7s} {'success':>15s} {'labels':>8s} {'wall s':>8s} {'cpu s':>8s}",
    ]
    for task_id in dagger:
        for algo, res in (("dagger", dagger[task_id]), ("bc", bc[task_id])):
            lines.append(
                f"{task_id:28s} {algo:7s} {res['success_mean']:7.3f} ± {res['success_std']:.3f} "
                f"{res['teacher_labels']:8d} {res['wall_s']:8.1f} {res['cpu_s']:8.1f}"
            )
    return payload, lines
