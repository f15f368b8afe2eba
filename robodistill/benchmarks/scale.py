"""Scale figures: the collector in this process against raw env stepping, and on Ray (env-runner actors, one batching
teacher actor) with 1 and 2 runners; labels per second with a slow teacher (20 ms per call, as a large VLA on a GPU
answers a batch) batched across runners or called per runner; Ray's overhead per env step; a fit's updates per second
in one process and as DDP on 2 Ray Train workers.

Each Ray runner steps `WIDTH` envs (the sync collector's default width), so 2 runners step twice the envs of one
process: the batching teacher labels them in calls as large as the runners' envs together. The student is an
untrained Gaussian MLP acting half the time (beta 0.5) on PushCube; every figure is env steps (= teacher labels) per
wall second over whole episodes, the variants interleaved over repeats (medians).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from policies.gaussian import GaussianPolicy
from robodistill.benchmarks.foundation import WIDTH, collector_over_raw  # WIDTH: the collector's default width
from robodistill.data.buffer import LabelBuffer
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.labels import LABEL
from robodistill.data.ray_collector import RayCollector, start_ray
from robodistill.learners.fitting import FitState
from robodistill.tasks import env_fns, shape_meta
from robodistill.teachers import CallableTeacher

TASK = {"env_id": "robodistill/PushCube-v0"}
SLOW_MS = 20.0
_expert: Any = None


def slow_expert(states: np.ndarray) -> np.ndarray:
    """The scripted PushCube expert behind a fixed 20 ms per call, whatever the batch (teacher=callable target)."""
    global _expert
    if _expert is None:
        _expert = envs.make_expert(gym.make(TASK["env_id"]))
    time.sleep(SLOW_MS / 1000.0)
    return _expert(states)


SLOW_TEACHER = {"kind": "callable", "target": f"{__name__}:slow_expert", "batched": True}


def rate(collector: Any, steps: int, seed: int) -> float:
    """Env steps (each labelled once) per wall second of a `min_steps` collection."""
    stats = collector.collect(None, beta=0.5, seed=seed, min_steps=steps, progress=False)
    return stats.env_steps / stats.wall_s


def ddp_rates(updates: int, batch: int, storage: Path) -> dict[str, Any]:
    """Updates per second of the default MLP student's fit on PushCube-sized random data: in this process
    (trainer.workers=1) and as DDP on 2 Ray Train workers (their update loop, and the whole call with start-up)."""
    rng = np.random.default_rng(0)
    states = rng.standard_normal((20_000, 40)).astype(np.float32)
    buffer = LabelBuffer()
    buffer.add({"state": states, LABEL: np.tanh(states[:, :4]).astype(np.float32)})
    meta = {"obs": {"state": {"shape": [40], "type": "low_dim"}}, "action": {"shape": [4]}}
    out: dict[str, Any] = {}
    for workers in (1, 2):
        student = GaussianPolicy(meta, ["state"])
        fit = FitState(torch.optim.Adam(student.parameters(), lr=1e-3), updates, "constant", 0, workers, storage)
        t0 = time.perf_counter()
        losses = fit.regress(student, buffer, updates, batch, progress=False)
        wall = time.perf_counter() - t0
        out[str(workers)] = losses.get("ddp/updates_per_s", updates / wall)
        out[f"call_s_{workers}"] = wall
    return out


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    torch.set_num_threads(1)
    steps, repeats = (300, 1) if quick else (4000, 3)
    env = gym.make(TASK["env_id"])
    student = GaussianPolicy(shape_meta(env), ["state"]).eval()
    # logical CPUs for Ray: every variant's runners (7, one CPU each) stay up at once to be interleaved; they take
    # turns on this machine's cores, as the variants are measured one at a time
    start_ray(num_cpus=16)
    scripted = CallableTeacher(envs.make_expert(env), ["state"])
    sync = Collector(make_vector_env(env_fns(TASK, WIDTH)), scripted, student, seed=0)
    slow_sync = Collector(make_vector_env(env_fns(TASK, WIDTH)), CallableTeacher(slow_expert, ["state"]), student)

    def ray_collector(runners: int, teacher: dict[str, Any], shared: bool = True) -> RayCollector:
        c = RayCollector(TASK, "state", teacher, ["state"], student, WIDTH * runners, runners, shared_teacher=shared)
        c.collect(None, beta=0.5, seed=99, min_steps=WIDTH * runners * 5, progress=False)  # warm: imports, first calls
        return c

    ray1, ray2 = ray_collector(1, {"kind": "scripted"}), ray_collector(2, {"kind": "scripted"})
    batched, per_runner = ray_collector(2, SLOW_TEACHER), ray_collector(2, SLOW_TEACHER, shared=False)
    rate(sync, WIDTH * 5, 99)
    rate(slow_sync, WIDTH * 5, 99)
    before = batched.teacher_stats()
    figures: dict[str, list[float]] = {}
    try:
        for rep in range(repeats):  # interleaved: machine noise hits every variant alike
            for name, c, n in (
                ("sync", sync, steps),
                ("ray_1", ray1, steps),
                ("ray_2", ray2, 2 * steps),
                ("slow_sync", slow_sync, steps // 4),
                ("slow_ray_batched", batched, steps // 2),
                ("slow_ray_per_runner", per_runner, steps // 2),
            ):
                figures.setdefault(name, []).append(rate(c, n, rep))
        after = batched.teacher_stats()
    finally:
        for c in (ray1, ray2, batched, per_runner):
            c.close()
        sync.close()
        slow_sync.close()
    raw = collector_over_raw(TASK["env_id"], WIDTH, steps, repeats)
    ddp = ddp_rates(30 if quick else 500, 256, out_dir / "ddp")
    med = {k: statistics.median(v) for k, v in figures.items()}
    calls, rows = after["calls"] - before["calls"], after["rows"] - before["rows"]
    payload = {
        "width": WIDTH,
        "slow_teacher_ms": SLOW_MS,
        "steps": steps,
        "repeats": repeats,
        "raw_steps_per_s": statistics.median(raw["raw_steps_per_s"]),
        "sync_steps_per_s": med["sync"],
        "ray_steps_per_s": {"1": med["ray_1"], "2": med["ray_2"]},
        "ray_over_sync": {"1": med["ray_1"] / med["sync"], "2": med["ray_2"] / med["sync"]},
        "ray_overhead_us_per_step": 1e6 * (1 / med["ray_1"] - 1 / med["sync"]),
        "slow_teacher_labels_per_s": {
            "sync": med["slow_sync"],
            "ray_batched": med["slow_ray_batched"],
            "ray_per_runner": med["slow_ray_per_runner"],
        },
        "slow_ray_batched_over_sync": med["slow_ray_batched"] / med["slow_sync"],
        "teacher_batch_mean": rows / max(calls, 1),
        "teacher_calls_per_label": calls / max(rows, 1),
        "collector_over_raw": raw["ratio"],
        "ddp_updates_per_s": {"1": ddp["1"], "2": ddp["2"]},
        "ddp_call_s": {"1": ddp["call_s_1"], "2": ddp["call_s_2"]},
        "figures": figures,
    }
    payload["targets"] = {
        "slow_ray_batched_ge_1.5x_sync": payload["slow_ray_batched_over_sync"] >= 1.5,
        "collector_ge_0.9x_raw": payload["collector_over_raw"] >= 0.9,
    }
    lines = [
        f"raw env stepping ({WIDTH} envs, replaying the collector's calls): {payload['raw_steps_per_s']:.0f} steps/s; "
        f"sync collector / raw: {payload['collector_over_raw']:.3f}",
        f"{'collector (scripted teacher)':<36}{'envs':>6}{'steps/s':>10}{'/ sync':>9}",
        f"{'sync':<36}{WIDTH:>6}{med['sync']:>10.0f}{1:>9.2f}",
        f"{'ray, 1 runner':<36}{WIDTH:>6}{med['ray_1']:>10.0f}{med['ray_1'] / med['sync']:>9.2f}",
        f"{'ray, 2 runners':<36}{2 * WIDTH:>6}{med['ray_2']:>10.0f}{med['ray_2'] / med['sync']:>9.2f}",
        f"ray overhead per env step (1 runner vs sync, same envs): {payload['ray_overhead_us_per_step']:.0f} us",
        f"{f'slow teacher ({SLOW_MS:.0f} ms per call)':<36}{'envs':>6}{'labels/s':>10}{'/ sync':>9}",
        f"{'sync':<36}{WIDTH:>6}{med['slow_sync']:>10.0f}{1:>9.2f}",
    ]
    for name, label in (
        ("slow_ray_batched", "ray, 2 runners, one batching teacher"),
        ("slow_ray_per_runner", "ray, 2 runners, a teacher each"),
    ):
        lines.append(f"{label:<36}{2 * WIDTH:>6}{med[name]:>10.0f}{med[name] / med['slow_sync']:>9.2f}")
    lines.append(
        f"batching teacher: {payload['teacher_batch_mean']:.1f} rows per call, "
        f"{payload['teacher_calls_per_label']:.3f} calls per label"
    )
    lines.append(
        f"fit updates/s (MLP student, batch 256): 1 process {ddp['1']:.0f}; DDP on 2 Ray Train workers {ddp['2']:.0f} "
        f"(update loop; the whole call {ddp['call_s_2']:.1f} s with start-up, against {ddp['call_s_1']:.1f} s)"
    )
    met = [k for k, ok in payload["targets"].items() if ok]
    missed = [k for k, ok in payload["targets"].items() if not ok]
    lines.append(f"targets met: {', '.join(met) or 'none'}; missed: {', '.join(missed) or 'none'}")
    lines.append(
        f"(medians over {repeats} interleaved repeats of {steps} env steps; beta 0.5 with an untrained MLP student; "
        "PushCube; every step labelled)"
    )
    return payload, lines
