"""Student and teacher networks with their normalisers; torch + numpy only. One module per policy type, listed in
`policies.registry` by its kind."""

from __future__ import annotations

from policies.base import ConfigError, Exporter, Graph, Policy, PolicyConfig, PolicyModule
from policies.consistency import ConsistencyConfig, ConsistencyPolicy
from policies.diffusion_policy import DiffusionConfig, DiffusionPolicy
from policies.gaussian import GaussianConfig, GaussianPolicy
from policies.registry import POLICY_TYPES, PolicyType, build_policy, chunked, policy_config, policy_type
from policies.vla import VLAConfig, VLAPolicy

__all__ = [
    "POLICY_TYPES",
    "ConfigError",
    "ConsistencyConfig",
    "ConsistencyPolicy",
    "DiffusionConfig",
    "DiffusionPolicy",
    "Exporter",
    "GaussianConfig",
    "GaussianPolicy",
    "Graph",
    "Policy",
    "PolicyConfig",
    "PolicyModule",
    "PolicyType",
    "VLAConfig",
    "VLAPolicy",
    "build_policy",
    "chunked",
    "policy_config",
    "policy_type",
]
