"""An SB3 run's state policy (ppo, rpd, sac) as an exportable student of kind `gaussian`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from robodistill.errors import UserError
from robodistill.rundir import RunDir
from robodistill.tasks import make_env, shape_meta
from robodistill.teachers.sb3 import SB3Student, load_sb3_model


class SB3StatePolicy(nn.Module):
    """Its deterministic action, clipped into the action bounds (Gaussian policies) or mapped from tanh's [-1, 1]
    onto them (squashed, SAC), as SB3's `predict` does. The observation normalisation (`NormalizedFlatten`) is part
    of the policy, so of the exported graph."""

    kind = "gaussian"  # exported and run as a Gaussian student's mean (policies.gaussian.GaussianExporter)

    def __init__(self, model: Any, meta: dict[str, Any]):
        super().__init__()
        self.student, self.policy = SB3Student(model, ["state"]), model.policy
        self.obs_keys, self.shape_meta = ["state"], meta
        self.action_dim = int(meta["action"]["shape"][0])
        self.register_buffer("low", torch.as_tensor(model.action_space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(model.action_space.high, dtype=torch.float32))
        self.squash = bool(getattr(self.policy, "squash_output", False))

    def deterministic_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, A) in the action bounds: what the exported graph computes."""
        a = self.policy._predict(obs["state"], deterministic=True)
        return self.low + 0.5 * (a + 1.0) * (self.high - self.low) if self.squash else a.clamp(self.low, self.high)

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's own inference path (`model.predict`): the reference the graph is checked against."""
        return self.student.act(obs, deterministic)


def load_sb3_policy(run: RunDir, cfg: Any, task: dict[str, Any], which: str = "best") -> SB3StatePolicy:
    """The SB3 model of a ppo / rpd / sac run (`which`: best, else final; last: final) as an exportable policy;
    state policies only."""
    keys = list(cfg.student.obs_keys)
    if keys != ["state"]:
        raise UserError(
            f"{run.dir} is an SB3 run on {keys}: export covers SB3 state policies (student=mlp); "
            f"image policies are SB3's own preprocessing and are not exported"
        )
    env = make_env(task, "state")
    try:
        meta = shape_meta(env)
    finally:
        env.close()
    return SB3StatePolicy(load_sb3_model(run.dir, which=which), meta).eval()
