"""Stable-Baselines3 models as teachers (`teacher=sb3`) and as students seen through our interface.

`load_sb3_model` reads any SB3 .zip (or a ppo/sac/rpd run's, or an RL Zoo run folder's) for inference;
`SB3Teacher` labels with its deterministic action plus mean and std for Gaussian policies, on observations
normalised as in training when the model was trained inside `VecNormalize`; `SB3Student` gives an SB3 model our
`act`.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.vec_env import VecNormalize

from robodistill.errors import UserError
from robodistill.observations import STATE_KEY, view
from robodistill.rundir import SB3_MODELS, RunDir
from robodistill.tasks import shape_meta
from robodistill.teachers.protocol import TeacherOutput

log = logging.getLogger(__name__)

SB3_ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3, "a2c": A2C, "ddpg": DDPG}
VECNORMALIZE_OFF = ("", "none", "null", "false")  # teacher.vecnormalize values (besides YAML null) that turn it off
ZOO_BEST = "best_model.zip"  # RL Zoo's EvalCallback model; its final model is <EnvId>.zip


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
    """A trained SB3 model as a teacher: its deterministic action, plus mean and std for Gaussian (PPO/A2C) policies.

    With `obs_stats` (the `VecNormalize` it was trained in) observations are normalised as in training first.
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        obs_stats: VecNormalize | None = None,
        name: str = "SB3 model",
        stats_name: str = "VecNormalize statistics",
    ):
        self.model, self.obs_stats, self.name, self.stats_name = model, obs_stats, name, stats_name
        space = model.observation_space
        self.obs_keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else [STATE_KEY]
        if not isinstance(model.action_space, gym.spaces.Box):
            raise UserError(f"an SB3 teacher needs a continuous (Box) action space, this one has {model.action_space}")

    @classmethod
    def load(
        cls,
        path: str | Path,
        algo: str = "auto",
        which: str = "best",
        vecnormalize: str | Path | None = "auto",
        device: torch.device | str = "cpu",
    ) -> SB3Teacher:
        """The model at `path` (a .zip, one of our SB3 runs, an RL Zoo run folder) with the observation statistics
        `vecnormalize` names (auto: found where RL Zoo and SB3 save them; None or "none": no normalisation)."""
        zip_path = find_model_zip(path, which)
        model = load_sb3_model(zip_path, algo, device=device)
        stats_path = vecnormalize_path(vecnormalize, zip_path)
        stats = None if stats_path is None else load_vecnormalize(stats_path, model)
        teacher = cls(model, stats, name=str(zip_path), stats_name=str(stats_path))
        log.info("teacher=sb3: %r", teacher)
        return teacher

    def __repr__(self) -> str:
        if self.obs_stats is None:
            norm = "no observation normalisation"
        elif not self.obs_stats.norm_obs:
            norm = f"{self.stats_name} has norm_obs=False: observations passed as they are"
        else:
            norm = f"observations normalised by {self.stats_name}"
        return f"SB3Teacher({self.name}, {type(self.model).__name__}, {norm})"

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        x = model_input(obs, self.obs_keys)
        if self.obs_stats is not None:
            x = self.obs_stats.normalize_obs(x)
        action, _ = self.model.predict(x, deterministic=True)
        out = TeacherOutput(action=np.asarray(action, dtype=np.float32))
        policy = self.model.policy
        if isinstance(getattr(policy, "action_dist", None), DiagGaussianDistribution):
            with torch.no_grad():
                dist = policy.get_distribution(policy.obs_to_tensor(x)[0]).distribution
            out.mean = dist.mean.numpy(force=True).astype(np.float32)
            out.std = dist.stddev.numpy(force=True).astype(np.float32)
        return out


def find_model_zip(path: str | Path, which: str = "best") -> Path:
    """The given .zip, or a directory's SB3 model for `which` (best: the best model, else the final one; last: the
    final one): our run's sb3/*.zip, or an RL Zoo run folder's best_model.zip / <EnvId>.zip."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"SB3 model {path} does not exist")
    if not path.is_dir():
        return path
    run = RunDir(path)
    if run.is_sb3() or which not in SB3_MODELS:  # our run; a bad `which` gets RunDir's message
        return run.sb3_model(which)
    model = zoo_model(path, which)
    if model is None:
        raise UserError(
            f"{path} holds no SB3 model: neither a ppo/sac/rpd run (sb3/{SB3_MODELS[which]}) nor an RL Zoo run folder "
            f"(<algo>/<EnvId>_<n>/ with <EnvId>.zip{' or best_model.zip' if which == 'best' else ''})"
        )
    return model


def zoo_env_name(folder: Path) -> str | None:
    """The env id an RL Zoo run folder `<algo>/<EnvId>_<n>` is named after."""
    match = re.fullmatch(r"(.+)_\d+", folder.name)
    return match[1] if match else None


def zoo_model(folder: Path, which: str) -> Path | None:
    """An RL Zoo run folder's model: best_model.zip for `best` where it was saved, else the final <EnvId>.zip (the
    folder's one other .zip when the name does not say the env id)."""
    if which == "best" and (folder / ZOO_BEST).is_file():
        return folder / ZOO_BEST
    name = zoo_env_name(folder)
    if name and (folder / f"{name}.zip").is_file():
        return folder / f"{name}.zip"
    finals = [p for p in folder.glob("*.zip") if p.name != ZOO_BEST and not p.name.startswith("rl_model_")]
    return finals[0] if len(finals) == 1 else None


def find_vecnormalize(model_zip: Path) -> Path | None:
    """Where SB3 and RL Zoo save the VecNormalize statistics of `model_zip`, if one is there: a checkpoint's own
    (`rl_model_vecnormalize_<n>_steps.pkl`), one beside the zip (`vecnormalize.pkl`; the Hugging Face hub's
    `vec_normalize.pkl`), or an RL Zoo run folder's `<EnvId>/vecnormalize.pkl`."""
    folder = model_zip.parent
    candidates = []
    checkpoint = re.fullmatch(r"(.+)_(\d+)_steps", model_zip.stem)  # SB3's CheckpointCallback names
    if checkpoint:
        candidates.append(folder / f"{checkpoint[1]}_vecnormalize_{checkpoint[2]}_steps.pkl")
    candidates += [folder / "vecnormalize.pkl", folder / "vec_normalize.pkl"]
    for env_name in (model_zip.stem, zoo_env_name(folder)):
        if env_name:
            candidates.append(folder / env_name / "vecnormalize.pkl")
    return next((p for p in candidates if p.is_file()), None)


def vecnormalize_path(setting: str | Path | None, model_zip: Path) -> Path | None:
    """The statistics file `teacher.vecnormalize` names: auto (found beside the model, or none), a file, or off."""
    if setting is None or setting is False or str(setting).strip().lower() in VECNORMALIZE_OFF:
        return None
    if str(setting) == "auto":
        return find_vecnormalize(model_zip)
    path = Path(setting)
    if not path.is_file():
        raise UserError(f"teacher.vecnormalize file {path} does not exist (auto finds RL Zoo's; null turns it off)")
    return path


def obs_shapes(stats: VecNormalize) -> dict[str, tuple[int, ...]]:
    """The observation shapes VecNormalize statistics were gathered on, per key (a Box model's: "state")."""
    rms = stats.obs_rms
    if isinstance(rms, dict):
        return {k: tuple(r.mean.shape) for k, r in rms.items()}
    return {STATE_KEY: tuple(rms.mean.shape)}


def space_shapes(space: gym.Space) -> dict[str, tuple[int, ...]]:
    """An observation space's shapes per key (a Box's: "state")."""
    if isinstance(space, gym.spaces.Dict):
        return {k: tuple(s.shape) for k, s in space.spaces.items()}
    return {STATE_KEY: tuple(space.shape)}


def shapes_text(shapes: dict[str, Any]) -> str:
    """(11,) for a state observation, else the dict of shapes per key."""
    return str(shapes[STATE_KEY]) if list(shapes) == [STATE_KEY] else str(shapes)


def load_vecnormalize(path: Path, model: BaseAlgorithm) -> VecNormalize:
    """The VecNormalize statistics `VecNormalize.save` wrote to `path`, frozen for inference; they must be for the
    model's observations. (Unpickled without a venv: only the statistics are used, never stepped.)"""
    try:
        with open(path, "rb") as f:
            stats = pickle.load(f)  # a file the user names, as trusted as the model zip SB3 unpickles
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the unpickler says
        raise UserError(
            f"cannot read observation statistics {path} (a vecnormalize.pkl written by VecNormalize.save): "
            f"{type(exc).__name__}: {reason}"
        ) from exc
    if not isinstance(stats, VecNormalize):
        raise UserError(f"{path} holds a {type(stats).__name__}, not the statistics VecNormalize.save writes")
    stats.training, stats.norm_reward = False, False  # inference: statistics frozen; rewards are not ours to scale
    saved, expected = obs_shapes(stats), space_shapes(model.observation_space)
    if any(expected.get(k) != shape for k, shape in saved.items()):
        raise UserError(
            f"observation statistics {path} are for observations of shape {shapes_text(saved)}, but the SB3 model "
            f"expects {shapes_text(expected)}: they come from another run"
        )
    return stats


def check_spaces(model: BaseAlgorithm, env: gym.Env) -> None:
    """Refuse, naming both shapes, an SB3 model that observes or acts in other shapes than the task's env."""
    meta = shape_meta(env)
    task = {k: tuple(v["shape"]) for k, v in meta["obs"].items()}
    wanted, action = space_shapes(model.observation_space), tuple(model.action_space.shape)
    if all(task.get(k) == shape for k, shape in wanted.items()) and action == tuple(meta["action"]["shape"]):
        return
    gives = {k: task[k] for k in wanted} if set(wanted) <= set(task) else task  # the keys the model reads, if there
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    raise UserError(
        f"teacher=sb3 model expects observations of shape {shapes_text(wanted)} and actions {action}; task {name} "
        f"gives {shapes_text(gives)} and takes {tuple(meta['action']['shape'])}"
    )


def algo_of(data: dict[str, Any]) -> str:
    """Which SB3 algorithm wrote a model zip's `data`: from its policy module, else its hyperparameter names."""
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for name in ("sac", "td3"):
        if f".{name}." in module:
            return name
    if "clip_range" in data:
        return "ppo"  # also RPD's models: the same policy, saved without the teacher
    return "a2c" if "n_steps" in data else ""


def load_sb3_model(
    path: str | Path, algo: str = "auto", which: str = "best", device: torch.device | str = "cpu"
) -> BaseAlgorithm:
    """Load an SB3 .zip (or a run's) for inference on `device`; `algo=auto` reads the algorithm from the zip's policy
    class."""
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
        return SB3_ALGOS[algo].load(path, device=device, custom_objects=custom)
    except Exception as exc:
        raise UserError(f"cannot load {path} as an SB3 {algo.upper()} model: {type(exc).__name__}: {exc}") from exc
