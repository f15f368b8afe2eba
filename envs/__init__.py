"""robodistill's MuJoCo manipulation tasks, registered with Gymnasium as `robodistill/<Task>-v0`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from envs.rendering import RenderingUnavailable, import_mujoco

import_mujoco()  # fails here, with the Debian package to install, if the GL backend is missing

from envs.base import (  # noqa: E402
    IMAGE_SUFFIX,
    OBS_MODES,
    PROPRIO_KEY,
    REWARD_MODES,
    ScriptedExpert,
    TableTopEnv,
    cameras_read,
    image_key,
)
from envs.robot import CAMERAS, CONTROL_MODES  # noqa: E402

# id -> (entry point, max episode steps)
TASKS: dict[str, tuple[str, int]] = {
    "robodistill/Reach-v0": ("envs.reach:ReachEnv", 50),
    "robodistill/PushCube-v0": ("envs.push_cube:PushCubeEnv", 60),
    "robodistill/PickCube-v0": ("envs.pick_cube:PickCubeEnv", 60),
    "robodistill/StackCube-v0": ("envs.stack_cube:StackCubeEnv", 80),
    "robodistill/PushT-v0": ("envs.push_t:PushTEnv", 150),
}

for _id, (_entry, _steps) in TASKS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, max_episode_steps=_steps)


def instruction_templates() -> list[str]:
    """Every robodistill task's instruction templates (what a VLA's word vocabulary is built from)."""
    out = []
    for entry, _ in TASKS.values():
        module, _, name = entry.partition(":")
        out += list(getattr(importlib.import_module(module), name).instruction_templates)
    return out


def make_expert(env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    """Scripted privileged expert for a robodistill task: a callable mapping state obs (D,)/(N, D) to actions."""
    base = env.unwrapped
    if not isinstance(base, TableTopEnv):
        raise TypeError(
            f"no scripted expert for {type(base).__name__}: scripted experts exist for {', '.join(TASKS)}; "
            "use another teacher (e.g. teacher=callable) for other Gymnasium envs"
        )
    return base.make_expert()


__all__ = [
    "CAMERAS",
    "CONTROL_MODES",
    "IMAGE_SUFFIX",
    "OBS_MODES",
    "PROPRIO_KEY",
    "REWARD_MODES",
    "RenderingUnavailable",
    "TASKS",
    "ScriptedExpert",
    "TableTopEnv",
    "cameras_read",
    "image_key",
    "instruction_templates",
    "make_expert",
]
