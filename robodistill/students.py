"""The `student` config group: each policy type's config dataclass is the defaults of its options.

Importing this module stores every type's defaults in Hydra's ConfigStore as `student/<kind>_config`; an option
(conf/student/mlp.yaml) lists its type's entry first and keeps only its name and what differs, so
`student=mlp student.hidden=[64,64]` works although mlp.yaml names no `hidden`. Whatever composes `config` imports it
first (robodistill.config does, and the Hydra apps in scripts/). The node is left open so that a misspelt key
reaches `student_config`, which refuses it in one line listing the valid keys (Hydra's own refusal is a stack of
lines without them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from policies import POLICY_TYPES, ConfigError, PolicyConfig, policy_config
from robodistill.errors import UserError


def defaults(config: type[PolicyConfig]) -> dict[str, Any]:
    """{"kind": ..., field: default} of a config dataclass; MISSING (???) for a field without a default."""
    values: dict[str, Any] = {"kind": config.kind}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        else:
            values[f.name] = MISSING
    return values


def register_student_configs() -> None:
    """Store `student/<kind>_config` for every registered policy type (idempotent)."""
    store = ConfigStore.instance()
    for kind, entry in POLICY_TYPES.items():
        node = OmegaConf.create(defaults(entry.config), flags={"struct": False})
        store.store(group="student", name=f"{kind}_config", node=node)


def student_config(student: Mapping[str, Any]) -> PolicyConfig:
    """The typed config of a composed `student` node (or a plain dict with `kind`); one UserError line naming the
    option and the valid keys for a key its type does not have, or a value it cannot take."""
    values = OmegaConf.to_container(student, resolve=True) if OmegaConf.is_config(student) else dict(student)
    name = values.pop("name", values.get("kind"))
    try:
        return policy_config(values)
    except ConfigError as exc:
        raise UserError(f"student={name}: {exc}") from exc


register_student_configs()  # at import: Hydra reads the ConfigStore when it composes
