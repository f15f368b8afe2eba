"""Teachers from robodistill checkpoints: a Gaussian student (`checkpoint`), a diffusion policy or consistency head
(`diffusion`), a token policy (`vla`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import policies
from policies.samplers import ChunkRunner, make_sampler
from robodistill.config import option_defaults
from robodistill.errors import UserError
from robodistill.rundir import policy_checkpoint
from robodistill.tasks import shape_meta
from robodistill.teachers.protocol import TeacherOutput


def load_policy(
    path: str | Path, which: str = "best", teacher: str | None = None, device: torch.device | str = "cpu"
) -> Any:
    """A robodistill policy from a run directory (checkpoints/<which>.pt, else last.pt) or a checkpoint file, on
    `device`; with `teacher`, one that the teacher=<teacher> kind labels with (UserError naming the right one
    otherwise)."""
    ckpt = policy_checkpoint(path, which)
    if "policy_config" not in ckpt:
        raise UserError(f"{path} holds no robodistill policy (for SB3 runs use teacher=sb3)")
    try:
        policy = policies.build_policy(ckpt["policy_config"])
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from exc
    policy.load_state_dict(ckpt["policy"])
    if teacher is not None and policies.policy_type(policy.kind).teacher != teacher:
        raise UserError(
            f"teacher={teacher} cannot label with {path}: it holds a {policy.kind!r} policy, use "
            f"teacher={policies.policy_type(policy.kind).teacher}"
        )
    return policy.to(device).eval()


def check_policy_shapes(policy: Any, env: gym.Env) -> None:
    """A saved policy must observe and act in this task's shapes."""
    meta = shape_meta(env)
    saved = {k: policy.shape_meta["obs"][k]["shape"] for k in policy.obs_keys}
    task = {k: meta["obs"][k]["shape"] if k in meta["obs"] else None for k in policy.obs_keys}
    if saved != task or policy.shape_meta["action"]["shape"] != meta["action"]["shape"]:
        raise UserError(
            f"the teacher checkpoint was trained for observations {saved} and actions "
            f"{policy.shape_meta['action']['shape']}, but this task has {task} and "
            f"{meta['action']['shape']}"
        )


class PolicyTeacher:
    """A robodistill student (BC, DAgger, ... checkpoint) as a teacher: its mean action and its std."""

    def __init__(self, policy: Any):
        if getattr(policy, "obs_horizon", 1) > 1:
            raise UserError(
                f"teacher=checkpoint labels from one observation, but this run's student reads the last "
                f"{policy.obs_horizon} (student.obs_horizon): use a run with student.obs_horizon=1 as the teacher"
            )
        self.policy = policy.eval()
        self.obs_keys = list(policy.obs_keys)

    @classmethod
    def load(cls, path: str, which: str = "best", device: torch.device | str = "cpu") -> PolicyTeacher:
        return cls(load_policy(path, which, teacher="checkpoint", device=device))

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        with torch.inference_mode():
            mean, log_std = self.policy(self.policy.tensors(obs))
        mean, std = mean.numpy(force=True).astype(np.float32), np.exp(log_std.numpy(force=True)).astype(np.float32)
        return TeacherOutput(action=np.clip(mean, -1.0, 1.0), mean=mean, std=std)


class DiffusionTeacher:
    """A diffusion policy (or consistency head) as a teacher: at every step and for every env a freshly sampled
    action chunk from the env's observation history; the label is the chunk's action for the current step.

    `chunk` holds the whole predicted window (N, T_p, A) (it starts `policy.first_action` steps in the past).
    The collector resets an env's history when its episode ends.
    """

    def __init__(self, policy: Any, sampler: Mapping[str, Any]):
        if not policies.policy_type(policy.kind).chunked:
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
    def load(
        cls,
        path: str,
        which: str = "best",
        sampler: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
    ) -> DiffusionTeacher:
        policy = load_policy(path, which, teacher="diffusion", device=device)
        return cls(policy, sampler or option_defaults("sampler", "ddim"))

    def reset(self, slot: int | None = None) -> None:
        self.runner.reset(slot)

    def act(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> TeacherOutput:
        """Labels for observations from env `slots` (None: envs 0..N-1), each continuing its env's history."""
        chunk = self.runner.label(obs, slots)  # (N, T_p, A)
        return TeacherOutput(action=chunk[:, self.policy.first_action], chunk=chunk)


class VLATeacher:
    """A trained token policy (algo=sft) as a teacher: its argmax action and its per-dimension logits."""

    def __init__(self, policy: Any):
        self.policy = policy.eval()
        self.obs_keys = list(policy.obs_keys)
        self.bins = int(policy.bins)

    @classmethod
    def load(cls, path: str, which: str = "best", device: torch.device | str = "cpu") -> VLATeacher:
        return cls(load_policy(path, which, teacher="vla", device=device))

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        action, logits = self.policy.label(obs)
        return TeacherOutput(action=action, logits=logits)
