"""Make a task's env from its config: robodistill tasks by name, any other Gymnasium id generically."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from omegaconf import MISSING

import envs
from robodistill.errors import UserError


def is_robodistill_task(env_id: str) -> bool:
    return env_id in envs.TASKS


def make_env(task: Mapping[str, Any], obs_mode: str = "state", render_mode: str | None = None) -> gym.Env:
    """One env for `task` (a config with `env_id`, optional `kwargs` and `max_episode_steps`)."""
    env_id = task.get("env_id")
    if not env_id or env_id == MISSING:  # Hydra's `???` (conf/task/gym.yaml) never reaches a message
        raise UserError("task=gym needs task.env_id=<a registered Gymnasium id>, e.g. task=gym task.env_id=Pusher-v5")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"unknown task {env_id!r}.{hint} robodistill tasks: {', '.join(envs.TASKS)}; "
            "any registered Gymnasium id works with task=gym task.env_id=<id>."
        )
    kwargs = dict(task.get("kwargs") or {})
    if is_robodistill_task(env_id):
        kwargs["obs_mode"] = obs_mode
    elif obs_mode != "state":
        raise UserError(f"{env_id} is a generic Gymnasium task: it offers only its own observation ('state')")
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    steps = task.get("max_episode_steps")
    try:
        return gym.make(env_id, max_episode_steps=steps, **kwargs) if steps else gym.make(env_id, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot make {env_id} with {kwargs}: {exc}") from exc
    except gym.error.DependencyNotInstalled as exc:
        raise UserError(f"{env_id} needs a package that is not installed: {exc}") from exc


def env_fns(
    task: Mapping[str, Any], n: int, obs_mode: str = "state", render_mode: str | None = None
) -> list[Callable[[], gym.Env]]:
    """n env constructors for a Gymnasium vector env."""
    return [lambda: make_env(task, obs_mode, render_mode) for _ in range(n)]


def shape_meta(env: gym.Env) -> dict[str, Any]:
    """The task's one schema of shapes (obs keys, their shape and type; action shape)."""
    base = env.unwrapped
    if isinstance(base, envs.TableTopEnv):
        return base.shape_meta
    if not isinstance(env.action_space, spaces.Box):
        raise UserError(f"robodistill students need continuous (Box) actions; this task has {env.action_space}")
    space = env.observation_space
    if isinstance(space, spaces.Box):
        obs = {"state": {"shape": list(space.shape), "type": "low_dim"}}
    elif isinstance(space, spaces.Dict):
        obs = {}
        for k, s in space.spaces.items():
            image = s.dtype == np.uint8 and len(s.shape) == 3
            obs[k] = {"shape": list(s.shape), "type": "rgb" if image else "low_dim"}
    else:
        raise UserError(f"unsupported observation space {space}")
    return {"obs": obs, "action": {"shape": list(env.action_space.shape)}}


def env_meta(env: gym.Env, task: Mapping[str, Any], obs_mode: str) -> dict[str, Any]:
    """robomimic's `env_args` attribute: enough to re-create the env."""
    return {
        "env_name": task.get("env_id"),
        "type": 4,  # robomimic's EnvType.GYM_TYPE
        "env_kwargs": {**dict(task.get("kwargs") or {}), "obs_mode": obs_mode},
        "shape_meta": shape_meta(env),
    }
