"""Every policy type by its `kind`: its class (built from its config dataclass) and its exporter.

A new policy type is one module (config, network, exporter) plus one line here; the torch-free runtime runs its
artifact by the same `kind` (robodistill/runtime/artifact.py names the step that runs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.base import ConfigError, Exporter, PolicyConfig, PolicyModule
from policies.consistency import ConsistencyExporter, ConsistencyPolicy
from policies.diffusion_policy import DiffusionExporter, DiffusionPolicy
from policies.gaussian import GaussianExporter, GaussianPolicy
from policies.vla import VLAExporter, VLAPolicy


@dataclass(frozen=True)
class PolicyType:
    """A registry entry: the class (`policy.Config` is its config dataclass), how it ships, and how it acts."""

    policy: type[PolicyModule]
    exporter: Exporter
    chunked: bool  # acts in action chunks from an observation history, through a sampler (policies/samplers.py)
    teacher: str  # the teacher=... kind that labels with a checkpoint of this type

    @property
    def config(self) -> type[PolicyConfig]:
        return self.policy.Config


POLICY_TYPES: dict[str, PolicyType] = {
    t.policy.kind: t
    for t in (
        PolicyType(GaussianPolicy, GaussianExporter(), chunked=False, teacher="checkpoint"),
        PolicyType(DiffusionPolicy, DiffusionExporter(), chunked=True, teacher="diffusion"),
        PolicyType(ConsistencyPolicy, ConsistencyExporter(), chunked=True, teacher="diffusion"),
        PolicyType(VLAPolicy, VLAExporter(), chunked=False, teacher="vla"),
    )
}


def policy_type(kind: str) -> PolicyType:
    """The entry of `kind`; ConfigError naming the known kinds."""
    if kind not in POLICY_TYPES:
        raise ConfigError(f"unknown policy kind {kind!r}; known: {', '.join(POLICY_TYPES)}")
    return POLICY_TYPES[kind]


def chunked(policy: Any) -> bool:
    """Whether `policy` acts in chunks through a sampler (False for anything the registry does not list)."""
    entry = POLICY_TYPES.get(getattr(policy, "kind", None))
    return entry is not None and entry.chunked


def policy_config(values: dict[str, Any]) -> PolicyConfig:
    """The typed config of `values` ({"kind": ..., **fields}, e.g. a composed `student` node less its name)."""
    fields = dict(values)
    return policy_type(fields.pop("kind")).config.from_dict(fields)


def build_policy(config: dict[str, Any]) -> PolicyModule:
    """Rebuild a policy from the `config` it saved next to its weights ({"kind", "shape_meta", **fields})."""
    fields = dict(config)
    meta = fields.pop("shape_meta")
    return policy_type(fields["kind"]).policy.from_config(policy_config(fields), meta)
