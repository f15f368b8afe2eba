"""Re-evaluate a finished run's student from its checkpoint, as `scripts/evaluate.py` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from robodistill.config import to_dict
from robodistill.devices import resolve_device
from robodistill.evaluation.monitor import MONITOR_FILE, load_monitor, monitored_policy
from robodistill.evaluation.rollouts import evaluate, student_policy
from robodistill.evaluation.video import Filming
from robodistill.observations import obs_mode_for
from robodistill.rundir import RunDir
from robodistill.runtime.monitor import alarm_summary
from robodistill.tasks import task_for_keys
from robodistill.teachers import load_run_policy


def evaluate_run(
    cfg: DictConfig,
    run_dir: str | Path,
    checkpoint: str = "best",
    episodes: int | None = None,
    videos: int | None = None,
    seed: int | None = None,
    num_envs: int | None = None,
    monitor: bool = False,
) -> dict[str, Any]:
    """Load the run's student (best, else last) and evaluate it with `cfg.sampler`; writes eval_<checkpoint>.json
    and videos. None takes the run's `cfg.eval.*` value. With `monitor`, the run's calibrated failure monitor
    (monitor.pt, refused for another checkpoint) scores every step: each episode reports when each method's alarm
    fired (`alarm_step`), and `alarms` sums them up."""
    run = RunDir(run_dir).require()
    torch.set_num_threads(int(cfg.torch_threads))
    student = load_run_policy(run.dir, checkpoint, resolve_device(cfg.get("device")))
    ev = cfg.eval
    if monitor:
        state = load_monitor(run.dir / MONITOR_FILE, run.checkpoint_path(checkpoint))
        policy: Any = monitored_policy(student, to_dict(cfg.sampler), state)
    else:
        policy = student_policy(student, to_dict(cfg.sampler))
    result = evaluate(
        policy,
        task_for_keys(to_dict(cfg.task), student.obs_keys),
        obs_mode_for(student.obs_keys),
        episodes=int(ev.episodes if episodes is None else episodes),
        seed=int(ev.seed if seed is None else seed),
        num_envs=int(ev.num_envs if num_envs is None else num_envs),
        video_dir=run.video_dir / f"eval_{checkpoint}",
        filming=Filming.from_config(ev, videos),
        progress=bool(cfg.progress),
    )
    if monitor:
        result["alarms"] = alarm_summary(result["per_episode"])
        keep = ("alpha", "window", "samples", "thresholds", "joint_thresholds")
        result["monitor"] = {k: state.get(k) for k in keep}
    run.write_json(f"eval_{checkpoint}.json", result)
    return result
