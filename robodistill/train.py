"""Train a student as the config says: build the parts, pick the learner, run it in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from robodistill.config import require_values
from robodistill.devices import resolve_device
from robodistill.errors import UserError
from robodistill.evaluation.review import write_review
from robodistill.learners import LEARNERS
from robodistill.learners.components import build
from robodistill.learners.fitting import trainer_workers
from robodistill.learners.services import Services
from robodistill.rundir import RunDir, seed_everything


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run `cfg.algo` in `run_dir`; returns the learner's summary (final success rate, teacher labels)."""
    name = cfg.algo.name
    if name not in LEARNERS:
        raise UserError(f"unknown algo {name!r}; available: {', '.join(LEARNERS)}")
    learner_class = LEARNERS[name]
    teacher = needs_teacher(learner_class, cfg)
    unused = [] if teacher else ["teacher"]  # ppo and sac, a replayed teacher cache: no teacher, none to set
    require_values(cfg, f"algo={name} task={cfg.task.name}", skip=unused)
    resolve_device(cfg.get("device"))  # a GPU that is not there: refused before the run directory is made
    workers = trainer_workers(cfg)
    if workers > 1 and not getattr(learner_class, "data_parallel", False):
        parallel = ", ".join(n for n, c in LEARNERS.items() if getattr(c, "data_parallel", False))
        raise UserError(f"trainer.workers={workers}: algo={name} fits in one process; data-parallel: {parallel}")
    torch.set_num_threads(int(cfg.torch_threads))
    seed_everything(int(cfg.seed))
    run = RunDir.create(cfg, run_dir, resume=bool(cfg.resume))
    comps = build(cfg, teacher=teacher, student=learner_class.builds_student)
    try:
        learner = learner_class(cfg, comps, Services(cfg, comps, run))
        result = learner.fit()
    finally:
        run.close()
        comps.env.close()
    if cfg.review:  # the run's review page (videos, curves, actions): runs/.../review/index.html
        result["review"] = str(write_review([run.dir], run.dir / "review"))
    return result


def needs_teacher(learner_class: Any, cfg: DictConfig) -> bool:
    """Whether a run of this learner builds the configured teacher: the learner's `needs_teacher(cfg)` where it has
    one (e.g. opd replaying a teacher cache), else its `uses_teacher`."""
    check = getattr(learner_class, "needs_teacher", None)
    return bool(check(cfg)) if check is not None else bool(learner_class.uses_teacher)
