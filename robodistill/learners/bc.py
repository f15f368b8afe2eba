"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (any robomimic-layout file with teacher labels or actions) or are
collected here with the teacher in control (beta = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import trange

from robodistill.buffer import LabelBuffer
from robodistill.collector import Collector, make_vector_env
from robodistill.dataset import BackgroundEpisodeWriter, dataset_summary, iter_demos, open_dataset
from robodistill.errors import UserError
from robodistill.learners.base import Learner
from robodistill.run import Run
from robodistill.tasks import env_fns, env_meta
from robodistill.training import LABEL, regress


class BCLearner(Learner):
    name = "bc"

    def fit(self, run: Run) -> dict[str, Any]:
        a, student = self.algo, self.student
        path = a.get("dataset") or run.dataset_path
        if not a.get("dataset") and not (self.cfg.get("resume") and run.dataset_path.exists()):
            self.collect_demos(run)
        buffer = self.load(path)
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

    def load(self, path) -> LabelBuffer:
        """Read the dataset demo by demo into a label buffer (teacher labels, else executed actions)."""
        with open_dataset(path) as f:
            first = next(iter(f["data"].values()), None)
            if first is None:
                raise UserError(f"dataset {path} holds no demos")
            label = "teacher/actions" if "teacher/actions" in first else "actions"
        buffer = LabelBuffer()
        meta = self.comps.shape_meta
        for demo in iter_demos(path, [f"obs/{k}" for k in self.student.obs_keys] + [label]):
            for k in self.student.obs_keys:
                if list(demo[f"obs/{k}"].shape[1:]) != list(meta["obs"][k]["shape"]):
                    raise UserError(f"dataset {path} has obs/{k} of shape {demo[f'obs/{k}'].shape[1:]}, "
                                    f"the task needs {tuple(meta['obs'][k]['shape'])}")  # fmt: skip
            if demo[label].shape[1:] != (self.student.action_dim,):
                raise UserError(f"dataset {path} has {label} of dim {demo[label].shape[1:]}, "
                                f"the task needs ({self.student.action_dim},)")  # fmt: skip
            buffer.add({**{k: demo[f"obs/{k}"] for k in self.student.obs_keys}, LABEL: demo[label]})
        summary = dataset_summary(path)
        if summary["samples"] != len(buffer):
            raise UserError(f"dataset {path} says it holds {summary['samples']} samples but {len(buffer)} were read")
        return buffer
