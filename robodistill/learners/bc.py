"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (any robomimic-layout file with teacher labels or actions) or are
collected here with the teacher in control (beta = 1; learners/demos.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from robodistill.evaluation.rollouts import headline
from robodistill.learners.components import Components
from robodistill.learners.demos import demonstrations
from robodistill.learners.fitting import FitState, fit_updates, resume_or_normalize
from robodistill.learners.services import Services, policy_state


class BCLearner:
    name = "bc"
    uses_teacher = True
    builds_student = True

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        self.student = comps.student

    def fit(self) -> dict[str, Any]:
        cfg, a, student = self.cfg, self.cfg.algo, self.student
        sources = [(Path(a.dataset), None)] if a.dataset else [(self.services.run.dataset_path, self.comps.task)]
        ckpt = self.services.resume()
        horizons = getattr(student, "horizons", None)  # windows for a student on stacked frames
        buffer = demonstrations(self.services, sources, ckpt is not None, student.obs_keys, horizons)

        updates = int(a.updates)
        fit = FitState(torch.optim.Adam(student.parameters(), lr=float(a.lr)), updates, a.lr_schedule, int(cfg.seed))
        start = resume_or_normalize(student, fit, ckpt, buffer)

        fit_updates(self.services, fit, student, buffer, start, state=lambda: policy_state(student), desc=self.name)
        result = self.services.evaluate(student, updates, final=True)
        self.services.checkpoint("best", {**policy_state(student), "update": updates})
        return {**headline(result), "teacher_labels": len(buffer), "updates": updates}
