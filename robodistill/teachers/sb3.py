"""Stable-Baselines3 models as teachers (`teacher=sb3`) and as students seen through our interface.

`load_sb3_model` reads any SB3 .zip (or a ppo/sac/rpd run's) for inference; `SB3Teacher` labels with its
deterministic action plus mean and std for Gaussian policies; `SB3Student` gives an SB3 model our `act`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import DiagGaussianDistribution

from robodistill.errors import UserError
from robodistill.observations import STATE_KEY, view
from robodistill.rundir import RunDir
from robodistill.teachers.protocol import TeacherOutput

SB3_ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3, "a2c": A2C, "ddpg": DDPG}


def model_input(obs: dict[str, np.ndarray], keys: list[str]) -> Any:
    """What an SB3 model on `keys` takes: the bare array for a state model (Box), else the dict of its keys."""
    return obs[STATE_KEY] if list(keys) == [STATE_KEY] else view(obs, keys)


class SB3Student:
    """An SB3 model seen through our student interface: `obs_keys` and batched `act(obs, deterministic)`."""

    def __init__(self, model: BaseAlgorithm, obs_keys: list[str]):
        self.model, self.obs_keys = model, list(obs_keys)

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        x = model_input(obs, self.obs_keys)
        action, _ = self.model.predict(x, deterministic=deterministic)
        return np.asarray(action, dtype=np.float32), None


class SB3Teacher:
    """A trained SB3 model as a teacher: its deterministic action, plus mean and std for Gaussian (PPO/A2C) policies."""

    def __init__(self, model: BaseAlgorithm):
        self.model = model
        space = model.observation_space
        self.obs_keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else [STATE_KEY]
        if not isinstance(model.action_space, gym.spaces.Box):
            raise UserError(f"an SB3 teacher needs a continuous (Box) action space, this one has {model.action_space}")

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        x = model_input(obs, self.obs_keys)
        action, _ = self.model.predict(x, deterministic=True)
        out = TeacherOutput(action=np.asarray(action, dtype=np.float32))
        policy = self.model.policy
        if isinstance(getattr(policy, "action_dist", None), DiagGaussianDistribution):
            with torch.no_grad():
                dist = policy.get_distribution(policy.obs_to_tensor(x)[0]).distribution
            out.mean, out.std = dist.mean.numpy().astype(np.float32), dist.stddev.numpy().astype(np.float32)
        return out


def find_model_zip(path: str | Path, which: str = "best") -> Path:
    """A run directory's SB3 model (`which`: best, else final; last: final) or the given .zip."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).sb3_model(which)
    if not path.exists():
        raise UserError(f"SB3 model {path} does not exist")
    return path


def algo_of(data: dict[str, Any]) -> str:
    """Which SB3 algorithm wrote a model zip's `data`: from its policy module, else its hyperparameter names."""
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for name in ("sac", "td3"):
        if f".{name}." in module:
            return name
    if "clip_range" in data:
        return "ppo"  # also RPD's models: the same policy, saved without the teacher
    return "a2c" if "n_steps" in data else ""


def load_sb3_model(path: str | Path, algo: str = "auto", which: str = "best") -> BaseAlgorithm:
    """Load an SB3 .zip (or a run's) for inference; `algo=auto` reads the algorithm from the zip's policy class."""
    path = find_model_zip(path, which)
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data").decode())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not a Stable-Baselines3 model zip: {exc}") from exc
    if algo == "auto":
        algo = algo_of(data)
        if not algo:
            raise UserError(
                f"cannot tell which SB3 algorithm saved {path}; set teacher.algo to one of {list(SB3_ALGOS)}"
            )
    if algo not in SB3_ALGOS:
        raise UserError(f"unknown SB3 algorithm {algo!r}; available: {', '.join(SB3_ALGOS)}")
    # schedules are only needed for training: replacing them avoids unpickling functions saved by another version
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        return SB3_ALGOS[algo].load(path, device="cpu", custom_objects=custom)
    except Exception as exc:
        raise UserError(f"cannot load {path} as an SB3 {algo.upper()} model: {type(exc).__name__}: {exc}") from exc
