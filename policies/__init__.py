"""Student and teacher networks with their normalisers; torch + numpy only."""

from __future__ import annotations

from typing import Any

from torch import nn

from policies.consistency import ConsistencyPolicy
from policies.diffusion_policy import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.vla import VLAPolicy

POLICIES: dict[str, type[nn.Module]] = {
    "gaussian": GaussianPolicy,
    "diffusion": DiffusionPolicy,
    "consistency": ConsistencyPolicy,
    "vla": VLAPolicy,
}


def build_policy(config: dict[str, Any]) -> nn.Module:
    """Rebuild a policy from the `config` it saved next to its weights."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    if kind not in POLICIES:
        raise ValueError(f"unknown policy kind {kind!r}; known: {', '.join(POLICIES)}")
    return POLICIES[kind](**cfg)


__all__ = ["POLICIES", "ConsistencyPolicy", "DiffusionPolicy", "GaussianPolicy", "VLAPolicy", "build_policy"]
