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

from typing import Any

import torch

from policies.diffusion_policy import DiffusionPolicy


class ConsistencyPolicy(DiffusionPolicy):
    """A DiffusionPolicy whose network is read as a consistency function; sampled in 1 (or 2-3) evaluations."""

    kind = "consistency"

    def __init__(
        self, *args: Any, t_max: int | None = None, sigma_data: float = 0.05, alpha_min: float = 0.5, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.t_max = int(t_max if t_max is not None else self.num_train_steps - 1)
        if not 0 < self.t_max < self.num_train_steps:
            raise ValueError(f"t_max must be in (0, {self.num_train_steps}), got {self.t_max}")
        self.sigma_data, self.alpha_min = float(sigma_data), float(alpha_min)
        bars = self.schedule.alphas_cumprod
        self.sigmas = ((1 - bars) / bars).sqrt()  # (N,)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "t_max": self.t_max, "sigma_data": self.sigma_data, "alpha_min": self.alpha_min}

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
