"""Diffusion-policy building blocks: the noise schedule with DDPM and DDIM steps, and a conditional 1-D UNet.

The UNet denoises an action chunk (B, T_p, A) given the diffusion step and an observation feature vector, which
conditions every residual block through FiLM (a per-channel scale and bias).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def squared_cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """beta_t from the squared-cosine schedule: alpha_bar(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar(i + 1) / alpha_bar(i), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


class NoiseSchedule(nn.Module):
    """Forward noising q(x_t | x_0) and the reverse steps of DDPM (stochastic) and DDIM (deterministic, eta = 0).

    A module whose tables are buffers: they move with the policy (`.to(device)`), and are not saved (they follow
    from `num_train_steps`). Noise is drawn on the sample's device.
    """

    def __init__(self, num_train_steps: int = 100):
        super().__init__()
        if num_train_steps < 1:
            raise ValueError(f"num_train_steps must be >= 1, got {num_train_steps}")
        self.num_train_steps = num_train_steps
        betas = squared_cosine_betas(num_train_steps)
        bars = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", bars, persistent=False)
        # [t] = alpha_bar_{t-1}; [0] = 1 (clean)
        self.register_buffer("bar_before", torch.cat([torch.ones(1), bars]), persistent=False)
        # [t] = alpha_bar_t; [-1] = [T] = 1 (clean): DDIM's target level, t_prev = -1 meaning clean
        self.register_buffer("bar_after", torch.cat([bars, torch.ones(1)]), persistent=False)

    def _step(self, t: int | torch.Tensor, n: int) -> torch.Tensor:
        """A step for the batch, or per sample, as a (n,) tensor on the schedule's device."""
        t = torch.as_tensor(t, device=self.betas.device)
        return t.expand(n) if t.dim() == 0 else t

    def _bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar_t broadcast over a sample's shape: t (B,) -> (B, 1, 1), or per position t (B, T) -> (B, T, 1)."""
        return self.alphas_cumprod[t].reshape(*t.shape, *([1] * (like.dim() - t.dim())))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, for integer steps t (B,)."""
        bar = self._bar(t, x0)
        return bar.sqrt() * x0 + (1 - bar).sqrt() * noise

    def predict_x0(self, eps: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        bar = self._bar(t, x_t)
        return (x_t - (1 - bar).sqrt() * eps) / bar.sqrt()

    def ddpm_step(
        self, eps: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One ancestral DDPM step x_t -> x_{t-1} (x_0 clipped to [-1, 1], posterior variance beta-tilde).

        t is one step for the batch, or one per sample (B,) or per position (B, T_p) as SDP's buffer needs;
        positions already clean (t < 0) stay as they are.
        """
        t = self._step(t, len(x_t))
        tc = t.clamp(min=0)
        bar_t = self._bar(tc, x_t)
        bar_prev = self.bar_before[tc].reshape(bar_t.shape)  # alpha_bar_{t-1}, 1 at t = 0
        beta_t = self.betas[tc].reshape(bar_t.shape)
        x0 = self.predict_x0(eps, tc, x_t).clamp(-1.0, 1.0)
        mean = (bar_prev.sqrt() * beta_t / (1 - bar_t)) * x0 + (
            (1 - beta_t).sqrt() * (1 - bar_prev) / (1 - bar_t)
        ) * x_t
        var = beta_t * (1 - bar_prev) / (1 - bar_t)  # zero at t = 0
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        return torch.where((t >= 0).reshape(bar_t.shape), mean + var.sqrt() * noise, x_t)

    def renoise(
        self, x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample q(x_t | x_s) for t >= s, per position (s = -1: x_s is clean): raise a sample's noise level."""
        bar_s = self.bar_before[s + 1]
        ratio = (self._bar(t, x_s) / bar_s.reshape(*s.shape, *([1] * (x_s.dim() - s.dim())))).clamp(max=1.0)
        noise = torch.randn(x_s.shape, generator=generator, dtype=x_s.dtype, device=x_s.device)
        return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise

    def ddim_timesteps(self, num_inference_steps: int) -> list[int]:
        """K evenly spaced training steps, descending, ending at 0."""
        if not 1 <= num_inference_steps <= self.num_train_steps:
            raise ValueError(f"num_inference_steps must be in [1, {self.num_train_steps}], got {num_inference_steps}")
        ratio = self.num_train_steps / num_inference_steps
        return sorted({int(round(i * ratio)) for i in range(num_inference_steps)}, reverse=True)

    def ddim_step(
        self, eps: torch.Tensor, t: int | torch.Tensor, t_prev: int | torch.Tensor, x_t: torch.Tensor
    ) -> torch.Tensor:
        """Deterministic DDIM step x_t -> x_{t_prev}, per sample when t, t_prev are (B,) (t_prev = -1: clean)."""
        t, t_prev = self._step(t, len(x_t)), self._step(t_prev, len(x_t))
        x0 = self.predict_x0(eps, t, x_t).clamp(-1.0, 1.0)
        bar_t = self._bar(t, x_t)
        bar_prev = self.bar_after[t_prev].reshape(bar_t.shape)  # index -1: alpha_bar = 1 (clean)
        eps = (x_t - bar_t.sqrt() * x0) / (1 - bar_t).sqrt()  # the noise consistent with the clipped x_0
        return bar_prev.sqrt() * x0 + (1 - bar_prev).sqrt() * eps


class SinusoidalEmbedding(nn.Module):
    """Diffusion step (B,) -> (B, dim) sinusoidal features."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        steps = torch.arange(half, dtype=torch.float32, device=t.device)
        freqs = torch.exp(-math.log(10_000.0) * steps / max(half - 1, 1))
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def conv_block(c_in: int, c_out: int, kernel: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias between them; a residual connection."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int = 5, groups: int = 8):
        super().__init__()
        self.first = conv_block(c_in, c_out, kernel, groups)
        self.second = conv_block(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.first(x)  # (B, C, T)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1) each
        h = self.second(h * (1 + scale) + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """eps_theta(x_t, t, obs_features): a 1-D UNet over the action chunk's time axis, FiLM-conditioned."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        down_dims: tuple[int, ...] = (64, 128, 256),
        step_embed_dim: int = 64,
        kernel: int = 5,
        groups: int = 8,
        position_steps: bool = False,
    ):
        super().__init__()
        # SDP: every horizon position has its own noise level, embedded and fed in beside the action channels
        self.position_steps = position_steps
        self.step_embed = nn.Sequential(
            SinusoidalEmbedding(step_embed_dim),
            nn.Linear(step_embed_dim, 4 * step_embed_dim),
            nn.Mish(),
            nn.Linear(4 * step_embed_dim, step_embed_dim),
        )
        c = step_embed_dim + cond_dim
        dims = [action_dim + (step_embed_dim if position_steps else 0), *down_dims]
        self.down = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(down_dims) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(d_in, d_out, c, kernel, groups),
                        FiLMResidualBlock(d_out, d_out, c, kernel, groups),
                        nn.Identity() if last else nn.Conv1d(d_out, d_out, 3, stride=2, padding=1),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mid = nn.ModuleList([FiLMResidualBlock(mid, mid, c, kernel, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for d_out, d_in in reversed(list(zip(down_dims[:-1], down_dims[1:]))):
            self.up.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(2 * d_in, d_out, c, kernel, groups),
                        FiLMResidualBlock(d_out, d_out, c, kernel, groups),
                        nn.ConvTranspose1d(d_out, d_out, 4, stride=2, padding=1),
                    ]
                )
            )
        # the full-resolution skip joins at the end
        self.final = nn.Sequential(
            conv_block(2 * down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, T_p, A), t (B,) or per position (B, T_p), cond (B, cond_dim) -> predicted noise (B, T_p, A).

        T_p must be divisible by 2^(levels-1).
        """
        if self.position_steps:
            t = t if t.dim() == 2 else t[:, None].expand(-1, x.shape[1])
            per_position = self.step_embed(t.reshape(-1)).reshape(*t.shape, -1)  # (B, T_p, E)
            x = torch.cat([x, per_position], dim=-1)
            t = t.float().mean(1)  # the global embedding sees the average level
        c = torch.cat([self.step_embed(t), cond], dim=-1)
        h = x.transpose(1, 2)  # (B, A, T_p)
        skips = []
        for block1, block2, down in self.down:
            h = block2(block1(h, c), c)
            skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, c)
        for block1, block2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)  # (B, 2C, T) at this level's resolution
            h = up(block2(block1(h, c), c))
        h = torch.cat([h, skips.pop()], dim=1)
        return self.final(h).transpose(1, 2)
