"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (any robomimic-layout file with teacher labels or actions) or are
collected here with the teacher in control (beta = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import trange

from robodistill.collector import Collector, make_vector_env
from robodistill.dataset import BackgroundEpisodeWriter
from robodistill.errors import UserError
from robodistill.learners.base import Learner
from robodistill.run import Run
from robodistill.tasks import env_fns, env_meta
from robodistill.training import load_labels, regress


class BCLearner(Learner):
    name = "bc"

    def fit(self, run: Run) -> dict[str, Any]:
        a, student = self.algo, self.student
        path = a.get("dataset") or run.dataset_path
        if not a.get("dataset") and not (self.cfg.get("resume") and run.dataset_path.exists()):
            self.collect_demos(run)
        buffer = load_labels(path, student.obs_keys, self.comps.shape_meta)
        if len(buffer) == 0:
            raise UserError(f"dataset {path} holds no samples")

        optimizer = torch.optim.Adam(student.parameters(), lr=float(a.lr))
        rng = np.random.default_rng(int(self.cfg.seed))
        start = 0
        ckpt = self.resume_from(run, optimizer)
        if ckpt is not None:
            start = ckpt["update"]
            rng.bit_generator.state = ckpt["sample_rng"]
        else:
            student.fit_normalizers({k: buffer.view(k) for k in student.obs_keys})

        updates, chunk = int(a.updates), int(a.log_every)
        for done in trange(start, updates, chunk, desc="bc", disable=not self.progress):
            steps = min(chunk, updates - done)
            losses = regress(student, optimizer, buffer, steps, int(a.batch_size), rng, progress=False)
            run.log(done + steps, {"update": done + steps, **losses})
            run.save_checkpoint(
                {**self.student_payload(), "optimizer": optimizer.state_dict(), "update": done + steps,
                 "sample_rng": rng.bit_generator.state},
                "last",
            )  # fmt: skip
        result = self.evaluate_student(run, updates, final=True)
        run.save_checkpoint({**self.student_payload(), "update": updates}, "best")
        return {"success_rate": result["success_rate"], "teacher_labels": len(buffer), "updates": updates}

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
