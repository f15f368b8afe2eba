"""Consistency one-step head: f(x_t, t) maps a noisy action chunk straight to a clean one.

Same network as the diffusion teacher (so it is warm-started from the teacher's weights); its epsilon output is
turned into an x_0 estimate F and mixed with the input by boundary scalings, f = c_skip(t) x + c_out(t) F, with
c_skip(t_min) = 1 and c_out(t_min) = 0 so that f(x, t_min) = x exactly. sigma is the noise-to-signal ratio
sqrt((1 - alpha_bar_t) / alpha_bar_t) of step t.

F = (x - sqrt(1 - alpha_bar_t) eps) / max(sqrt(alpha_bar_t), alpha_min): the teacher's own x_0 estimate where
sqrt(alpha_bar_t) >= alpha_min (t up to about 50 of 100), and a well-conditioned regression above it. Dividing by
sqrt(alpha_bar_t) itself multiplies the network's error by about 7 at t = 90, where the one-step head starts; with
it the warm-started head sampled in one step never succeeded and distillation barely moved it (probed on PickCube).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policies.base import ConfigError, Graph
from policies.diffusion_policy import ChunkExporter, DiffusionConfig, DiffusionPolicy


@dataclass
class ConsistencyConfig(DiffusionConfig):
    """A diffusion policy's config plus the consistency head's: where sampling starts (t_max, default N - 1) and
    the boundary scalings (sigma_data) and x_0 estimate (alpha_min) above."""

    kind: ClassVar[str] = "consistency"
    t_max: int | None = None
    sigma_data: float = 0.05
    alpha_min: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t_max is not None and not 0 < self.t_max < self.num_train_steps:
            raise ConfigError(f"t_max must be in (0, {self.num_train_steps}), got {self.t_max}")


class ConsistencyPolicy(DiffusionPolicy):
    """A DiffusionPolicy whose network is read as a consistency function; sampled in 1 (or 2-3) evaluations."""

    Config = ConsistencyConfig

    def __init__(self, shape_meta: dict[str, Any], obs_keys: list[str], **fields: Any):
        super().__init__(shape_meta, obs_keys, **fields)
        cfg: ConsistencyConfig = self.cfg
        self.t_max = int(cfg.t_max if cfg.t_max is not None else self.num_train_steps - 1)
        self.sigma_data, self.alpha_min = float(cfg.sigma_data), float(cfg.alpha_min)
        bars = self.schedule.alphas_cumprod
        self.register_buffer("sigmas", ((1 - bars) / bars).sqrt(), persistent=False)  # (N,)

    def scalings(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c_skip(t), c_out(t) as (B, 1, 1): 1 and 0 at t = 0 (the boundary), -> 0 and 1 as the noise grows."""
        d = self.sigmas[t] - self.sigmas[0]
        c_skip = self.sigma_data**2 / (d**2 + self.sigma_data**2)
        return c_skip.reshape(-1, 1, 1), (1 - c_skip).reshape(-1, 1, 1)

    def consistency(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """f(x_t, t) -> clean chunk estimate (B, T_p, A), normalised."""
        bar = self.schedule.alphas_cumprod[t].reshape(-1, 1, 1)
        x0 = (x - (1 - bar).sqrt() * self.eps(x, t, cond)) / bar.sqrt().clamp(min=self.alpha_min)
        c_skip, c_out = self.scalings(t)
        return c_skip * x + c_out * x0

    def chain_timesteps(self, num_steps: int) -> list[int]:
        """Where a k-step chain evaluates: t_max, then evenly lower steps (e.g. k = 3: [90, 60, 30])."""
        if not 1 <= num_steps <= 3:
            raise ValueError(f"a consistency head samples in 1 to 3 steps, got {num_steps}")
        return [round(self.t_max * (1 - i / num_steps)) for i in range(num_steps)]


def pseudo_huber(diff: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """sqrt(|d|^2 + c^2) - c per sample of d (B, ...), on the plain difference; c = 0.00054 sqrt(dim) by default."""
    d2 = diff.reshape(len(diff), -1).pow(2).sum(-1)
    if c is None:
        c = 0.00054 * diff[0].numel() ** 0.5
    return (d2 + c**2).sqrt() - c


class ConsistencyGraph(nn.Module):
    """Observation histories (B, T_o, ...) and noise (B, T_p, A) -> the executed chunk (B, T_a, A) in one step."""

    def __init__(self, policy: ConsistencyPolicy):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        p, noise = self.policy, inputs[-1]
        cond = p.condition(dict(zip(self.keys, inputs[:-1])))
        t = torch.full((noise.shape[0],), p.t_max, dtype=torch.long, device=noise.device)
        x0 = p.consistency(noise, t, cond).clamp(-1.0, 1.0)
        return p.unnormalize_actions(x0)[:, p.first_action : p.first_action + p.action_horizon]


class ConsistencyExporter(ChunkExporter):
    """One graph: the one-step head from noise (an input, so the runtime draws it) to the executed chunk."""

    def graphs(self, policy: Any, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Graph]:
        keys = sorted(policy.obs_keys)
        noise = rng.standard_normal(self.noise_shape(policy, len(obs[keys[0]]))).astype(np.float32)
        feeds = {**{k: obs[k] for k in keys}, "noise": noise}
        return {"policy": Graph(ConsistencyGraph(policy), list(feeds), ["actions"], feeds)}

    @torch.inference_mode()
    def reference(
        self, policy: Any, obs: dict[str, np.ndarray], noise: np.ndarray | None, contract: dict[str, Any]
    ) -> np.ndarray:
        inputs = [torch.as_tensor(obs[k]) for k in sorted(policy.obs_keys)]
        return ConsistencyGraph(policy)(*inputs, torch.as_tensor(noise)).numpy()
