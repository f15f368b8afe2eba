"""Consistency distillation: a one-step head from a trained diffusion-policy teacher (teacher=diffusion).

1. The student is the teacher's network read as a consistency function f(x_t, t) (policies/consistency.py),
   warm-started from the teacher's weights; an EMA copy of it is the target network.
2. Per sample: a clean chunk x_0 (a demonstration window offline; the teacher's own chunk at a student-visited
   state on-policy), a pair of adjacent steps t_{n+1} > t_n of the teacher's DDIM grid, and
   x_{t_{n+1}} = q(x_0, t_{n+1}).
3. The teacher takes one probability-flow ODE (DDIM) step x_{t_{n+1}} -> x_hat_{t_n}.
4. Loss: d(f(x_{t_{n+1}}, t_{n+1}), f_ema(x_hat_{t_n}, t_n)) + dsm_weight * d(f(x_{t_{n+1}}, t_{n+1}), x_0), with
   d the pseudo-Huber distance; after each step the EMA target moves toward the student.
Offline (default) the samples are the teacher run's demonstrations, fitted as BC fits; with `on_policy: true`
the one-step student drives in the collector while the diffusion teacher labels every state it visits with a
chunk, aggregated round by round as DAgger does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from policies.consistency import ConsistencyPolicy, pseudo_huber
from policies.samplers import ChunkRunner
from robodistill.config import to_dict
from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import load_labels, sequence_labels
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import student_policy
from robodistill.learners.bc import BCLearner
from robodistill.learners.components import Components
from robodistill.learners.dagger import DAggerLearner
from robodistill.rundir import RunDir
from robodistill.teachers import DiffusionTeacher


def unwrap_diffusion_teacher(teacher: Any) -> DiffusionTeacher:
    while teacher is not None and not isinstance(teacher, DiffusionTeacher):
        teacher = getattr(teacher, "teacher", None)
    if teacher is None:
        raise UserError("algo=consistency distils a diffusion policy: use teacher=diffusion "
                        "teacher.path=<an algo=diffusion run>")  # fmt: skip
    return teacher


class ConsistencyLearner(DAggerLearner, BCLearner):
    name = "consistency"
    builds_student = False  # the student is the teacher's network, warm-started from its weights

    def __init__(self, cfg: DictConfig, comps: Components):
        teacher = unwrap_diffusion_teacher(comps.teacher)
        self.dp = teacher.policy.eval().requires_grad_(False)
        if self.dp.kind != "diffusion" or self.dp.noise_levels != "uniform":
            raise UserError(f"algo=consistency needs a plain diffusion-policy teacher, got {self.dp.kind} "
                            f"({self.dp.noise_levels} noise levels)")  # fmt: skip
        a = cfg.algo
        self.grid = self.dp.schedule.ddim_timesteps(int(a.teacher_steps))  # descending, ends at 0
        config = {k: v for k, v in self.dp.config.items() if k != "kind"}
        student = ConsistencyPolicy(**config, t_max=self.grid[0], sigma_data=float(a.sigma_data),
                                    alpha_min=float(a.alpha_min))  # fmt: skip
        student.load_state_dict(self.dp.state_dict())  # warm start: at init F(x, t) is the teacher's x_0 estimate
        comps.student = student
        super().__init__(cfg, comps)
        self.target = copy.deepcopy(student).requires_grad_(False)
        self.runner = student_policy(student, to_dict(cfg.sampler))  # the one-step head that drives on-policy

    def fit(self, run: RunDir) -> dict[str, Any]:
        return DAggerLearner.fit(self, run) if self.algo.on_policy else BCLearner.fit(self, run)

    # ---- samples ----------------------------------------------------------------------------------------------
    def sources(self, run: RunDir) -> list[tuple[Path, Mapping[str, Any] | None]]:
        """`algo.dataset`, else the teacher run's demonstrations, else demonstrations collected here."""
        teacher_data = RunDir(str(self.cfg.teacher.path)).dataset_path
        if not self.algo.get("dataset") and teacher_data.exists():
            return [(teacher_data, None)]
        return super().sources(run)

    def load_buffer(self, path: str | Path) -> LabelBuffer:
        label = "teacher/chunk" if self.algo.on_policy else None
        return load_labels(path, self.student.obs_keys, self.comps.shape_meta, self.student.horizons, chunk_label=label)

    def episode_samples(self, episode: dict[str, Any]) -> dict[str, np.ndarray]:
        """Observation histories of the visited states, each with the teacher's chunk there as x_0."""
        samples = sequence_labels(episode["obs"], episode["teacher"]["actions"], self.student.obs_keys,
                                  self.student.horizons)  # fmt: skip
        return {**samples, "teacher_action": episode["teacher"]["chunk"]}

    def fit_normalizers(self, buffer: LabelBuffer) -> None:
        """Kept from the teacher: the head must read and write the teacher's units."""

    def driver(self) -> ChunkRunner:
        return self.runner

    # ---- the update -------------------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.student.parameters(), lr=float(self.algo.lr), weight_decay=1e-6)

    def loss_fn(self):
        return self.consistency_loss

    def consistency_loss(
        self, obs: dict[str, torch.Tensor], chunk: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        s, dp = self.student, self.dp
        x0 = s.normalize_actions(chunk)  # (B, T_p, A)
        grid = torch.tensor(self.grid)
        n = torch.randint(0, len(grid) - 1, (len(x0),))
        t_hi, t_lo = grid[n], grid[n + 1]
        x_hi = s.schedule.add_noise(x0, torch.randn_like(x0), t_hi)
        with torch.no_grad():
            x_lo = dp.schedule.ddim_step(dp.eps(x_hi, t_hi, dp.condition(obs)), t_hi, t_lo, x_hi)  # teacher ODE step
            target = self.target.consistency(x_lo, t_lo, self.target.condition(obs))
        pred = s.consistency(x_hi, t_hi, s.condition(obs))
        cd = pseudo_huber(pred - target).mean()
        dsm = pseudo_huber(pred - x0).mean()
        return cd + float(self.algo.dsm_weight) * dsm, {"consistency": cd.item(), "denoising": dsm.item()}

    @torch.no_grad()
    def after_step(self) -> None:
        mu = float(self.algo.target_ema)
        for t, p in zip(self.target.parameters(), self.student.parameters()):
            t.lerp_(p, 1.0 - mu)

    def extra_state(self) -> dict[str, Any]:
        return {"target": self.target.state_dict()}

    def restore_extra(self, ckpt: dict[str, Any]) -> None:
        self.target.load_state_dict(ckpt["target"])
