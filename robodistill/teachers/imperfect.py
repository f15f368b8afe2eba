"""Wrappers around any teacher: made worse on purpose (imperfect teachers), or counted (teacher-label budgets)."""

from __future__ import annotations

import numpy as np

from robodistill.errors import UserError
from robodistill.teachers.protocol import Teacher, TeacherOutput, act_in_slots


class ImperfectTeacher:
    """A teacher made worse on purpose: Gaussian action noise, and a rate of uniformly random ("wrong") actions.

    Its labels are what it does: `action` and `mean` carry the noise and the wrong actions (the env clips them to
    the action bounds when executed); a std it gives is widened by the noise. Used to reproduce "the student beats
    its teacher".
    """

    def __init__(self, teacher: Teacher, noise_std: float = 0.0, wrong_action_rate: float = 0.0, seed: int = 0):
        if noise_std < 0 or not 0.0 <= wrong_action_rate <= 1.0:
            raise UserError(
                f"teacher noise_std must be >= 0 and wrong_action_rate in [0, 1], got {noise_std}, {wrong_action_rate}"
            )
        self.teacher, self.noise_std, self.wrong_action_rate = teacher, noise_std, wrong_action_rate
        self.obs_keys = teacher.obs_keys
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> TeacherOutput:
        out = act_in_slots(self.teacher, obs, slots)
        action = np.asarray(out.action, dtype=np.float32)
        noisy = action + self.noise_std * self.rng.standard_normal(action.shape).astype(np.float32)
        wrong = self.rng.random(len(action)) < self.wrong_action_rate
        noisy[wrong] = self.rng.uniform(-1.0, 1.0, size=(int(wrong.sum()), action.shape[1]))
        # not clipped: the env clips what is executed, and unclipped labels average to the clean action (clipping
        # would pull a gripper's +-1 toward 0, and a student averaging the labels would then never grip)
        std = None if out.std is None else np.sqrt(out.std**2 + self.noise_std**2).astype(np.float32)
        return TeacherOutput(
            action=noisy, mean=noisy if out.mean is not None else None, std=std, logits=out.logits, chunk=out.chunk
        )


class CountingTeacher:
    """Passes calls through and counts them and the states labelled, per `phase` (set by the learner)."""

    def __init__(self, teacher: Teacher, phase: str = "distill"):
        self.teacher, self.obs_keys, self.phase = teacher, teacher.obs_keys, phase
        self.calls: dict[str, int] = {}
        self.labels: dict[str, int] = {}

    def act(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> TeacherOutput:
        self.calls[self.phase] = self.calls.get(self.phase, 0) + 1
        self.labels[self.phase] = self.labels.get(self.phase, 0) + len(next(iter(obs.values())))
        return act_in_slots(self.teacher, obs, slots)
