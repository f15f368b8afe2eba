"""What every policy type shares: its config dataclass, the `Policy` protocol the rest of the project relies on, and
the `Exporter` that says how the type ships (the graphs, the contract's fields, torch's reference actions).

A policy type is one module: a `PolicyConfig` subclass (the defaults, written once, and the validation), a
`PolicyModule` subclass built from it, and an `Exporter`; `policies/registry.py` lists it by its `kind`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import nn

C = TypeVar("C", bound="PolicyConfig")


class ConfigError(ValueError):
    """A policy config with an unknown or missing key, or a value the policy type cannot take."""


@dataclass
class PolicyConfig:
    """The fields every policy type has; a type's config adds its own, with their defaults."""

    kind: ClassVar[str]
    obs_keys: list[str]  # the observations the policy reads (keys of the task's shape_meta["obs"])

    def __post_init__(self) -> None:
        """Check the values together (ConfigError); a type's config extends it."""
        if not self.obs_keys:
            raise ConfigError("obs_keys must name at least one observation")

    @classmethod
    def keys(cls) -> list[str]:
        """The config's keys, in the order they are declared."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """The config of `values` (a saved `policy_config` or a composed `student` node, without kind/shape_meta);
        ConfigError, listing the valid keys, for a key this type does not have or a required one it lacks."""
        unknown = [k for k in values if k not in cls.keys()]
        if unknown:
            raise ConfigError(
                f"a {cls.kind} policy has no key {', '.join(map(repr, unknown))}; valid keys: {', '.join(cls.keys())}"
            )
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and _required(f)]
        if missing:
            raise ConfigError(f"a {cls.kind} policy needs {', '.join(missing)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples), as checkpoints and Hydra store them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@runtime_checkable
class Policy(Protocol):
    """What training, evaluation, teachers and export use of every policy type. A one-step policy also has
    `act(obs, deterministic) -> (actions (B, A), log-probs)`; a chunked one acts through `policies.samplers`."""

    kind: str
    shape_meta: dict[str, Any]
    obs_keys: list[str]
    action_dim: int

    @property
    def config(self) -> dict[str, Any]: ...

    def fit_normalizers(self, obs: dict[str, np.ndarray], *args: Any) -> None: ...

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class PolicyModule(nn.Module):
    """A network built from its config: `Type(shape_meta, obs_keys, **fields)` or `Type.from_config(cfg,
    shape_meta)`; `config` is the config plus kind and shapes, what a checkpoint stores to rebuild it."""

    kind: ClassVar[str]  # the Config's
    Config: ClassVar[type[PolicyConfig]]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.kind = cls.Config.kind

    def __init__(self, shape_meta: dict[str, Any], obs_keys: list[str], **fields: Any):
        super().__init__()
        self.cfg = self.Config.from_dict({"obs_keys": list(obs_keys), **fields})
        self.shape_meta = shape_meta
        self.obs_keys = list(self.cfg.obs_keys)
        self.action_dim = int(shape_meta["action"]["shape"][0])

    @classmethod
    def from_config(cls, cfg: PolicyConfig, shape_meta: dict[str, Any]) -> PolicyModule:
        return cls(shape_meta, **cfg.to_dict())

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved next to its state_dict)."""
        return {"kind": self.kind, "shape_meta": self.shape_meta, **self.cfg.to_dict()}

    @property
    def device(self) -> torch.device:
        """Where the network's weights live (`.to(device)` moves them, its noise tables and what it draws); looked up
        once per move, not per call (walking the parameters costs more than a small MLP's forward)."""
        if getattr(self, "_device", None) is None:
            self._device = next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device
        return self._device

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> PolicyModule:
        self._device = None  # `.to`, `.cuda`, `.cpu` pass here: the next `device` looks again
        return super()._apply(fn, *args, **kwargs)

    def tensors(self, obs: Mapping[str, Any], keys: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Observations (numpy arrays or tensors) of `keys` (default `obs_keys`) as tensors on the network's device."""
        device = self.device
        return {
            k: torch.as_tensor(np.asarray(obs[k]) if not torch.is_tensor(obs[k]) else obs[k], device=device)
            for k in (keys or self.obs_keys)
        }


# ---- export -------------------------------------------------------------------------------------------------------
class Graph(NamedTuple):
    """One graph an artifact ships: the module to trace, its input and output names, and example inputs (the
    recorded observations, sampled noise and steps) that parity is checked on."""

    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    feeds: dict[str, np.ndarray]


ONE_STEP = {"obs_horizon": 1, "pred_horizon": 1, "action_horizon": 1}


class Exporter:
    """How a policy type ships (robodistill/export runs it): one graph from observations to a chunk of one action by
    default; a type overrides what differs. The torch-free runtime runs the artifact by the contract's kind."""

    parity_samples: int | None = None  # cap on the runtime parity samples (None: all recorded observations)

    def graphs(self, policy: Any, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Graph]:
        raise NotImplementedError

    def contract(self, policy: Any, sampler_steps: int) -> dict[str, Any]:
        """The contract's fields for this type: `chunk` sizes and anything the runtime's step reads."""
        return {"chunk": dict(ONE_STEP)}

    def recording_sampler(self, sampler_steps: int) -> dict[str, Any] | None:
        """How the student samples while driving its task to record observations (a chunk policy's sampler)."""
        return None

    def noise_shape(self, policy: Any, n: int) -> tuple[int, ...] | None:
        """The shape of the noise the runtime draws for `n` samples, or None for a policy that draws none."""
        return None

    @torch.inference_mode()
    def reference(
        self, policy: Any, obs: dict[str, np.ndarray], noise: np.ndarray | None, contract: dict[str, Any]
    ) -> np.ndarray:
        """The chunks (N, T, A) torch gives: what the runtime's whole path must reproduce."""
        return policy.act(obs, deterministic=True)[0][:, None]

    def ties(self, policy: Any, obs: dict[str, np.ndarray], tol: float) -> np.ndarray | None:
        """(N, A) True where torch and the runtime may break a tie either way (a token policy's argmax)."""
        return None
