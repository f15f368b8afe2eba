"""Behaviour cloning: fit the student to teacher actions on teacher-driven states (off-policy).

The demonstrations come from `algo.dataset` (any robomimic-layout file with teacher labels or actions) or are
collected here with the teacher in control (beta = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import trange

from robodistill.config import to_dict
from robodistill.data.buffer import LabelBuffer
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import BackgroundEpisodeWriter
from robodistill.errors import UserError
from robodistill.learners.base import Learner
from robodistill.learners.fitting import lr_scheduler, regress
from robodistill.rundir import RunDir
from robodistill.tasks import env_fns, env_meta, make_env
from robodistill.teachers import make_teacher


class BCLearner(Learner):
    name = "bc"

    def fit(self, run: RunDir) -> dict[str, Any]:
        a, student = self.algo, self.student
        buffers = []
        for path, task in self.sources(run):
            if task is not None and not (self.cfg.get("resume") and path.exists()):
                self.collect_demos(run, path, task)
            buffers.append(self.load_buffer(path))
            if len(buffers[-1]) == 0:
                raise UserError(f"dataset {path} holds no samples")
        buffer = merge(buffers)

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

    def sources(self, run: RunDir) -> list[tuple[Path, Mapping[str, Any] | None]]:
        """The demonstrations, each a dataset path with the task to collect it on (None: given, not collected):
        `algo.dataset`, else the run's own dataset (collected unless resuming)."""
        if self.algo.get("dataset"):
            return [(Path(self.algo.dataset), None)]
        return [(run.dataset_path, self.comps.task)]

    def collect_demos(self, run: RunDir, path: Path, task: Mapping[str, Any]) -> None:
        """Teacher-driven demonstrations of `task` into `path`: `num_demos` episodes, or episodes until `labels`
        samples. The run's task uses the run's teacher; another task gets the same kind of teacher for its env."""
        a, comps = self.algo, self.comps
        env = comps.env if task == comps.task else make_env(task, comps.obs_mode)
        teacher = (
            comps.teacher if task == comps.task else make_teacher(to_dict(self.cfg.teacher), env, int(self.cfg.seed))
        )
        venv = make_vector_env(env_fns(task, int(self.cfg.collector.num_envs), comps.obs_mode))
        path.parent.mkdir(parents=True, exist_ok=True)
        with BackgroundEpisodeWriter(path, env_meta(env, task, comps.obs_mode)) as writer:
            collector = Collector(venv, teacher, None, writer, seed=int(self.cfg.seed))
            labels = a.get("labels")
            stats = collector.collect(
                None if labels else int(a.num_demos), beta=1.0, seed=int(self.cfg.seed) * 100_003,
                min_steps=int(labels) if labels else None, progress=self.progress, desc=f"teacher demos {path.stem}",
            )  # fmt: skip
        venv.close()
        if env is not comps.env:
            env.close()
        run.log(0, {f"demos/{k}": v for k, v in stats.as_dict().items()})


def merge(buffers: list[LabelBuffer]) -> LabelBuffer:
    """One buffer holding the samples of all (one buffer is returned as it is, without a copy)."""
    if len(buffers) == 1:
        return buffers[0]
    out = LabelBuffer()
    for b in buffers:
        out.add({k: b.view(k) for k in b.arrays})
    return out
