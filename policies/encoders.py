"""Observation encoders: low-dim vectors through a normaliser, camera images through a small CNN."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policies.normalizer import Normalizer


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with activations between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def observed(shape_meta: dict[str, Any], obs_keys: list[str]) -> dict[str, dict[str, Any]]:
    """The task's shapes of the observations a policy reads; ValueError if the task lacks one."""
    missing = [k for k in obs_keys if k not in shape_meta["obs"]]
    if missing:
        raise ValueError(f"student observes {missing}, but the task offers only {sorted(shape_meta['obs'])}")
    return {k: shape_meta["obs"][k] for k in obs_keys}


class ImageEncoder(nn.Module):
    """Small CNN for uint8 (B, H, W, 3) images -> (B, feature_dim); spatial-softmax-free, fast on a CPU."""

    def __init__(
        self, image_shape: tuple[int, int, int], feature_dim: int = 128, channels: tuple[int, ...] = (32, 64, 64)
    ):
        super().__init__()
        h, w, c = image_shape
        convs: list[nn.Module] = []
        in_c = c
        for i, out_c in enumerate(channels):
            convs += [nn.Conv2d(in_c, out_c, kernel_size=5 if i == 0 else 3, stride=2, padding=1), nn.ReLU()]
            in_c = out_c
        self.conv = nn.Sequential(*convs)
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        return self.head(self.conv(x))


class ObservationEncoder(nn.Module):
    """Encodes a dict of observations (the keys in `obs_meta`) into one feature vector."""

    def __init__(self, obs_meta: dict[str, dict[str, Any]], image_feature_dim: int = 128):
        super().__init__()
        self.keys = sorted(obs_meta)
        self.images = nn.ModuleDict()
        self.normalizers = nn.ModuleDict()
        self.out_dim = 0
        for k in self.keys:
            shape = tuple(obs_meta[k]["shape"])
            if obs_meta[k].get("type") == "rgb":
                self.images[k] = ImageEncoder(shape, image_feature_dim)
                self.out_dim += image_feature_dim
            else:
                self.normalizers[k] = Normalizer(shape)
                self.out_dim += shape[0]

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = []
        for k in self.keys:
            if k in self.images:
                feats.append(self.images[k](obs[k]))
            else:
                feats.append(self.normalizers[k](obs[k].float()))
        return torch.cat(feats, dim=-1)
