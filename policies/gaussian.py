"""Gaussian policy: an observation encoder (normalised low-dim vectors, an image encoder per camera) and a diagonal
Gaussian head."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policies.base import ONE_STEP, ConfigError, Exporter, Graph, PolicyConfig, PolicyModule
from policies.encoders import ObservationEncoder, check_image_encoder, mlp, observed


@dataclass
class GaussianConfig(PolicyConfig):
    """student=mlp | cnn: an MLP on the observation features, a diagonal Gaussian head."""

    kind: ClassVar[str] = "gaussian"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    image_feature_dim: int = 128  # features of each camera image
    init_log_std: float = -1.0
    encoder: str = "cnn"  # each camera's image encoder: a name of policies.vision.ENCODERS
    shift: int = 4  # random-shift augmentation of each image in training (pixels; 0: off)
    encoder_options: dict[str, Any] = field(default_factory=dict)  # the encoder's own options (e.g. num_keypoints)
    obs_horizon: int = 1  # observations read per action: the last T_o steps (stacked frames), the newest last

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hidden:
            raise ConfigError("hidden must list at least one layer width")
        if not isinstance(self.obs_horizon, int) or self.obs_horizon < 1:
            raise ConfigError(f"obs_horizon must be a whole number of steps >= 1, got {self.obs_horizon!r}")
        check_image_encoder(self.encoder, self.shift, self.encoder_options)


class GaussianPolicy(PolicyModule):
    """pi(a|s) = N(mu(s), diag(sigma(s))^2) over actions normalised to [-1, 1]. With `obs_horizon` T_o > 1, s is the
    last T_o observations {key: (B, T_o, ...)}: each frame encoded by the same encoders, their features concatenated
    (a HistoryRunner keeps the history when it acts)."""

    Config = GaussianConfig

    def __init__(self, shape_meta: dict[str, Any], obs_keys: list[str], **fields: Any):
        super().__init__(shape_meta, obs_keys, **fields)
        cfg: GaussianConfig = self.cfg
        obs_meta = observed(shape_meta, self.obs_keys)
        self.hidden = list(cfg.hidden)
        self.image_feature_dim = cfg.image_feature_dim
        self.obs_horizon = cfg.obs_horizon
        self.encoder = ObservationEncoder(obs_meta, cfg.image_feature_dim, cfg.encoder, cfg.shift, cfg.encoder_options)
        self.trunk = mlp([self.obs_horizon * self.encoder.out_dim, *self.hidden], nn.ReLU)
        self.trunk.append(nn.ReLU())
        self.mean = nn.Linear(self.hidden[-1], self.action_dim)
        self.log_std = nn.Linear(self.hidden[-1], self.action_dim)
        nn.init.zeros_(self.log_std.weight)
        nn.init.constant_(self.log_std.bias, cfg.init_log_std)
        self.eval()  # built to act: no image augmentation until a fit switches it to training mode

    @property
    def horizons(self) -> tuple[int, int, int] | None:
        """How training samples are windowed (`sequence_labels`): the last T_o observations and the current step's
        action; None for a student that reads one observation."""
        return None if self.obs_horizon == 1 else (self.obs_horizon, 1, 0)

    def fit_normalizers(self, obs: dict[str, np.ndarray]) -> None:
        """Fit low-dim observation normalisers from data (N, ...) or histories (N, T_o, ...)."""
        for k, norm in self.encoder.normalizers.items():
            norm.fit(obs[k])

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T_o * D): each observation's features, oldest first."""
        if self.obs_horizon == 1:
            return self.encoder(obs)
        flat = {k: obs[k].flatten(0, 1) for k in self.obs_keys}  # (B * T_o, ...); traced with a free batch size
        return self.encoder(flat).reshape(-1, self.obs_horizon * self.encoder.out_dim)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(self.features(obs))
        return self.mean(h), self.log_std(h).clamp(-5.0, 1.0)

    def deterministic_action(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean action clipped to [-1, 1] (B, A): what the exported graph computes."""
        return self(obs)[0].clamp(-1.0, 1.0)

    def distribution(self, obs: dict[str, torch.Tensor]) -> torch.distributions.Normal:
        mean, log_std = self(obs)
        return torch.distributions.Normal(mean, log_std.exp())

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE of the mean to the teacher's action (B, A) (or a window of one, (B, 1, A)), plus a Gaussian NLL that fits
        the std around the (frozen) mean."""
        target = target.reshape(len(target), self.action_dim)
        mean, log_std = self(obs)
        mse = ((mean - target) ** 2).sum(-1).mean()
        nll = -torch.distributions.Normal(mean.detach(), log_std.exp()).log_prob(target).sum(-1).mean()
        return mse + 0.01 * nll, {"mse": mse.item(), "nll": nll.item()}

    @torch.inference_mode()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Batched actions (B, A) clipped to [-1, 1] and their log-probabilities (B,), from observations (B, ...) or
        histories (B, T_o, ...)."""
        mean, log_std = self(self.tensors(obs))
        # the Gaussian log-density written out: a Distribution object costs more than the MLP at batch 8
        if deterministic:
            a, sq = mean, 0.0
        else:
            noise = torch.randn_like(mean)
            a, sq = mean + log_std.exp() * noise, 0.5 * noise**2
        log_prob = -(sq + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)
        return a.clamp(-1.0, 1.0).numpy(force=True), log_prob.numpy(force=True)


class GaussianGraph(nn.Module):
    """Observations (sorted keys) -> the deterministic action as a chunk of one (B, 1, A)."""

    def __init__(self, policy: Any):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.deterministic_action(dict(zip(self.keys, obs)))[:, None]


class GaussianExporter(Exporter):
    """One graph: the mean action, clipped; also ships any policy with `deterministic_action` (SB3 state
    policies)."""

    def contract(self, policy: Any, sampler_steps: int) -> dict[str, Any]:
        """A chunk of one action; the runtime keeps the history of a student that reads one."""
        return {"chunk": {**ONE_STEP, "obs_horizon": int(getattr(policy, "obs_horizon", 1))}}

    def graphs(self, policy: Any, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Graph]:
        keys = sorted(policy.obs_keys)
        return {"policy": Graph(GaussianGraph(policy), keys, ["actions"], {k: obs[k] for k in keys})}
