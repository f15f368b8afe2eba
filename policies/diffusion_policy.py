"""Diffusion policy: an observation history conditions a 1-D UNet that denoises an action chunk.

Plain DP (`noise_levels="uniform"`) predicts T_p actions starting T_o - 1 steps in the past and executes T_a of
them from the current step on. The streaming variant (`noise_levels="sdp"`) is trained with one noise level per
horizon position and predicts T_p actions from the current step on, so its rolling buffer shifts by whole chunks.
Actions and low-dim observations are normalised to [-1, 1]; the normalisers are saved with the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from policies.diffusion import ConditionalUnet1D, NoiseSchedule
from policies.encoders import ObservationEncoder, observed
from policies.normalizer import Normalizer

NOISE_LEVELS = ("uniform", "sdp")


class DiffusionPolicy(nn.Module):
    """eps_theta(x_t, t, features(o_{t-T_o+1..t})) over normalised action chunks (B, T_p, A)."""

    kind = "diffusion"

    def __init__(
        self,
        shape_meta: dict[str, Any],
        obs_keys: list[str],
        obs_horizon: int = 2,
        pred_horizon: int = 16,
        action_horizon: int = 8,
        num_train_steps: int = 100,
        down_dims: list[int] = (64, 128, 256),
        step_embed_dim: int = 64,
        kernel: int = 5,
        image_feature_dim: int = 64,
        noise_levels: str = "uniform",
        constant_level_prob: float = 0.2,
        gripper_scale: float = 1.0,
    ):
        super().__init__()
        obs_meta = observed(shape_meta, obs_keys)
        if noise_levels not in NOISE_LEVELS:
            raise ValueError(f"noise_levels must be one of {NOISE_LEVELS}, got {noise_levels!r}")
        if min(obs_horizon, pred_horizon, action_horizon) < 1:
            raise ValueError("obs_horizon, pred_horizon and action_horizon must be >= 1")
        first = obs_horizon - 1 if noise_levels == "uniform" else 0
        if first + action_horizon > pred_horizon:
            raise ValueError(f"pred_horizon {pred_horizon} must cover the {first} past steps and the "
                             f"action_horizon {action_horizon} executed ones")  # fmt: skip
        if pred_horizon % 2 ** (len(down_dims) - 1):
            raise ValueError(f"pred_horizon {pred_horizon} must be divisible by 2^{len(down_dims) - 1} for a UNet "
                             f"with {len(down_dims)} levels")  # fmt: skip
        if noise_levels == "sdp" and (
            pred_horizon % action_horizon or num_train_steps % (pred_horizon // action_horizon)
        ):
            raise ValueError("sdp needs pred_horizon to be whole chunks of action_horizon, and num_train_steps "
                             "divisible by the number of chunks")  # fmt: skip
        self.shape_meta = shape_meta
        self.obs_keys = list(obs_keys)
        self.obs_horizon, self.pred_horizon, self.action_horizon = obs_horizon, pred_horizon, action_horizon
        self.num_train_steps = num_train_steps
        self.down_dims, self.step_embed_dim, self.kernel = list(down_dims), step_embed_dim, kernel
        self.image_feature_dim = image_feature_dim
        self.noise_levels, self.constant_level_prob = noise_levels, constant_level_prob
        self.gripper_scale = float(gripper_scale)
        self.gripper_dims = list(shape_meta["action"].get("gripper_dims", []))
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.encoder = ObservationEncoder(obs_meta, image_feature_dim)
        self.action_normalizer = Normalizer((self.action_dim,))
        self.net = ConditionalUnet1D(
            self.action_dim, obs_horizon * self.encoder.out_dim, tuple(down_dims), step_embed_dim, kernel,
            position_steps=noise_levels == "sdp",
        )  # fmt: skip
        self.schedule = NoiseSchedule(num_train_steps)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved next to its state_dict)."""
        return {
            "kind": self.kind, "shape_meta": self.shape_meta, "obs_keys": self.obs_keys,
            "obs_horizon": self.obs_horizon, "pred_horizon": self.pred_horizon,
            "action_horizon": self.action_horizon, "num_train_steps": self.num_train_steps,
            "down_dims": self.down_dims, "step_embed_dim": self.step_embed_dim, "kernel": self.kernel,
            "image_feature_dim": self.image_feature_dim, "noise_levels": self.noise_levels,
            "constant_level_prob": self.constant_level_prob, "gripper_scale": self.gripper_scale,
        }  # fmt: skip

    @property
    def first_action(self) -> int:
        """Index in the predicted chunk of the action for the current step."""
        return self.obs_horizon - 1 if self.noise_levels == "uniform" else 0

    @property
    def horizons(self) -> tuple[int, int, int]:
        """(obs_horizon, pred_horizon, first_action): how training samples are windowed (`sequence_labels`)."""
        return self.obs_horizon, self.pred_horizon, self.first_action

    # ---- normalisation ----------------------------------------------------------------------------------------
    def fit_normalizers(self, obs: dict[str, np.ndarray], actions: np.ndarray | None = None) -> None:
        """Fit the [-1, 1] maps of low-dim observations (N, ...) and actions (N, A) from data."""
        for k, norm in self.encoder.normalizers.items():
            norm.fit(obs[k], mode="limits")
        if actions is not None:
            self.action_normalizer.fit(np.asarray(actions).reshape(-1, self.action_dim), mode="limits")

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        x = self.action_normalizer(actions)
        if self.gripper_dims and self.gripper_scale != 1.0:  # RTI's `scale` gripper handling
            x[..., self.gripper_dims] = x[..., self.gripper_dims] * self.gripper_scale
        return x

    def unnormalize_actions(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if self.gripper_dims and self.gripper_scale != 1.0:
            x[..., self.gripper_dims] = x[..., self.gripper_dims] / self.gripper_scale
        return self.action_normalizer.inverse(x.clamp(-1.0, 1.0))

    # ---- network --------------------------------------------------------------------------------------------
    def condition(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Observation history {key: (B, T_o, ...)} -> FiLM condition (B, T_o * F)."""
        flat = {k: obs[k].flatten(0, 1) for k in self.obs_keys}  # (B * T_o, ...); traced with a free batch size
        return self.encoder(flat).reshape(-1, self.obs_horizon * self.encoder.out_dim)

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise of x_t at level t (B,) or per position (B, T_p)."""
        return self.net(x, t, cond)

    def sdp_levels(self, offset: torch.Tensor) -> torch.Tensor:
        """Chunk-wise noise levels (B, T_p): chunk c sits at offset + c * N / h, later chunks noisier."""
        chunks = self.pred_horizon // self.action_horizon
        chunk = torch.arange(self.pred_horizon) // self.action_horizon
        return offset[:, None] + chunk[None] * (self.num_train_steps // chunks)

    def training_levels(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise levels for a training batch: (B,) for plain DP; (B, T_p) for SDP's constant/chunk-wise mixture."""
        n = self.num_train_steps
        if self.noise_levels == "uniform":
            return torch.randint(0, n, (batch,), generator=generator)
        constant = torch.rand(batch, generator=generator) < self.constant_level_prob
        level = torch.randint(0, n, (batch,), generator=generator)[:, None].expand(-1, self.pred_horizon)
        offset = torch.randint(0, n // (self.pred_horizon // self.action_horizon), (batch,), generator=generator)
        return torch.where(constant[:, None], level, self.sdp_levels(offset))

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """epsilon-prediction MSE on action chunks target (B, T_p, A) noised at random levels."""
        x0 = self.normalize_actions(target)
        noise = torch.randn_like(x0)
        t = self.training_levels(len(x0))
        x_t = self.schedule.add_noise(x0, noise, t)
        mse = ((self.eps(x_t, t, self.condition(obs)) - noise) ** 2).mean()
        return mse, {"mse": mse.item()}
