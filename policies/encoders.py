"""Observation encoders: low-dim vectors through a normaliser, each camera image through its own image encoder
(`policies.vision`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policies.base import ConfigError
from policies.normalizer import Normalizer
from policies.vision import ENCODERS, encoder_options, make_encoder


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


def check_image_encoder(encoder: str, shift: int, options: Any) -> None:
    """ConfigError for an image encoder config that cannot be built: an unknown `encoder` (the choices listed), a
    negative `shift`, or `options` the encoder does not take (its options listed)."""
    if encoder not in ENCODERS:
        raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    if not isinstance(shift, int) or shift < 0:
        raise ConfigError(f"shift must be a whole number of pixels >= 0 (0: no augmentation), got {shift!r}")
    if not isinstance(options, dict):
        raise ConfigError(f"encoder_options must be a mapping of option to value, got {options!r}")
    accepted = [o for o in encoder_options(encoder) if o != "shift"]  # the shift is the config's own `shift`
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"encoder_options: the {encoder} image encoder has no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted)}"
        )


class ObservationEncoder(nn.Module):
    """Encodes a dict of observations (the keys in `obs_meta`) into one feature vector: each camera image (type "rgb")
    through its own `encoder` (a name of `policies.vision.ENCODERS`, with `shift` pixels of random shift in training
    and the encoder's own `encoder_options`), each low-dim vector through its normaliser."""

    def __init__(
        self,
        obs_meta: dict[str, dict[str, Any]],
        image_feature_dim: int = 128,
        encoder: str = "cnn",
        shift: int = 4,
        encoder_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.keys = sorted(obs_meta)
        self.images = nn.ModuleDict()
        self.normalizers = nn.ModuleDict()
        self.out_dim = 0
        for k in self.keys:
            shape = tuple(obs_meta[k]["shape"])
            if obs_meta[k].get("type") == "rgb":
                self.images[k] = make_encoder(encoder, shape, image_feature_dim, shift=shift, **(encoder_options or {}))
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
