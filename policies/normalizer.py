"""Normalisers that live inside a policy's state_dict, so a checkpoint runs without the dataset."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """Per-feature affine map x -> (x - shift) / scale, fitted from data and saved with the weights."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("shift", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    @torch.no_grad()
    def fit(self, data: np.ndarray, mode: str = "gaussian", eps: float = 1e-2) -> None:
        """Fit to samples (N, *shape): `gaussian` gives zero mean, unit std; `limits` maps [min, max] to [-1, 1]."""
        x = torch.as_tensor(np.asarray(data, dtype=np.float32)).reshape(-1, *self.shift.shape)
        if mode == "gaussian":
            self.shift.copy_(x.mean(0))
            self.scale.copy_(x.std(0).clamp_min(eps))
        elif mode == "limits":
            lo, hi = x.min(0).values, x.max(0).values
            self.shift.copy_((hi + lo) / 2)
            self.scale.copy_(((hi - lo) / 2).clamp_min(eps))
        else:
            raise ValueError(f"unknown normaliser mode {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.shift
