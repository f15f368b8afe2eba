"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (any robomimic-layout file with teacher labels or actions) or are
collected here with the teacher in control (beta = 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import trange

from robodistill.collector import Collector, make_vector_env
from robodistill.dataset import BackgroundEpisodeWriter
from robodistill.errors import UserError
from robodistill.learners.base import Learner
from robodistill.run import Run
from robodistill.tasks import env_fns, env_meta
from robodistill.training import lr_scheduler, regress


class BCLearner(Learner):
    name = "bc"

    def fit(self, run: Run) -> dict[str, Any]:
        a, student = self.algo, self.student
        path = self.dataset(run)
        if path == run.dataset_path and not (self.cfg.get("resume") and path.exists()):
            self.collect_demos(run)
        buffer = self.load_buffer(path)
        if len(buffer) == 0:
            raise UserError(f"dataset {path} holds no samples")

        updates, chunk = int(a.updates), int(a.log_every)
        optimizer = self.make_optimizer()
        scheduler = lr_scheduler(optimizer, updates, a.get("lr_schedule", "constant"), float(a.lr))
        rng = np.random.default_rng(int(self.cfg.seed))
        start = 0
        ckpt = self.resume_from(run, optimizer)
        if ckpt is not None:
            start = ckpt["update"]
            rng.bit_generator.state = ckpt["sample_rng"]
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            self.restore_extra(ckpt)
        else:
            self.fit_normalizers(buffer)

        for done in trange(start, updates, chunk, desc=self.name, disable=not self.progress):
            steps = min(chunk, updates - done)
            losses = regress(student, optimizer, buffer, steps, int(a.batch_size), rng, progress=False,
                             scheduler=scheduler, loss_fn=self.loss_fn(), after_step=self.after_step)  # fmt: skip
            run.log(done + steps, {"update": done + steps, **losses})
            run.save_checkpoint(
                {**self.student_payload(), "optimizer": optimizer.state_dict(), "update": done + steps,
                 "sample_rng": rng.bit_generator.state, **self.extra_state(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None},
                "last",
            )  # fmt: skip
        result = self.evaluate_student(run, updates, final=True)
        run.save_checkpoint({**self.student_payload(), "update": updates}, "best")
        return {"success_rate": result["success_rate"], "teacher_labels": len(buffer), "updates": updates}

    def dataset(self, run: Run) -> Path:
        """The demonstrations: `algo.dataset`, else the run's own dataset (collected unless resuming)."""
        return Path(self.algo.dataset) if self.algo.get("dataset") else run.dataset_path

    def collect_demos(self, run: Run) -> None:
        """Teacher-driven demonstrations: `num_demos` episodes, or episodes until `labels` samples."""
        a, comps = self.algo, self.comps
        venv = make_vector_env(env_fns(comps.task, int(self.cfg.collector.num_envs), comps.obs_mode))
        with BackgroundEpisodeWriter(run.dataset_path, env_meta(comps.env, comps.task, comps.obs_mode)) as writer:
            collector = Collector(venv, comps.teacher, None, writer, seed=int(self.cfg.seed))
            labels = a.get("labels")
            stats = collector.collect(
                None if labels else int(a.num_demos), beta=1.0, seed=int(self.cfg.seed) * 100_003,
                min_steps=int(labels) if labels else None, progress=self.progress, desc="teacher demos",
            )  # fmt: skip
        venv.close()
        run.log(0, {f"demos/{k}": v for k, v in stats.as_dict().items()})
