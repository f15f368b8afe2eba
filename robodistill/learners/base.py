"""Plumbing shared by every learner: final evaluation with videos, checkpoint payloads, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import episode_labels, load_labels
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import evaluate, student_policy
from robodistill.learners.components import Components
from robodistill.rundir import RunDir, restore_rng


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

    def fit(self, run: RunDir) -> dict[str, Any]:
        raise NotImplementedError

    # ---- hooks: what a supervised learner fits, on which samples (overridden by the diffusion learners) ----------
    def load_buffer(self, path: str | Path) -> LabelBuffer:
        """A dataset's (observation, label) samples for this learner's student."""
        return load_labels(path, self.student.obs_keys, self.comps.shape_meta)

    def episode_samples(self, episode: dict[str, Any]) -> dict[str, np.ndarray]:
        """A collected episode's samples, for aggregation."""
        return episode_labels(episode, self.student.obs_keys)

    def fit_normalizers(self, buffer: LabelBuffer) -> None:
        self.student.fit_normalizers({k: buffer.view(k) for k in self.student.obs_keys})

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student.parameters(), lr=float(self.algo.lr))

    def loss_fn(self) -> Callable | None:
        """The minibatch loss (obs, labels) -> (loss, parts); None: the student's own imitation_loss."""
        return None

    def after_step(self) -> None:
        """Runs after every optimizer step."""

    def driver(self) -> Any:
        """What drives the envs as the student in the collector."""
        return self.student

    def extra_state(self) -> dict[str, Any]:
        """More to save in checkpoints/last.pt."""
        return {}

    def restore_extra(self, ckpt: dict[str, Any]) -> None:
        """Restore what extra_state saved."""

    # ---- services -------------------------------------------------------------------------------------------
    def evaluate_student(self, run: RunDir, step: int, final: bool = False, episodes: int | None = None) -> dict[str, Any]:
        """Evaluate the student over the eval config's seeded episodes (or the first `episodes` of them); the final
        call films and writes eval.json."""
        result = self.evaluate_on(self.comps.task, episodes, run.video_dir if final else None)
        run.log(step, {"eval/success_rate": result["success_rate"], "eval/return_mean": result["return_mean"]})
        if final:
            run.write_json("eval.json", {k: v for k, v in result.items()})
        return result

    def evaluate_on(self, task: dict[str, Any], episodes: int | None = None, video_dir: Path | None = None
                    ) -> dict[str, Any]:  # fmt: skip
        """The student on `task` over the eval config's seeded episodes (or the first `episodes`); films
        `eval.videos` of them into `video_dir` when given."""
        e = self.cfg.eval
        return evaluate(
            student_policy(self.eval_student(), self.cfg.get("sampler")),
            task,
            self.comps.obs_mode,
            episodes=int(episodes or e.episodes),
            seed=int(e.seed),
            num_envs=int(e.num_envs),
            video_dir=video_dir,
            num_videos=int(e.videos) if video_dir is not None else 0,
            progress=self.progress,
        )

    def eval_student(self) -> torch.nn.Module:
        """The network evaluated and saved as the policy (an EMA copy for diffusion learners)."""
        return self.student

    def student_payload(self) -> dict[str, Any]:
        student = self.eval_student()
        return {"policy_config": student.config, "policy": student.state_dict()}

    def load_student(self, ckpt: dict[str, Any]) -> None:
        saved = ckpt.get("policy_config", {}).get("shape_meta")
        if saved is not None and saved != self.student.config["shape_meta"]:
            raise UserError(
                f"checkpoint was trained for shapes {saved}, but this task has {self.student.config['shape_meta']}"
            )
        self.student.load_state_dict(ckpt["policy"])

    def resume_from(self, run: RunDir, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
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
