"""Diffusion policy: an observation history conditions a 1-D UNet that denoises an action chunk.

Plain DP (`noise_levels="uniform"`) predicts T_p actions starting T_o - 1 steps in the past and executes T_a of
them from the current step on. The streaming variant (`noise_levels="sdp"`) is trained with one noise level per
horizon position and predicts T_p actions from the current step on, so its rolling buffer shifts by whole chunks.
Actions and low-dim observations are normalised to [-1, 1]; the normalisers are saved with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policies.base import ConfigError, Exporter, Graph, PolicyConfig, PolicyModule
from policies.diffusion import ConditionalUnet1D, NoiseSchedule
from policies.encoders import ObservationEncoder, check_image_encoder, observed
from policies.normalizer import Normalizer

NOISE_LEVELS = ("uniform", "sdp")


@dataclass
class DiffusionConfig(PolicyConfig):
    """student=diffusion | diffusion_rgb | sdp: T_o observations condition a 1-D UNet denoising T_p actions, T_a of
    them executed; DDPM with `num_train_steps` training steps."""

    kind: ClassVar[str] = "diffusion"
    obs_horizon: int = 2
    pred_horizon: int = 16
    action_horizon: int = 8
    num_train_steps: int = 100
    down_dims: list[int] = field(default_factory=lambda: [32, 64])  # sized for a CPU; the paper's: [64, 128, 256]
    step_embed_dim: int = 32
    kernel: int = 5
    image_feature_dim: int = 64
    encoder: str = "cnn"  # each camera's image encoder: a name of policies.vision.ENCODERS
    shift: int = 4  # random-shift augmentation of each image in training (pixels; 0: off)
    encoder_options: dict[str, Any] = field(default_factory=dict)  # the encoder's own options (e.g. head, width)
    noise_levels: str = "uniform"  # uniform: plain DP | sdp: per-position levels (streaming diffusion)
    constant_level_prob: float = 0.2  # sdp: one level for the whole chunk with this probability
    gripper_scale: float = 1.0  # 0.1: scale the gripper in the training data, for sampler=rti sampler.gripper=scale

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_levels not in NOISE_LEVELS:
            raise ConfigError(f"noise_levels must be one of {NOISE_LEVELS}, got {self.noise_levels!r}")
        check_image_encoder(self.encoder, self.shift, self.encoder_options)
        if min(self.obs_horizon, self.pred_horizon, self.action_horizon) < 1:
            raise ConfigError("obs_horizon, pred_horizon and action_horizon must be >= 1")
        first = self.obs_horizon - 1 if self.noise_levels == "uniform" else 0
        if first + self.action_horizon > self.pred_horizon:
            raise ConfigError(
                f"pred_horizon {self.pred_horizon} must cover the {first} past steps and the "
                f"action_horizon {self.action_horizon} executed ones"
            )
        if self.pred_horizon % 2 ** (len(self.down_dims) - 1):
            raise ConfigError(
                f"pred_horizon {self.pred_horizon} must be divisible by 2^{len(self.down_dims) - 1} "
                f"for a UNet with {len(self.down_dims)} levels"
            )
        if self.noise_levels == "sdp" and (
            self.pred_horizon % self.action_horizon or self.num_train_steps % (self.pred_horizon // self.action_horizon)
        ):
            raise ConfigError(
                "sdp needs pred_horizon to be whole chunks of action_horizon, and num_train_steps "
                "divisible by the number of chunks"
            )


class DiffusionPolicy(PolicyModule):
    """eps_theta(x_t, t, features(o_{t-T_o+1..t})) over normalised action chunks (B, T_p, A)."""

    Config = DiffusionConfig

    def __init__(self, shape_meta: dict[str, Any], obs_keys: list[str], **fields: Any):
        super().__init__(shape_meta, obs_keys, **fields)
        cfg: DiffusionConfig = self.cfg
        obs_meta = observed(shape_meta, self.obs_keys)
        self.obs_horizon, self.pred_horizon, self.action_horizon = cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon
        self.num_train_steps = cfg.num_train_steps
        self.noise_levels, self.constant_level_prob = cfg.noise_levels, cfg.constant_level_prob
        self.gripper_scale = float(cfg.gripper_scale)
        self.gripper_dims = list(shape_meta["action"].get("gripper_dims", []))
        self.encoder = ObservationEncoder(obs_meta, cfg.image_feature_dim, cfg.encoder, cfg.shift, cfg.encoder_options)
        self.action_normalizer = Normalizer((self.action_dim,))
        self.net = ConditionalUnet1D(
            self.action_dim,
            cfg.obs_horizon * self.encoder.out_dim,
            tuple(cfg.down_dims),
            cfg.step_embed_dim,
            cfg.kernel,
            position_steps=cfg.noise_levels == "sdp",
        )
        self.schedule = NoiseSchedule(cfg.num_train_steps)
        self.eval()  # built to act: no image augmentation until a fit switches it to training mode

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
        chunk = torch.arange(self.pred_horizon, device=offset.device) // self.action_horizon
        return offset[:, None] + chunk[None] * (self.num_train_steps // chunks)

    def training_levels(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Noise levels for a training batch: (B,) for plain DP; (B, T_p) for SDP's constant/chunk-wise mixture."""
        n = self.num_train_steps
        draw = {"generator": generator, "device": device}
        if self.noise_levels == "uniform":
            return torch.randint(0, n, (batch,), **draw)
        constant = torch.rand(batch, **draw) < self.constant_level_prob
        level = torch.randint(0, n, (batch,), **draw)[:, None].expand(-1, self.pred_horizon)
        offset = torch.randint(0, n // (self.pred_horizon // self.action_horizon), (batch,), **draw)
        return torch.where(constant[:, None], level, self.sdp_levels(offset))

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """epsilon-prediction MSE on action chunks target (B, T_p, A) noised at random levels."""
        x0 = self.normalize_actions(target)
        noise = torch.randn_like(x0)
        t = self.training_levels(len(x0), device=x0.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        mse = ((self.eps(x_t, t, self.condition(obs)) - noise) ** 2).mean()
        return mse, {"mse": mse.item()}


def ddim_denoise(policy: DiffusionPolicy, x: torch.Tensor, cond: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """Deterministic DDIM steps along a descending step list, ending on the clean chunk."""
    for t, t_prev in zip(timesteps, [*timesteps[1:], -1]):
        x = policy.schedule.ddim_step(policy.eps(x, torch.full((len(x),), t, device=x.device), cond), t, t_prev, x)
    return x


# ---- export -------------------------------------------------------------------------------------------------------
class EncoderGraph(nn.Module):
    """Observation histories (B, T_o, ...) -> the FiLM condition (B, C)."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.condition(dict(zip(self.keys, obs)))


class DenoiserGraph(nn.Module):
    """(x_t (B, T_p, A), t (B,), cond (B, C)) -> predicted noise (B, T_p, A)."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.policy.eps(x, t, cond)


class DecoderGraph(nn.Module):
    """A clean normalised chunk (B, T_p, A) -> the executed actions (B, T_a, A), un-normalised."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.policy
        return p.unnormalize_actions(x)[:, p.first_action : p.first_action + p.action_horizon]


class ChunkExporter(Exporter):
    """A diffusion-family policy: observation histories in, chunks of T_a actions out, from noise the runtime draws."""

    def contract(self, policy: Any, sampler_steps: int) -> dict[str, Any]:
        return {
            "chunk": {
                "obs_horizon": int(policy.obs_horizon),
                "pred_horizon": int(policy.pred_horizon),
                "action_horizon": int(policy.action_horizon),
            }
        }

    def noise_shape(self, policy: Any, n: int) -> tuple[int, ...]:
        return (n, policy.pred_horizon, policy.action_dim)


class DiffusionExporter(ChunkExporter):
    """Three graphs, the observation encoder, the noise predictor and the un-normaliser; the runtime runs the DDIM
    loop between them along the contract's step list."""

    parity_samples = 200  # each sample is a whole sampler loop

    def graphs(self, policy: Any, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Graph]:
        keys = sorted(policy.obs_keys)
        chunk = self.noise_shape(policy, len(obs[keys[0]]))
        with torch.inference_mode():
            cond = EncoderGraph(policy)(*[torch.as_tensor(obs[k]) for k in keys]).numpy()
        x = rng.standard_normal(chunk).astype(np.float32)
        t = rng.integers(0, policy.num_train_steps, chunk[0]).astype(np.int64)
        clean = np.clip(rng.standard_normal(chunk), -1, 1).astype(np.float32)
        return {
            "encoder": Graph(EncoderGraph(policy), keys, ["cond"], {k: obs[k] for k in keys}),
            "denoiser": Graph(DenoiserGraph(policy), ["x", "t", "cond"], ["eps"], {"x": x, "t": t, "cond": cond}),
            "decoder": Graph(DecoderGraph(policy), ["x"], ["actions"], {"x": clean}),
        }

    def contract(self, policy: Any, sampler_steps: int) -> dict[str, Any]:
        sampler = {
            "kind": "ddim",
            "timesteps": policy.schedule.ddim_timesteps(int(sampler_steps)),
            "alphas_cumprod": policy.schedule.alphas_cumprod.tolist(),
        }
        return {**super().contract(policy, sampler_steps), "sampler": sampler}

    def recording_sampler(self, sampler_steps: int) -> dict[str, Any]:
        return {"kind": "ddim", "num_inference_steps": int(sampler_steps)}  # the sampler the runtime runs

    @torch.inference_mode()
    def reference(
        self, policy: Any, obs: dict[str, np.ndarray], noise: np.ndarray | None, contract: dict[str, Any]
    ) -> np.ndarray:
        cond = policy.condition({k: torch.as_tensor(obs[k]) for k in policy.obs_keys})
        x = ddim_denoise(policy, torch.as_tensor(noise), cond, contract["sampler"]["timesteps"])
        return DecoderGraph(policy)(x).numpy()
