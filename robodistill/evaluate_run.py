"""Re-evaluate a finished run's student from its checkpoint, as `scripts/evaluate.py` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

import policies
from robodistill.components import to_dict
from robodistill.errors import UserError
from robodistill.evaluation import evaluate, student_policy
from robodistill.observations import obs_mode_for
from robodistill.run import load_checkpoint


def evaluate_run(
    cfg: DictConfig,
    run_dir: str | Path,
    checkpoint: str = "best",
    episodes: int | None = None,
    videos: int = 2,
    seed: int | None = None,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Load the run's student (best, else last) and evaluate it; writes eval_<checkpoint>.json and videos."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists() and checkpoint == "best":
        path = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    if "train_state" in ckpt:  # an SB3 run (ppo, sac, rpd): evaluate its SB3 model
        from robodistill.sb3 import SB3Student, load_sb3_model

        model_zip = run_dir / "sb3" / ("best_model.zip" if path.stem == "best" else "final_model.zip")
        if not model_zip.exists():
            raise UserError(f"{model_zip} does not exist: the run did not finish; try --checkpoint best")
        student = SB3Student(load_sb3_model(model_zip), list(cfg.student.obs_keys))
    else:
        student = policies.build_policy(ckpt["policy_config"])
        student.load_state_dict(ckpt["policy"])
        student.eval()

    result = evaluate(
        student_policy(student, to_dict(cfg.sampler) if cfg.get("sampler") is not None else None),
        to_dict(cfg.task),
        obs_mode_for(set(student.obs_keys)),
        episodes=int(episodes if episodes is not None else cfg.eval.episodes),
        seed=int(seed if seed is not None else cfg.eval.seed),
        num_envs=int(num_envs or cfg.eval.num_envs),
        video_dir=run_dir / "videos" / f"eval_{path.stem}",
        num_videos=videos,
    )
    (run_dir / f"eval_{path.stem}.json").write_text(json.dumps(result, indent=2))
    return result
