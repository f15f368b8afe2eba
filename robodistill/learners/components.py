"""Build a run's parts from its config: the task env, its shape schema, the teacher and the student."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from omegaconf import DictConfig
from torch import nn

import envs
import policies
from policies.tokens import build_vocab
from policies.vision import ImageTooSmall
from robodistill.config import to_dict
from robodistill.data.collector import Collector, make_vector_env
from robodistill.devices import resolve_device
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import student_policy
from robodistill.observations import obs_mode_for
from robodistill.students import student_config
from robodistill.tasks import env_fns, make_env, shape_meta, task_for_keys
from robodistill.teachers import Teacher, TeacherOutput, check_teacher, make_teacher, teacher_obs_keys

BACKENDS = ("sync", "ray")  # collector.backend: in this process, or env-runner actors and a teacher actor on Ray


@dataclass
class Components:
    task: dict[str, Any]
    obs_mode: str
    env: gym.Env  # one env of the task, for checks and shapes
    shape_meta: dict[str, Any]
    teacher: Teacher | None  # None for learners that need no teacher (ppo, sac)
    student: nn.Module | None  # None for learners that build their own (SB3 policies)
    teacher_probe: TeacherOutput | None = None  # the teacher's labels for one reset observation (what it gives)
    device: torch.device = torch.device("cpu")  # where the student, a network teacher and SB3 learners run


def make_student(student_cfg: Mapping[str, Any], meta: dict[str, Any]) -> nn.Module:
    """A fresh student network for the task's shapes, from its validated config (`student_config`); built in eval mode,
    it acts (and collects) without augmentation until a fit trains it (`fitting.regress` switches modes)."""
    cfg = student_config(student_cfg)
    if hasattr(cfg, "vocab") and not cfg.vocab:  # a token policy: every task's words, one multi-task model
        cfg = dataclasses.replace(cfg, vocab=build_vocab(envs.instruction_templates()))
    try:
        return policies.policy_type(cfg.kind).policy.from_config(cfg, meta)
    except ImageTooSmall as exc:
        raise UserError(
            f"cannot build student {student_cfg.get('name', cfg.kind)!r}: {exc.reason}: "
            f"set task.kwargs.image_size={exc.min_side} or more, or choose another student.encoder"
        ) from exc
    except ValueError as exc:
        raise UserError(f"cannot build student {student_cfg.get('name', cfg.kind)!r}: {exc}") from exc


def build(cfg: DictConfig, teacher: bool = True, student: bool = True) -> Components:
    """Env, shapes, teacher and student for a run, checked against each other before any training."""
    backend = cfg.collector.backend
    if backend not in BACKENDS:
        raise UserError(f"collector.backend={backend!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    device = resolve_device(cfg.get("device"))
    env_id = str(cfg.task.env_id).split(":")[-1]  # the registered id (a `pkg:Env-id` names its package too)
    teacher_keys = teacher_obs_keys(to_dict(cfg.teacher), env_id) if teacher else []
    student_config(cfg.student)  # a misspelt student key: one error, also where the learner builds its own student
    student_keys = list(cfg.student.obs_keys)
    # the env (and every env made from `task`: collector, evaluation, rounds) renders only the cameras read
    task = task_for_keys(to_dict(cfg.task), teacher_keys + student_keys)
    obs_mode = obs_mode_for(teacher_keys + student_keys)
    env = make_env(task, obs_mode)
    meta = shape_meta(env)
    the_teacher = the_student = probe = None
    if teacher:
        the_teacher = make_teacher(to_dict(cfg.teacher), env, seed=int(cfg.seed), device=device)
        probe = check_teacher(the_teacher, env)
    if student:
        the_student = make_student(cfg.student, meta).to(device)
        if the_student.action_dim != int(env.action_space.shape[0]):
            raise UserError(
                f"student action dim {the_student.action_dim} does not match the task's {env.action_space.shape[0]}"
            )
    if the_student is not None:
        student_policy(the_student, to_dict(cfg.sampler))  # the sampler fits the student: one clear error if not
    return Components(task, obs_mode, env, meta, the_teacher, the_student, probe, device)


def make_collector(
    cfg: DictConfig,
    task: Mapping[str, Any],
    obs_mode: str,
    teacher: Teacher,
    student: Any | None,
    seed: int,
    student_deterministic: bool = True,
    device: torch.device | str = "cpu",
) -> Collector | Any:
    """The run's collector for `task` (`collector.backend`): `sync` steps `collector.num_envs` envs in this process
    with `teacher`; `ray` spreads them over `collector.runners` env-runner actors, labelled by an actor that builds
    the run's teacher config for the task (`robodistill.data.ray_collector`)."""
    c = cfg.collector
    if c.backend == "sync":
        venv = make_vector_env(env_fns(task, int(c.num_envs), obs_mode))
        return Collector(venv, teacher, student, None, seed=seed, student_deterministic=student_deterministic)
    from robodistill.data.ray_collector import RayCollector

    ray_cfg = cfg.get("ray") or {}
    return RayCollector(
        task,
        obs_mode,
        to_dict(cfg.teacher),
        list(teacher.obs_keys),
        student,
        int(c.num_envs),
        int(c.runners),
        seed=seed,
        student_deterministic=student_deterministic,
        device=str(device),
        teacher_batch=int(c.teacher_batch),
        teacher_wait_ms=float(c.teacher_wait_ms),
        address=ray_cfg.get("address"),
        num_cpus=ray_cfg.get("num_cpus"),
    )
