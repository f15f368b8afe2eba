"""Config plumbing shared by every entry point: composing conf/ with Hydra, plain dicts from OmegaConf nodes,
one clear error for values the user must give, `package.module:function` targets."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from robodistill import students  # noqa: F401  (registers the student configs that conf/student/*.yaml extend)
from robodistill.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the Hydra config groups: every default is written there


def register_task_schema() -> None:
    """Store `task/_schema`, what every task option starts from (conf/task/*.yaml list it first): the keys every
    task has, with `kwargs` left open so that `task.kwargs.<key>=...` adds a key without Hydra's `+`."""
    node = OmegaConf.create(
        {
            "imports": [],  # env packages to import before the env is made (their import registers its id)
            "max_episode_steps": None,  # None: the id's registered limit
            "success_key": "success",  # the info key saying an episode succeeded (null: the task has none)
            "kwargs": {},  # passed to gym.make
        }
    )
    OmegaConf.set_struct(node.kwargs, False)
    ConfigStore.instance().store(group="task", name="_schema", node=node)


register_task_schema()  # at import, like the student configs: Hydra reads the ConfigStore when it composes


def group_options(group: str) -> list[str]:
    """The options of a config group (conf/<group>/*.yaml; `_base.yaml` and the like are parts, not options)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


@contextmanager
def _conf_search_path() -> Iterator[None]:
    """Hydra looking at conf/: the app's own setup inside a Hydra app (scripts/*.py), else one for this block."""
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            yield


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """conf/<config_name>.yaml composed with command-line style `overrides`, as `scripts/train.py` composes it."""
    with _conf_search_path():
        try:
            return compose(config_name, overrides=list(overrides))
        except HydraException as exc:  # e.g. an unknown option: Hydra's message lists the available ones
            raise UserError(" ".join(str(exc).split("Config search path")[0].split())) from exc


def option_defaults(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml composed (its own defaults list included) as a plain dict: the defaults a config
    built in code is completed from."""
    if name not in group_options(group):
        raise UserError(f"unknown {group} {name!r}; available: {', '.join(group_options(group))}")
    cfg = compose_config(config_name=f"{group}/{name}")
    return to_dict(cfg[group] if group in cfg else cfg)  # a `# @package _global_` option sits at the top


EXAMPLES = {  # what a value the user must give looks like, for the error that asks for it
    "task.env_id": "Pusher-v5 (or my_envs:MyEnv-v0)",
    "teacher.path": "runs/<day>/<time>_<task>_ppo",
    "teacher.target": "my_pkg.my_module:my_policy",
    "run": "runs/<day>/<time>_<task>_<algo>",
    "artifact": "runs/<day>/<time>_<task>_<algo>/export",
    "robot.read_obs": "my_robot:read_obs",
    "robot.send_action": "my_robot:send_action",
}


def require_values(cfg: DictConfig, what: str, skip: Sequence[str] = ()) -> None:
    """One error naming every `???` value of `cfg` still unset (`what`: e.g. "robot=callback"), each with an example,
    instead of letting Hydra's missing-value marker reach a later message; keys under a `skip` node are not needed."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k.split(".")[0] not in skip)
    if missing:
        given = " ".join(f"{k}=<{EXAMPLES[k]}>" if k in EXAMPLES else f"{k}=..." for k in missing)
        raise UserError(f"{what} needs {given}")


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
