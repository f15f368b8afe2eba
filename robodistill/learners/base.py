"""Plumbing shared by every learner: final evaluation with videos, checkpoint payloads, resume."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from robodistill.components import Components
from robodistill.errors import UserError
from robodistill.evaluation import evaluate, student_policy
from robodistill.run import Run, restore_rng


class Learner:
    """A learner reads its algorithm top to bottom in `fit`; evaluation, checkpoints and logging live here."""

    name = "base"
    uses_teacher = True  # build and check the configured teacher
    builds_student = True  # build a `policies` student from `student.*`

    def __init__(self, cfg: DictConfig, comps: Components):
        self.cfg = cfg
        self.algo = cfg.algo
        self.comps = comps
        self.student = comps.student
        self.progress = bool(cfg.get("progress", True))

    def fit(self, run: Run) -> dict[str, Any]:
        raise NotImplementedError

    # ---- services -------------------------------------------------------------------------------------------
    def evaluate_student(self, run: Run, step: int, final: bool = False, episodes: int | None = None) -> dict[str, Any]:
        """Evaluate the student over the eval config's seeded episodes (or the first `episodes` of them); the final
        call films and writes eval.json."""
        e = self.cfg.eval
        student = self.student

        result = evaluate(
            student_policy(student),
            self.comps.task,
            self.comps.obs_mode,
            episodes=int(episodes or e.episodes),
            seed=int(e.seed),
            num_envs=int(e.num_envs),
            video_dir=run.video_dir if final else None,
            num_videos=int(e.videos) if final else 0,
            progress=self.progress,
        )
        run.log(step, {"eval/success_rate": result["success_rate"], "eval/return_mean": result["return_mean"]})
        if final:
            run.write_json("eval.json", {k: v for k, v in result.items()})
        return result

    def student_payload(self) -> dict[str, Any]:
        return {"policy_config": self.student.config, "policy": self.student.state_dict()}

    def load_student(self, ckpt: dict[str, Any]) -> None:
        saved = ckpt.get("policy_config", {}).get("shape_meta")
        if saved is not None and saved != self.student.config["shape_meta"]:
            raise UserError(
                f"checkpoint was trained for shapes {saved}, but this task has {self.student.config['shape_meta']}"
            )
        self.student.load_state_dict(ckpt["policy"])

    def resume_from(self, run: Run, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """With `resume=true`, restore student, optimizer and RNGs from checkpoints/last.pt; returns the checkpoint."""
        if not self.cfg.get("resume", False):
            return None
        ckpt = run.load_checkpoint("last")
        if ckpt is None:
            return None
        self.load_student(ckpt)
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"])
        return ckpt
