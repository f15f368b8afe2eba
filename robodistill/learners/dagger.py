"""DAgger: the mixture beta*teacher + (1-beta)*student drives, the teacher labels every visited state, refit.

Each round: collect episodes with the round's beta (per env, per step), append them to the dataset on disk and to
the in-memory label buffer (aggregation), then take a fixed number of gradient steps on the whole buffer — the
student keeps its weights between rounds, so the cost per round stays flat instead of retraining from scratch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robodistill.data.buffer import LabelBuffer
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import BackgroundEpisodeWriter
from robodistill.data.labels import LABEL
from robodistill.learners.base import Learner
from robodistill.learners.fitting import lr_scheduler, regress
from robodistill.learners.schedules import BetaSchedule
from robodistill.rundir import RunDir
from robodistill.tasks import env_fns, env_meta


class DAggerLearner(Learner):
    name = "dagger"
    aggregate = True  # refit on every round's states; False: on this round's only (on-policy, e.g. OPD)
    label_key = LABEL  # what the student regresses onto

    def student_deterministic(self) -> bool:
        """Whether the student executes its mean/argmax action in the collector (else it samples)."""
        return bool(self.cfg.collector.student_deterministic)

    def round_metrics(self, buffer: LabelBuffer) -> dict[str, float]:
        """Logged each round from the round's samples, before the update."""
        return {}

    def fit(self, run: RunDir) -> dict[str, Any]:
        a, comps, student = self.algo, self.comps, self.student
        schedule = BetaSchedule(**a.beta)
        optimizer = self.make_optimizer()
        total_updates = int(a.rounds) * int(a.updates_per_round)
        scheduler = lr_scheduler(optimizer, total_updates, a.get("lr_schedule", "constant"), float(a.lr))
        rng = np.random.default_rng(int(self.cfg.seed))
        buffer = LabelBuffer()
        start_round, labels, best = 0, 0, -1.0

        ckpt = self.resume_from(run, optimizer)
        if ckpt is not None:
            start_round, labels, best = ckpt["round"] + 1, ckpt["labels"], ckpt["best_success"]
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            rng.bit_generator.state = ckpt["sample_rng"]
            self.restore_extra(ckpt)
            if self.aggregate:  # every episode already on disk is a labelled state: aggregate it all
                buffer = self.load_buffer(run.dataset_path)

        venv = make_vector_env(env_fns(comps.task, int(self.cfg.collector.num_envs), comps.obs_mode))
        writer = BackgroundEpisodeWriter(
            run.dataset_path, env_meta(comps.env, comps.task, comps.obs_mode), append=ckpt is not None
        )
        collector = Collector(
            venv, comps.teacher, self.driver(), writer, seed=int(self.cfg.seed),
            student_deterministic=self.student_deterministic(),
        )  # fmt: skip
        if ckpt is not None:
            collector.rng.bit_generator.state = ckpt["collector_rng"]

        def add_episode(episode: dict[str, Any]) -> None:
            buffer.add(self.episode_samples(episode))

        try:
            for r in range(start_round, int(a.rounds)):
                beta = schedule(r)
                if not self.aggregate:
                    buffer = LabelBuffer()
                stats = collector.collect(
                    int(a.episodes_per_round), beta, seed=int(self.cfg.seed) * 100_003 + r * 1_000,
                    on_episode=add_episode, progress=self.progress, desc=f"round {r} collect (beta={beta:.2f})",
                )  # fmt: skip
                labels += stats.steps
                if r == start_round and ckpt is None:
                    self.fit_normalizers(buffer)
                before = self.round_metrics(buffer)
                losses = regress(
                    student, optimizer, buffer, int(a.updates_per_round), int(a.batch_size), rng,
                    progress=self.progress, desc=f"round {r} fit", scheduler=scheduler, loss_fn=self.loss_fn(),
                    after_step=self.after_step, label=self.label_key,
                )  # fmt: skip
                metrics = {"round": r, "beta": beta, "teacher_labels": labels, "dataset_size": len(buffer), **before,
                           **{f"collect/{k}": v for k, v in stats.as_dict().items()}, **losses}  # fmt: skip
                eval_every = int(a.eval_every)
                if eval_every > 0 and (r + 1) % eval_every == 0 and r + 1 < int(a.rounds):
                    success = self.evaluate_student(run, labels)["success_rate"]
                    metrics["eval/success_rate"] = success
                    if success > best:
                        best = success
                        run.save_checkpoint({**self.student_payload(), "round": r}, "best")
                run.log(labels, metrics)
                run.save_checkpoint(
                    {**self.student_payload(), "optimizer": optimizer.state_dict(), "round": r, "labels": labels,
                     "best_success": best, "sample_rng": rng.bit_generator.state,
                     "collector_rng": collector.rng.bit_generator.state,
                     "scheduler": scheduler.state_dict() if scheduler is not None else None, **self.extra_state()},
                    "last",
                )  # fmt: skip
        finally:
            writer.close()
            venv.close()

        result = self.evaluate_student(run, labels, final=True)
        if result["success_rate"] >= best:
            run.save_checkpoint({**self.student_payload(), "round": int(a.rounds) - 1}, "best")
        return {"success_rate": result["success_rate"], "teacher_labels": labels, "updates": total_updates}
