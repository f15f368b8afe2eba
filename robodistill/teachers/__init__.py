"""Teachers: one protocol (`protocol.py`), one module per source, and `make_teacher` with a registry kind -> factory.

| kind | source |
|---|---|
| `scripted` | the task's scripted privileged expert (`envs.make_expert`) |
| `callable` | any `package.module:function` (`obs -> action`): batched, or one observation at a time |
| `sb3` | a Stable-Baselines3 model (.zip, an RL Zoo run folder, a ppo/sac/rpd run), with its VecNormalize statistics |
| `checkpoint` | a robodistill Gaussian student (bc, dagger run) |
| `diffusion` | a diffusion policy or consistency head run, sampled per step |
| `vla` | a token policy run (sft, opd): argmax actions and logits |
| `remote` | a policy server speaking openpi's websocket + msgpack-numpy protocol |
| `router` | one teacher per task (`routes`): each task's env gets its own task's teacher |

Every kind takes `noise_std` / `wrong_action_rate` (an `ImperfectTeacher` around it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import MISSING

import envs
from robodistill.config import load_callable, option_defaults
from robodistill.errors import UserError
from robodistill.observations import as_dict, view
from robodistill.rundir import RunDir
from robodistill.teachers.callable import UNBATCHED_HINT, CallableTeacher
from robodistill.teachers.checkpoint import (
    DiffusionTeacher,
    PolicyTeacher,
    VLATeacher,
    check_policy_shapes,
    load_policy,
)
from robodistill.teachers.imperfect import CountingTeacher, ImperfectTeacher
from robodistill.teachers.protocol import (
    OPTIONAL_LABELS,
    Teacher,
    TeacherError,
    TeacherOutput,
    check_labels,
    query_teacher,
    reset_episode,
)
from robodistill.teachers.remote import RemoteTeacher
from robodistill.teachers.sb3 import SB3Student, SB3Teacher, check_spaces, load_sb3_model

TeacherFactory = Callable[[Mapping[str, Any], gym.Env, list[str], int, torch.device], Teacher]


def _scripted(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    try:
        return CallableTeacher(envs.make_expert(env), obs_keys)
    except TypeError as exc:
        raise UserError(str(exc)) from exc


def _callable(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    if not isinstance(cfg["batched"], bool):
        raise UserError(f"teacher.batched must be true or false, got {cfg['batched']!r}")
    return CallableTeacher(load_callable(str(cfg["target"])), obs_keys, batched=cfg["batched"])


def _sb3(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    teacher = SB3Teacher.load(str(cfg["path"]), str(cfg["algo"]), str(cfg["checkpoint"]), cfg["vecnormalize"], device)
    check_spaces(teacher.model, env)
    return teacher


def _checkpoint(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    teacher = PolicyTeacher.load(str(cfg["path"]), str(cfg["checkpoint"]), device)
    check_policy_shapes(teacher.policy, env)
    return teacher


def _diffusion(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    teacher = DiffusionTeacher.load(str(cfg["path"]), str(cfg["checkpoint"]), dict(cfg["sampler"]), device)
    check_policy_shapes(teacher.policy, env)
    return teacher


def _vla(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    teacher = VLATeacher.load(str(cfg["path"]), str(cfg["checkpoint"]), device)
    check_policy_shapes(teacher.policy, env)
    return teacher


def _remote(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    return RemoteTeacher.from_config(cfg)


def _router(cfg: Mapping[str, Any], env: gym.Env, obs_keys: list[str], seed: int, device: torch.device) -> Teacher:
    return make_teacher(route(cfg, task_id(env)), env, seed, device)


def route(cfg: Mapping[str, Any], env_id: str | None) -> Mapping[str, Any]:
    """A router's teacher config for the task `env_id`; UserError naming the tasks it has teachers for."""
    routes = cfg.get("routes") or []
    if not isinstance(routes, list) or not all(
        isinstance(r, Mapping) and {"task", "teacher"} <= set(r) for r in routes
    ):
        raise UserError("teacher.routes must be a list of {task: <env id>, teacher: <teacher config>}")
    for r in routes:
        if r["task"] == env_id:
            return r["teacher"]
    raise UserError(
        f"teacher=router has no teacher for task {env_id}: its routes are for {[r['task'] for r in routes]}; "
        f"add {{task: {env_id}, teacher: {{kind: ..., ...}}}} to teacher.routes"
    )


def task_id(env: gym.Env) -> str | None:
    """The Gymnasium id of an env made by `make_env` (None for an unregistered one)."""
    return env.spec.id if env.spec is not None else None


def teacher_obs_keys(cfg: Mapping[str, Any], env_id: str | None) -> list[str]:
    """The observations the teacher `cfg` reads on the task `env_id`: its `obs_keys`, or for a router those of the
    task's route (its kind's default when the route does not say; none for a task without a route, which
    `make_teacher` refuses)."""
    if cfg.get("kind") != "router":
        return list(cfg["obs_keys"])
    try:
        teacher = route(cfg, env_id)
    except UserError:
        return []
    kind = teacher.get("kind")
    return list(teacher.get("obs_keys") or (option_defaults("teacher", kind)["obs_keys"] if kind in TEACHERS else []))


TEACHERS: dict[str, TeacherFactory] = {
    "scripted": _scripted,
    "callable": _callable,
    "sb3": _sb3,
    "checkpoint": _checkpoint,
    "diffusion": _diffusion,
    "vla": _vla,
    "remote": _remote,
    "router": _router,
}


def make_teacher(cfg: Mapping[str, Any], env: gym.Env, seed: int = 0, device: torch.device | str = "cpu") -> Teacher:
    """Build the teacher named by `cfg.kind` for `env` (a single env of the task), made imperfect if asked; a network
    teacher runs on `device`."""
    kind = cfg.get("kind")
    if kind not in TEACHERS:
        raise UserError(f"unknown teacher kind {kind!r}; available: {', '.join(TEACHERS)}")
    cfg = {**option_defaults("teacher", kind), **cfg}  # a config built in code gets conf/teacher/<kind>.yaml's defaults
    missing = [key for key, value in cfg.items() if value == MISSING]  # Hydra's `???`: never shown to the user
    if missing:
        raise UserError(f"teacher={kind} needs {' '.join(f'teacher.{key}=...' for key in missing)}")
    teacher = TEACHERS[kind](cfg, env, list(cfg["obs_keys"]), seed, torch.device(device))
    noise_std, wrong_rate = float(cfg["noise_std"]), float(cfg["wrong_action_rate"])
    if noise_std > 0 or wrong_rate > 0:
        teacher = ImperfectTeacher(teacher, noise_std, wrong_rate, seed=seed)
    return teacher


def load_run_policy(path: str | Path, which: str = "best", device: torch.device | str = "cpu") -> Any:
    """The policy a run trained, ready to act on `device`: a robodistill policy from its checkpoint, or for an SB3 run
    (ppo, sac, rpd) its SB3 model (best: sb3/best_model.zip, else final; last: sb3/final_model.zip) as an
    SB3Student."""
    run = RunDir(path)
    if run.is_sb3():
        keys = list(run.config().student.obs_keys)
        return SB3Student(load_sb3_model(run.dir, which=which, device=device), keys)
    return load_policy(path, which, device=device)


def check_teacher(teacher: Teacher, env: gym.Env) -> TeacherOutput:
    """Query the teacher once on a reset observation: its actions must fit the task's action space; returns its
    labels so callers can check what else it gives (a std, logits)."""
    obs, _ = env.reset(seed=0)
    batch = {k: np.asarray(v)[None] for k, v in as_dict(obs).items()}
    missing = [k for k in teacher.obs_keys if k not in batch]
    if missing:
        raise UserError(f"teacher observes {missing}, but the task offers {sorted(batch)}")
    try:
        out = teacher.act(view(batch, teacher.obs_keys))
        check_labels(out, 1, int(env.action_space.shape[0]))
        reset_episode(teacher, None)  # a stateful teacher forgets this probe
        return out
    except TeacherError as exc:
        raise UserError(f"teacher and task do not fit: {exc}{_batching_hint(teacher)}") from exc
    except Exception as exc:
        raise UserError(
            f"teacher failed on the task's first observation: {type(exc).__name__}: {exc}{_batching_hint(teacher)}"
        ) from exc


def _batching_hint(teacher: Teacher) -> str:
    """For a batched function teacher (looking through wrappers), the hint that it may be an unbatched one."""
    while not isinstance(teacher, CallableTeacher) and hasattr(teacher, "teacher"):
        teacher = teacher.teacher
    return f"; {UNBATCHED_HINT}" if isinstance(teacher, CallableTeacher) and teacher.batched else ""


__all__ = [
    "OPTIONAL_LABELS",
    "TEACHERS",
    "CallableTeacher",
    "CountingTeacher",
    "DiffusionTeacher",
    "ImperfectTeacher",
    "PolicyTeacher",
    "RemoteTeacher",
    "SB3Teacher",
    "Teacher",
    "TeacherError",
    "TeacherOutput",
    "VLATeacher",
    "check_labels",
    "check_policy_shapes",
    "check_teacher",
    "load_policy",
    "load_run_policy",
    "make_teacher",
    "query_teacher",
    "reset_episode",
    "teacher_obs_keys",
]
