"""The teacher protocol: `teacher.act(obs_batch) -> TeacherOutput`, and adapters for each source."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

import envs
from robodistill.errors import UserError


@dataclass
class TeacherOutput:
    """A batch of teacher labels: the action always; a distribution or action chunk where the source gives one."""

    action: np.ndarray  # (N, A)
    mean: np.ndarray | None = None  # (N, A)
    std: np.ndarray | None = None  # (N, A)
    logits: np.ndarray | None = None  # (N, A, V) per-dimension token logits
    chunk: np.ndarray | None = None  # (N, T_p, A)


OPTIONAL_LABELS = ("mean", "std", "logits", "chunk")  # the TeacherOutput fields a source may leave None


class Teacher(Protocol):
    obs_keys: list[str]

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput: ...


class TeacherError(RuntimeError):
    """The teacher failed or returned unusable labels during a run."""

    user_facing = True  # entry points print it as one line; checkpoints already written stay as they are


class CallableTeacher:
    """Wraps a plain callable `obs -> action` (batched) as a teacher.

    With one observation key the callable gets that array (N, ...); with several it gets the dict.
    """

    def __init__(self, fn: Callable[[Any], np.ndarray], obs_keys: list[str] = ("state",)):
        self.fn = fn
        self.obs_keys = list(obs_keys)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        x = obs[self.obs_keys[0]] if len(self.obs_keys) == 1 else {k: obs[k] for k in self.obs_keys}
        return TeacherOutput(action=np.asarray(self.fn(x), dtype=np.float32))


def load_callable(target: str, what: str = "teacher.target") -> Callable:
    """Import `package.module:function` (the config key `what` names it in errors)."""
    module, _, name = str(target).partition(":")
    if not module or not name:
        raise UserError(f"{what} must look like 'package.module:function', got {target!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import {what} {target!r}: {exc}") from exc


class ImperfectTeacher:
    """A teacher made worse on purpose: Gaussian action noise, and a rate of uniformly random ("wrong") actions.

    Its labels are what it does: `action` and `mean` carry the noise and the wrong actions (the env clips them to
    the action bounds when executed); a std it gives is widened by the noise. Used to reproduce "the student beats
    its teacher".
    """

    def __init__(self, teacher: Teacher, noise_std: float = 0.0, wrong_action_rate: float = 0.0, seed: int = 0):
        if noise_std < 0 or not 0.0 <= wrong_action_rate <= 1.0:
            raise UserError(f"teacher noise_std must be >= 0 and wrong_action_rate in [0, 1], got {noise_std}, "
                            f"{wrong_action_rate}")  # fmt: skip
        self.teacher, self.noise_std, self.wrong_action_rate = teacher, noise_std, wrong_action_rate
        self.obs_keys = teacher.obs_keys
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        out = self.teacher.act(obs)
        action = np.asarray(out.action, dtype=np.float32)
        noisy = action + self.noise_std * self.rng.standard_normal(action.shape).astype(np.float32)
        wrong = self.rng.random(len(action)) < self.wrong_action_rate
        noisy[wrong] = self.rng.uniform(-1.0, 1.0, size=(int(wrong.sum()), action.shape[1]))
        # not clipped: the env clips what is executed, and unclipped labels average to the clean action (clipping
        # would pull a gripper's +-1 toward 0, and a student averaging the labels would then never grip)
        std = None if out.std is None else np.sqrt(out.std**2 + self.noise_std**2).astype(np.float32)
        return TeacherOutput(action=noisy, mean=noisy if out.mean is not None else None, std=std, logits=out.logits,
                             chunk=out.chunk)  # fmt: skip


TEACHER_KINDS = ("scripted", "callable", "sb3", "checkpoint", "diffusion", "vla", "remote")


def make_teacher(cfg: Mapping[str, Any], env: gym.Env, seed: int = 0) -> Teacher:
    """Build the teacher named by `cfg.kind` for `env` (a single env of the task), made imperfect if asked."""
    kind = cfg.get("kind")
    obs_keys = list(cfg.get("obs_keys") or ["state"])
    if kind == "scripted":
        try:
            teacher = CallableTeacher(envs.make_expert(env), obs_keys)
        except TypeError as exc:
            raise UserError(str(exc)) from exc
    elif kind == "callable":
        teacher = CallableTeacher(load_callable(str(cfg.get("target"))), obs_keys)
    elif kind == "sb3":
        from robodistill.sb3 import SB3Teacher, load_sb3_model

        teacher = SB3Teacher(load_sb3_model(str(cfg.get("path")), str(cfg.get("algo", "auto"))))
    elif kind == "checkpoint":
        teacher = PolicyTeacher.load(str(cfg.get("path")), str(cfg.get("checkpoint", "best")))
    elif kind == "diffusion":
        teacher = DiffusionTeacher.load(str(cfg.get("path")), str(cfg.get("checkpoint", "best")),
                                        dict(cfg.get("sampler") or {}))  # fmt: skip
    elif kind == "vla":
        teacher = VLATeacher.load(str(cfg.get("path")), str(cfg.get("checkpoint", "best")))
    elif kind == "remote":
        from robodistill.remote import RemoteTeacher

        teacher = RemoteTeacher.from_config(cfg)
    else:
        raise UserError(f"unknown teacher kind {kind!r}; available: {', '.join(TEACHER_KINDS)}")
    if kind in ("checkpoint", "diffusion", "vla"):
        check_policy_shapes(teacher.policy, env)
    noise_std, wrong_rate = float(cfg.get("noise_std", 0.0)), float(cfg.get("wrong_action_rate", 0.0))
    if noise_std > 0 or wrong_rate > 0:
        teacher = ImperfectTeacher(teacher, noise_std, wrong_rate, seed=seed)
    return teacher


def check_policy_shapes(policy: Any, env: gym.Env) -> None:
    """A saved policy must observe and act in this task's shapes."""
    from robodistill.tasks import shape_meta

    meta = shape_meta(env)
    saved = {k: policy.shape_meta["obs"][k]["shape"] for k in policy.obs_keys}
    task = {k: meta["obs"][k]["shape"] if k in meta["obs"] else None for k in policy.obs_keys}
    if saved != task or policy.shape_meta["action"]["shape"] != meta["action"]["shape"]:
        raise UserError(f"the teacher checkpoint was trained for observations {saved} and actions "
                        f"{policy.shape_meta['action']['shape']}, but this task has {task} and "
                        f"{meta['action']['shape']}")  # fmt: skip


def load_policy(path: str, which: str = "best") -> Any:
    """A robodistill policy from a run directory (checkpoints/<which>.pt, else last.pt) or a checkpoint file."""
    import policies
    from robodistill.run import load_checkpoint

    p = Path(path)
    if p.is_dir():
        candidates = [p / "checkpoints" / f"{which}.pt", p / "checkpoints" / "last.pt"]
        p = next((c for c in candidates if c.exists()), candidates[0])
    ckpt = load_checkpoint(p)
    if "policy_config" not in ckpt:
        raise UserError(f"{p} holds no robodistill policy (for SB3 runs use teacher=sb3)")
    policy = policies.build_policy(ckpt["policy_config"])
    policy.load_state_dict(ckpt["policy"])
    return policy.eval()


class PolicyTeacher:
    """A robodistill student (BC, DAgger, ... checkpoint) as a teacher: its mean action and its std."""

    def __init__(self, policy: Any):
        self.policy = policy.eval()
        self.obs_keys = list(policy.obs_keys)

    @classmethod
    def load(cls, path: str, which: str = "best") -> PolicyTeacher:
        policy = load_policy(path, which)
        if not hasattr(policy, "log_std"):
            raise UserError(f"{path} holds a {policy.kind} policy: use teacher=diffusion for diffusion-family runs")
        return cls(policy)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        import torch

        with torch.inference_mode():
            mean, log_std = self.policy({k: torch.as_tensor(np.asarray(obs[k])) for k in self.obs_keys})
        mean = mean.numpy().astype(np.float32)
        return TeacherOutput(action=np.clip(mean, -1.0, 1.0), mean=mean, std=np.exp(log_std.numpy()).astype(np.float32))


class DiffusionTeacher:
    """A diffusion policy (or consistency head) as a teacher: at every step and for every env a freshly sampled
    action chunk from the env's observation history; the label is the chunk's action for the current step.

    `chunk` holds the whole predicted window (N, T_p, A) (it starts `policy.first_action` steps in the past).
    The collector resets an env's history when its episode ends.
    """

    def __init__(self, policy: Any, sampler: Mapping[str, Any]):
        from policies.diffusion_policy import DiffusionPolicy
        from policies.samplers import ChunkRunner, make_sampler

        if not isinstance(policy, DiffusionPolicy):
            raise UserError(f"teacher=diffusion needs a diffusion-family run, got a {policy.kind!r} policy")
        kind = sampler.get("kind", "auto")
        if kind == "sdp" or (kind == "auto" and policy.noise_levels == "sdp"):
            raise UserError(
                "a teacher re-plans at every step; sampler=sdp streams chunks: use teacher.sampler.kind=ddim"
            )
        try:
            self.runner = ChunkRunner(policy, make_sampler(policy, sampler))
        except ValueError as exc:
            raise UserError(f"teacher sampler: {exc}") from exc
        self.policy, self.obs_keys = policy, list(policy.obs_keys)

    @classmethod
    def load(cls, path: str, which: str = "best", sampler: Mapping[str, Any] | None = None) -> DiffusionTeacher:
        return cls(load_policy(path, which), sampler or {"kind": "ddim", "num_inference_steps": 10})

    def reset(self, slot: int | None = None) -> None:
        self.runner.reset(slot)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        chunk = self.runner.label(obs)  # (N, T_p, A)
        return TeacherOutput(action=chunk[:, self.policy.first_action], chunk=chunk)


class VLATeacher:
    """A trained token policy (algo=sft) as a teacher: its argmax action and its per-dimension logits."""

    def __init__(self, policy: Any):
        self.policy = policy.eval()
        self.obs_keys = list(policy.obs_keys)
        self.bins = int(policy.bins)

    @classmethod
    def load(cls, path: str, which: str = "best") -> VLATeacher:
        policy = load_policy(path, which)
        if policy.kind != "vla":
            raise UserError(f"teacher=vla needs a token-policy run (algo=sft or opd), {path} holds a {policy.kind!r}")
        return cls(policy)

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        action, logits = self.policy.label(obs)
        return TeacherOutput(action=action, logits=logits)


class CountingTeacher:
    """Passes calls through and counts them and the states labelled, per `phase` (set by the learner)."""

    def __init__(self, teacher: Teacher, phase: str = "distill"):
        self.teacher, self.obs_keys, self.phase = teacher, teacher.obs_keys, phase
        self.calls: dict[str, int] = {}
        self.labels: dict[str, int] = {}

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        self.calls[self.phase] = self.calls.get(self.phase, 0) + 1
        self.labels[self.phase] = self.labels.get(self.phase, 0) + len(next(iter(obs.values())))
        return self.teacher.act(obs)


def reset_episode(policy: Any, slot: int | None) -> None:
    """Reset the per-episode state of env `slot` (all: None) in a stateful policy, looking through wrappers."""
    while policy is not None:
        if hasattr(policy, "reset"):
            policy.reset(slot)
            return
        policy = getattr(policy, "teacher", None)


def query_teacher(teacher: Teacher, obs: dict[str, np.ndarray], action_dim: int) -> TeacherOutput:
    """One batched teacher call on the teacher's view of `obs`; any failure or bad label becomes a TeacherError."""
    n = len(next(iter(obs.values())))
    try:
        out = teacher.act({k: obs[k] for k in teacher.obs_keys})
    except Exception as exc:  # any failure inside a user's teacher becomes one clear error
        raise TeacherError(f"teacher raised {type(exc).__name__}: {exc}") from exc
    check_labels(out, n, action_dim)
    return out


def check_labels(out: TeacherOutput, n: int, action_dim: int) -> None:
    """Raise TeacherError unless the teacher returned finite actions of shape (n, action_dim)."""
    a = out.action
    if a.shape != (n, action_dim):
        raise TeacherError(
            f"teacher returned actions of shape {a.shape}, but the task's action space needs ({n}, {action_dim}): "
            "teacher and student action spaces do not match"
        )
    if not np.all(np.isfinite(a)):
        raise TeacherError("teacher returned NaN or inf actions")
