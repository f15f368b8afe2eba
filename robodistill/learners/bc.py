"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (a robomimic-layout file with teacher labels or actions, or a LeRobot
dataset directory) or are collected here with the teacher in control (beta = 1; learners/demos.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from robodistill.evaluation.rollouts import headline
from robodistill.learners.components import Components
from robodistill.learners.demos import demonstrations
from robodistill.learners.fitting import adam_fit, fit_updates, resume_or_normalize
from robodistill.learners.services import Services, policy_state


class BCLearner:
    name = "bc"
    uses_teacher = True
    data_parallel = True  # trainer.workers > 1: its fits run as DDP on Ray Train workers
    builds_student = True

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        self.student = comps.student

    def fit(self) -> dict[str, Any]:
        a, student = self.cfg.algo, self.student
        sources = [(Path(a.dataset), None)] if a.dataset else [(self.services.run.dataset_path, self.comps.task)]
        ckpt = self.services.resume()
        horizons = getattr(student, "horizons", None)  # windows for a student on stacked frames
        buffer = demonstrations(self.services, sources, ckpt is not None, student.obs_keys, horizons)

        updates = int(a.updates)
        fit = adam_fit(student, self.services, updates)
        start = resume_or_normalize(student, fit, ckpt, buffer)

        fit_updates(self.services, fit, student, buffer, start, state=lambda: policy_state(student), desc=self.name)
        result = self.services.evaluate(student, updates, final=True)
        self.services.checkpoint("best", {**policy_state(student), "update": updates})
        return {**headline(result), "teacher_labels": len(buffer), "updates": updates}
