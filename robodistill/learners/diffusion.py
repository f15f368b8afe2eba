"""Diffusion policy from demonstrations (DP, and the streaming SDP variant with `student=sdp`).

1. Demonstrations: `algo.dataset`, or teacher-driven episodes collected here (learners/demos.py).
2. Samples: per step, the last T_o observations and the T_p-action window (`data.labels.sequence_labels`).
3. Normalise low-dim observations and actions to [-1, 1] from the data (saved inside the policy).
4. Minimise the epsilon-prediction MSE at random noise levels (per horizon position for SDP); after each step
   move an EMA copy of the weights toward the online ones. The EMA copy is what is evaluated, saved and served.
`sampler=` picks how evaluation samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.optim.swa_utils import AveragedModel

from policies.diffusion_policy import DiffusionPolicy
from robodistill.data.labels import LABEL
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import headline
from robodistill.learners.components import Components
from robodistill.learners.demos import demonstrations
from robodistill.learners.fitting import FitState, fit_updates, trainer_workers
from robodistill.learners.services import Services, load_policy_state, policy_state


def ema_model(policy: torch.nn.Module, max_decay: float) -> AveragedModel:
    """An EMA copy whose decay warms up as 1 - (1 + n)^-0.75 toward `max_decay` (early weights fade fast);
    buffers (the fitted normalisers) are carried along."""

    def average(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        decay = min(max_decay, 1.0 - (1.0 + float(n)) ** -0.75)
        return avg + (new - avg) * (1.0 - decay)

    return AveragedModel(policy, avg_fn=average, use_buffers=True)


class DiffusionLearner:
    name = "diffusion"
    uses_teacher = True
    builds_student = True
    data_parallel = True  # trainer.workers > 1: its fits run as DDP on Ray Train workers (the EMA on rank 0)

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        self.student = comps.student
        if not isinstance(self.student, DiffusionPolicy) or self.student.kind != "diffusion":
            raise UserError(
                f"algo={self.name} trains a diffusion policy: use student=diffusion, diffusion_rgb or sdp "
                f"(got student={cfg.student.name})"
            )
        self.ema = ema_model(self.student, float(cfg.algo.ema_decay))

    def fit(self) -> dict[str, Any]:
        cfg, a, student, ema = self.cfg, self.cfg.algo, self.student, self.ema
        sources = [(Path(a.dataset), None)] if a.dataset else [(self.services.run.dataset_path, self.comps.task)]
        ckpt = self.services.resume()
        buffer = demonstrations(self.services, sources, ckpt is not None, student.obs_keys, student.horizons)

        updates = int(a.updates)
        optimizer = torch.optim.AdamW(student.parameters(), lr=float(a.lr), weight_decay=1e-6)
        storage = self.services.run.dir / "ddp"
        fit = FitState(optimizer, updates, a.lr_schedule, int(cfg.seed), trainer_workers(cfg), storage)
        start = 0
        if ckpt is not None:
            load_policy_state(ema.module, ckpt)  # the saved policy is the EMA copy
            ema.load_state_dict(ckpt["ema"])
            student.load_state_dict(ckpt["online_policy"])
            fit.load_state_dict(ckpt)
            start = ckpt["update"]
        else:
            student.fit_normalizers({k: buffer.view(k) for k in student.obs_keys}, buffer.view(LABEL))

        def state() -> dict[str, Any]:  # the EMA copy is the policy; the online weights train on
            return {**policy_state(ema.module), "online_policy": student.state_dict(), "ema": ema.state_dict()}

        fit_updates(
            self.services,
            fit,
            student,
            buffer,
            start,
            state=state,
            desc=self.name,
            ema=ema,
        )
        result = self.services.evaluate(ema.module, updates, final=True)
        self.services.checkpoint("best", {**policy_state(ema.module), "update": updates})
        return {**headline(result), "teacher_labels": len(buffer), "updates": updates}
