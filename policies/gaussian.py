"""Gaussian policy: an observation encoder (MLP on state, small CNN on images) and a diagonal Gaussian head."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.encoders import ObservationEncoder, mlp, observed


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mu(s), diag(sigma(s))^2) over actions normalised to [-1, 1]."""

    kind = "gaussian"

    def __init__(
        self,
        shape_meta: dict[str, Any],
        obs_keys: list[str],
        hidden: list[int] = (256, 256),
        image_feature_dim: int = 128,
        init_log_std: float = -1.0,
    ):
        super().__init__()
        obs_meta = observed(shape_meta, obs_keys)
        self.shape_meta = shape_meta
        self.obs_keys = list(obs_keys)
        self.hidden = list(hidden)
        self.image_feature_dim = image_feature_dim
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.encoder = ObservationEncoder(obs_meta, image_feature_dim)
        self.trunk = mlp([self.encoder.out_dim, *self.hidden], nn.ReLU)
        self.trunk.append(nn.ReLU())
        self.mean = nn.Linear(self.hidden[-1], self.action_dim)
        self.log_std = nn.Linear(self.hidden[-1], self.action_dim)
        nn.init.zeros_(self.log_std.weight)
        nn.init.constant_(self.log_std.bias, init_log_std)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved next to its state_dict)."""
        return {
            "kind": self.kind,
            "shape_meta": self.shape_meta,
            "obs_keys": self.obs_keys,
            "hidden": self.hidden,
            "image_feature_dim": self.image_feature_dim,
        }

    def fit_normalizers(self, obs: dict[str, np.ndarray]) -> None:
        """Fit low-dim observation normalisers from data (N, ...)."""
        for k, norm in self.encoder.normalizers.items():
            norm.fit(obs[k])

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.encoder(obs))
        return self.mean(h), self.log_std(h).clamp(-5.0, 1.0)

    def distribution(self, obs: dict[str, torch.Tensor]) -> torch.distributions.Normal:
        mean, log_std = self(obs)
        return torch.distributions.Normal(mean, log_std.exp())

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE of the mean to the teacher's action, plus a Gaussian NLL that fits the std around the (frozen) mean."""
        mean, log_std = self(obs)
        mse = ((mean - target) ** 2).sum(-1).mean()
        nll = -torch.distributions.Normal(mean.detach(), log_std.exp()).log_prob(target).sum(-1).mean()
        return mse + 0.01 * nll, {"mse": mse.item(), "nll": nll.item()}

    @torch.inference_mode()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Batched actions (B, A) clipped to [-1, 1] and their log-probabilities (B,)."""
        mean, log_std = self({k: torch.as_tensor(np.asarray(obs[k])) for k in self.obs_keys})
        # the Gaussian log-density written out: a Distribution object costs more than the MLP at batch 8
        if deterministic:
            a, sq = mean, 0.0
        else:
            noise = torch.randn_like(mean)
            a, sq = mean + log_std.exp() * noise, 0.5 * noise**2
        log_prob = -(sq + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)
        return a.clamp(-1.0, 1.0).numpy(), log_prob.numpy()
