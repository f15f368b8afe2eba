"""SFT: supervised fine-tuning of one multi-task policy on demonstrations of several tasks (behaviour cloning).

1. Demonstrations: `algo.datasets` (collector datasets), or collected here (learners/demos.py): `algo.num_demos`
   episodes of the run's task and of each task in `algo.tasks`, driven by that task's teacher (e.g. its scripted
   expert), one dataset per task under `<run>/demos/`. All tasks share the run's task settings (control mode,
   image size) and must share the student's observation and action shapes.
2. Fit the student on all of them at once with its own imitation loss: a token policy (student=vla) conditions
   on each demo's instruction, so one model serves every task, and is fitted with cross-entropy to the tokenised
   actions.
3. Evaluate on the run's task (videos, eval.json), then on every other task; eval.json `tasks` holds each task's
   success rate.
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
from robodistill.tasks import sibling_tasks


class SFTLearner:
    name = "sft"
    uses_teacher = True
    data_parallel = True  # trainer.workers > 1: its fits run as DDP on Ray Train workers
    builds_student = True

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        self.student = comps.student

    def fit(self) -> dict[str, Any]:
        a, student, services = self.cfg.algo, self.student, self.services
        tasks = sibling_tasks(self.comps.task, a.tasks)
        if a.datasets:
            sources = [(Path(p), None) for p in a.datasets]
        else:
            sources = [(services.run.dir / "demos" / f"{t['env_id'].split('/')[-1]}.hdf5", t) for t in tasks]
        ckpt = services.resume()
        buffer = demonstrations(services, sources, ckpt is not None, student.obs_keys)

        updates = int(a.updates)
        fit = adam_fit(student, self.services, updates)
        start = resume_or_normalize(student, fit, ckpt, buffer)

        fit_updates(services, fit, student, buffer, start, state=lambda: policy_state(student), desc=self.name)

        result = services.evaluate(student, updates, final=True)
        services.evaluate_tasks(student, updates, result, tasks[1:])
        services.checkpoint("best", {**policy_state(student), "update": updates})
        return {**headline(result), "teacher_labels": len(buffer), "updates": updates}
