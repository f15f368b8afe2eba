"""DAgger: the mixture beta*teacher + (1-beta)*student drives, the teacher labels every visited state, refit.

Each round: collect episodes with the round's beta (per env, per step), append them to the dataset on disk and to
the label buffer (aggregation), then take a fixed number of gradient steps on the whole buffer — the student keeps
its weights between rounds, so the cost per round stays flat instead of retraining from scratch. The buffer keeps
at most `collector.image_memory_mb` of camera images in memory; beyond it minibatches read them from a temporary
file, so memory stays flat however many rounds aggregate.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from policies.samplers import driving
from robodistill.data.labels import episode_labels, load_labels
from robodistill.learners.components import Components
from robodistill.learners.fitting import adam_fit, label_buffer
from robodistill.learners.rounds import Rounds
from robodistill.learners.schedules import BetaSchedule
from robodistill.learners.services import Services, load_policy_state, policy_state


class DAggerLearner:
    name = "dagger"
    uses_teacher = True
    data_parallel = True  # trainer.workers > 1: its fits run as DDP on Ray Train workers
    builds_student = True

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        self.student = comps.student

    def fit(self) -> dict[str, Any]:
        cfg, a, student = self.cfg, self.cfg.algo, self.student
        schedule = BetaSchedule(**a.beta)
        steps, batch = int(a.updates_per_round), int(a.batch_size)  # per round
        updates = int(a.rounds) * steps
        fit = adam_fit(student, self.services, updates)
        buffer = label_buffer(self.services)
        ckpt = self.services.resume()
        if ckpt is not None:
            load_policy_state(student, ckpt)
            fit.load_state_dict(ckpt)

        keys, horizons = student.obs_keys, getattr(student, "horizons", None)  # windows for stacked frames
        with Rounds(self.services, ckpt, driving(student), bool(cfg.collector.student_deterministic)) as rounds:
            if ckpt is not None:  # aggregation: every episode of the checkpointed rounds is a labelled state
                buffer = load_labels(rounds.dataset, keys, self.comps.shape_meta, horizons, into=buffer)
            for r in rounds:
                beta = schedule(r)
                rounds.collect(r, beta, lambda episode: buffer.add(episode_labels(episode, keys, horizons)))
                if r == 0:
                    student.fit_normalizers({k: buffer.view(k) for k in student.obs_keys})
                losses = fit.regress(
                    student, buffer, steps, batch, progress=self.services.progress, desc=f"round {r} fit"
                )
                metrics = {"dataset_size": len(buffer), **losses}
                rounds.end(r, student, metrics, {**policy_state(student), **fit.state_dict()})
        return rounds.finish(student, updates)
