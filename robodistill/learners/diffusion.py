"""Diffusion policy from demonstrations (DP, and the streaming SDP variant with `student=sdp`).

1. Demonstrations: `algo.dataset`, or teacher-driven episodes collected here (as BC does).
2. Samples: per step, the last T_o observations and the T_p-action window (`training.sequence_labels`).
3. Normalise low-dim observations and actions to [-1, 1] from the data (saved inside the policy).
4. Minimise the epsilon-prediction MSE at random noise levels (per horizon position for SDP); after each step
   move an EMA copy of the weights toward the online ones. The EMA copy is what is evaluated, saved and served.
The update loop, checkpoints, resume and evaluation are BC's; `sampler=` picks how evaluation samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from policies.diffusion_policy import DiffusionPolicy
from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import LABEL, load_labels, sequence_labels
from robodistill.errors import UserError
from robodistill.learners.bc import BCLearner


def ema_model(policy: torch.nn.Module, max_decay: float) -> AveragedModel:
    """An EMA copy whose decay warms up as 1 - (1 + n)^-0.75 toward `max_decay` (early weights fade fast);
    buffers (the fitted normalisers) are carried along."""

    def average(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        decay = min(max_decay, 1.0 - (1.0 + float(n)) ** -0.75)
        return avg + (new - avg) * (1.0 - decay)

    return AveragedModel(policy, avg_fn=average, use_buffers=True)


class DiffusionLearner(BCLearner):
    name = "diffusion"

    def __init__(self, cfg, comps):
        super().__init__(cfg, comps)
        if not isinstance(self.student, DiffusionPolicy) or self.student.kind != "diffusion":
            raise UserError(f"algo={self.name} trains a diffusion policy: use student=diffusion, diffusion_rgb or sdp "
                            f"(got student={cfg.student.get('name')})")  # fmt: skip
        self.ema = ema_model(self.student, float(self.algo.ema_decay))

    def load_buffer(self, path: str | Path) -> LabelBuffer:
        return load_labels(path, self.student.obs_keys, self.comps.shape_meta, self.student.horizons)

    def fit_normalizers(self, buffer: LabelBuffer) -> None:
        self.student.fit_normalizers({k: buffer.view(k) for k in self.student.obs_keys}, buffer.view(LABEL))

    def episode_samples(self, episode: dict[str, Any]) -> dict[str, np.ndarray]:
        return sequence_labels(episode["obs"], episode["teacher"]["actions"], self.student.obs_keys,
                               self.student.horizons)  # fmt: skip

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.student.parameters(), lr=float(self.algo.lr), weight_decay=1e-6)

    def after_step(self) -> None:
        self.ema.update_parameters(self.student)

    def eval_student(self) -> torch.nn.Module:
        return self.ema.module

    def extra_state(self) -> dict[str, Any]:
        return {"online_policy": self.student.state_dict(), "ema": self.ema.state_dict()}

    def restore_extra(self, ckpt: dict[str, Any]) -> None:
        self.student.load_state_dict(ckpt["online_policy"])
        self.ema.load_state_dict(ckpt["ema"])
