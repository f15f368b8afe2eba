"""Make a task's env from its config: robodistill tasks by name, any other Gymnasium id generically.

A task config names `env_id` (a registered id, or gymnasium's `package.module:Env-id`), the env packages to import
first (`imports`: packages whose import registers their ids), `kwargs`, `max_episode_steps`, and `success_key`: the
info key that says an episode succeeded. Every env made here reports `info["success"]` one way: True from the first
step at which the task's key was true until the episode ends; absent if the task reports no success.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from omegaconf import MISSING

import envs
from robodistill.errors import UserError

SUCCESS = "success"  # the info key every env made here reports the episode's success under


class EpisodeSuccess(gym.Wrapper):
    """`info["success"]`: whether the episode has succeeded at any step so far, read from `info[key]` (the task's own
    rule); absent while the task has never reported `key` this episode, and always when `key` is None."""

    def __init__(self, env: gym.Env, key: str | None = SUCCESS):
        super().__init__(env)
        self.key, self.success = key, None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.success = None
        return obs, self._report(info)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._report(info)

    def _report(self, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        value = info.pop(self.key, None) if self.key is not None else None
        info.pop(SUCCESS, None)  # the env's own "success" key means nothing when the task's rule is another key
        if value is not None:
            self.success = bool(self.success) or bool(value)
        if self.success is not None:
            info[SUCCESS] = self.success
        return info


def import_env_packages(task: Mapping[str, Any]) -> str:
    """Import the task's env packages (`imports`, and the module of a `module:Env-id`), so that ids they register
    exist; returns the bare Gymnasium id."""
    env_id = task.get("env_id")
    if not env_id or env_id == MISSING:  # Hydra's `???` (conf/task/gym.yaml) never reaches a message
        raise UserError("task=gym needs task.env_id=<a registered Gymnasium id>, e.g. task=gym task.env_id=Pusher-v5")
    module, _, bare_id = str(env_id).rpartition(":")
    imports = list(task.get("imports") or [])
    for name in [*imports, module] if module else imports:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an env package failing at import: its own error, in one line
            raise UserError(f"cannot import env package {name!r} (task.imports): {type(exc).__name__}: {exc}") from exc
    return bare_id


def make_env(
    task: Mapping[str, Any], obs_mode: str = "state", render_mode: str | None = None, render_size: int | None = None
) -> gym.Env:
    """One env for `task` (a config with `env_id`; optional `imports`, `kwargs`, `max_episode_steps`,
    `success_key`), its success reported as `info["success"]` (EpisodeSuccess). `render_size` sets a robodistill
    task's rgb_array frames (square); another task renders at its own size."""
    env_id = import_env_packages(task)
    spec = gym.registry.get(env_id)
    if spec is None:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"unknown task {env_id!r}.{hint} robodistill tasks: {', '.join(envs.TASKS)}; any registered Gymnasium "
            "id works with task=gym task.env_id=<id>, and an id a package registers on import with "
            "task.imports=[<package>] (or task.env_id=<package>:<id>)."
        )
    if spec.entry_point is None:
        raise UserError(
            f"{env_id} is registered only as a vector env (gym.make_vec); robodistill steps single envs: register a "
            "single-env entry point for it"
        )
    kwargs = dict(task.get("kwargs") or {})
    if is_robodistill_task(env_id):
        kwargs["obs_mode"] = obs_mode
    elif obs_mode != "state":
        raise UserError(f"{env_id} is a generic Gymnasium task: it offers only its own observation ('state')")
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if render_size is not None and is_robodistill_task(env_id):
        kwargs["render_size"] = int(render_size)
    steps = task.get("max_episode_steps")
    try:
        env = gym.make(env_id, max_episode_steps=steps, **kwargs) if steps else gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise UserError(f"{env_id} needs a package that is not installed: {exc}") from exc
    except (TypeError, ValueError, gym.error.Error) as exc:
        raise UserError(f"cannot make {env_id} with {kwargs}: {type(exc).__name__}: {exc}") from exc
    return EpisodeSuccess(env, task.get("success_key", SUCCESS))


def is_robodistill_task(env_id: str) -> bool:
    return env_id.rpartition(":")[2] in envs.TASKS


def task_for_keys(task: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """`task` whose env renders only the cameras read: a robodistill task's `kwargs.cameras` becomes the cameras of
    the image keys (`<camera>_rgb`) among the observation `keys` read (none: nothing is rendered). UserError for a
    camera the task does not have, or one left out of `kwargs.cameras`. Other Gymnasium tasks are returned as they
    are."""
    task = dict(task)
    env_id = str(task.get("env_id"))
    if not is_robodistill_task(env_id):
        return task
    kwargs = dict(task.get("kwargs") or {})
    offered = kwargs.get("cameras", envs.CAMERAS)
    if isinstance(offered, str) or not isinstance(offered, Iterable):
        raise UserError(f"task.kwargs.cameras={offered!r}: give a list of cameras, e.g. task.kwargs.cameras=[front]")
    offered = list(offered)
    cameras = (
        f"its cameras: {', '.join(envs.CAMERAS)} (observation keys {', '.join(map(envs.image_key, envs.CAMERAS))})"
    )
    unknown = [c for c in offered if c not in envs.CAMERAS]
    if unknown:
        raise UserError(f"task.kwargs.cameras={offered} names cameras {env_id} does not have: {unknown}; {cameras}")
    read = envs.cameras_read(keys)
    absent = [c for c in read if c not in envs.CAMERAS]
    if absent:
        wanted = ", ".join(map(envs.image_key, absent))
        raise UserError(f"obs_keys read {wanted}, but {env_id} has no camera {', '.join(map(repr, absent))}; {cameras}")
    left_out = [c for c in read if c not in offered]
    if left_out:
        wanted = ", ".join(map(envs.image_key, left_out))
        raise UserError(
            f"obs_keys read {wanted}, but task.kwargs.cameras={offered}: add the camera there or drop the key from "
            "obs_keys"
        )
    kwargs["cameras"] = [c for c in offered if c in read]
    return {**task, "kwargs": kwargs}


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


def sibling_tasks(task: Mapping[str, Any], env_ids: Iterable[str] | None) -> list[dict[str, Any]]:
    """`task`, then each other env id of `env_ids` with `task`'s settings (control mode, image size, cameras): the
    tasks of a multi-task run (algo.tasks)."""
    main = dict(task)
    ids = [main["env_id"], *(t for t in env_ids or [] if t != main["env_id"])]
    return [main if i == main["env_id"] else {**main, "name": i.split("/")[-1], "env_id": i} for i in ids]
