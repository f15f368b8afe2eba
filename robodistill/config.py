"""Config plumbing shared by every entry point: plain dicts from OmegaConf nodes, `package.module:function` targets."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robodistill.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config groups: every default is written there


def group_options(group: str) -> list[str]:
    """The options of a config group (conf/<group>/*.yaml)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def option_defaults(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml as a plain dict: the defaults a config built in code is completed from."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown {group} {name!r}; available: {', '.join(group_options(group))}")
    return to_dict(OmegaConf.load(path))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, resolved dict of a config node (a dict is copied)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def load_callable(target: str, what: str = "teacher.target") -> Callable:
    """Import `package.module:function` (the config key `what` names it in errors)."""
    module, _, name = str(target).partition(":")
    if not module or not name:
        raise UserError(f"{what} must look like 'package.module:function', got {target!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import {what} {target!r}: {exc}") from exc
