"""Consistency distillation: a one-step head from a trained diffusion-policy teacher (teacher=diffusion).

1. The student is the teacher's network read as a consistency function f(x_t, t) (policies/consistency.py),
   warm-started from the teacher's weights; an EMA copy of it is the target network. Its normalisers are the
   teacher's: the head reads and writes the teacher's units.
2. Per sample: a clean chunk x_0, a pair of adjacent steps t_{n+1} > t_n of the teacher's DDIM grid, and
   x_{t_{n+1}} = q(x_0, t_{n+1}).
3. The teacher takes one probability-flow ODE (DDIM) step x_{t_{n+1}} -> x_hat_{t_n}.
4. Loss: d(f(x_{t_{n+1}}, t_{n+1}), f_ema(x_hat_{t_n}, t_n)) + dsm_weight * d(f(x_{t_{n+1}}, t_{n+1}), x_0), with
   d the pseudo-Huber distance; after each step the EMA target moves toward the student.
Two ways to get the samples (`algo.on_policy`):
- offline (default, `fit_offline`): x_0 is a demonstration window: `algo.dataset`, else the teacher run's
  demonstrations, else demonstrations collected here with the teacher; `algo.updates` updates.
- on-policy (`fit_on_policy`): rounds in which the one-step student drives in the collector while the diffusion
  teacher labels every state it visits with a chunk (x_0), aggregated round by round; `algo.updates_per_round`
  updates per round.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from policies.consistency import ConsistencyPolicy, pseudo_huber
from robodistill.config import to_dict
from robodistill.data.labels import LABEL, load_labels, sequence_labels
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import headline, student_policy
from robodistill.learners.components import Components
from robodistill.learners.demos import demonstrations
from robodistill.learners.fitting import FitState, fit_updates, label_buffer
from robodistill.learners.rounds import Rounds
from robodistill.learners.schedules import BetaSchedule
from robodistill.learners.services import Services, load_policy_state, policy_state
from robodistill.rundir import RunDir
from robodistill.teachers import DiffusionTeacher


def unwrap_diffusion_teacher(teacher: Any) -> DiffusionTeacher:
    """The DiffusionTeacher inside `teacher` (which may wrap it, e.g. an imperfect teacher), or one clear error."""
    while teacher is not None and not isinstance(teacher, DiffusionTeacher):
        teacher = getattr(teacher, "teacher", None)
    if teacher is None:
        raise UserError(
            "algo=consistency distils a diffusion policy: use teacher=diffusion teacher.path=<an algo=diffusion run>"
        )
    return teacher


class ConsistencyLearner:
    name = "consistency"
    uses_teacher = True
    builds_student = False  # the student is the teacher's network, warm-started from its weights

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        a = cfg.algo
        self.dp = unwrap_diffusion_teacher(comps.teacher).policy.eval().requires_grad_(False)
        if self.dp.kind != "diffusion" or self.dp.noise_levels != "uniform":
            raise UserError(
                f"algo=consistency needs a plain diffusion-policy teacher, got {self.dp.kind} "
                f"({self.dp.noise_levels} noise levels)"
            )
        self.grid = self.dp.schedule.ddim_timesteps(int(a.teacher_steps))  # descending, ends at 0
        config = {k: v for k, v in self.dp.config.items() if k != "kind"}
        self.student = ConsistencyPolicy(
            **config, t_max=self.grid[0], sigma_data=float(a.sigma_data), alpha_min=float(a.alpha_min)
        ).to(comps.device)
        self.student.load_state_dict(self.dp.state_dict())  # warm start: at init F(x, t) is the teacher's x_0 estimate
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.runner = student_policy(self.student, to_dict(cfg.sampler))  # the one-step head that drives on-policy

    def fit(self) -> dict[str, Any]:
        return self.fit_on_policy() if self.cfg.algo.on_policy else self.fit_offline()

    # ---- the objective -------------------------------------------------------------------------------------------
    def loss(self, obs: dict[str, torch.Tensor], chunk: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        s, dp = self.student, self.dp
        x0 = s.normalize_actions(chunk)  # (B, T_p, A)
        grid = torch.tensor(self.grid, device=x0.device)
        n = torch.randint(0, len(grid) - 1, (len(x0),), device=x0.device)
        t_hi, t_lo = grid[n], grid[n + 1]
        x_hi = s.schedule.add_noise(x0, torch.randn_like(x0), t_hi)
        with torch.no_grad():
            x_lo = dp.schedule.ddim_step(dp.eps(x_hi, t_hi, dp.condition(obs)), t_hi, t_lo, x_hi)  # teacher ODE step
            target = self.target.consistency(x_lo, t_lo, self.target.condition(obs))
        pred = s.consistency(x_hi, t_hi, s.condition(obs))
        cd = pseudo_huber(pred - target).mean()
        dsm = pseudo_huber(pred - x0).mean()
        return cd + float(self.cfg.algo.dsm_weight) * dsm, {"consistency": cd.item(), "denoising": dsm.item()}

    @torch.no_grad()
    def update_target(self) -> None:
        """After every optimizer step: the target network's EMA step toward the student."""
        mu = float(self.cfg.algo.target_ema)
        for t, p in zip(self.target.parameters(), self.student.parameters(), strict=True):
            t.lerp_(p, 1.0 - mu)

    def optimization(self, updates: int) -> FitState:
        a = self.cfg.algo
        optimizer = torch.optim.AdamW(self.student.parameters(), lr=float(a.lr), weight_decay=1e-6)
        return FitState(optimizer, updates, a.lr_schedule, int(self.cfg.seed))

    def state(self, fit: FitState) -> dict[str, Any]:
        """What a checkpoint stores: the student, the fit's state and the EMA target."""
        return {**policy_state(self.student), **fit.state_dict(), "target": self.target.state_dict()}

    def restore(self, ckpt: dict[str, Any], fit: FitState) -> None:
        load_policy_state(self.student, ckpt)
        self.target.load_state_dict(ckpt["target"])
        fit.load_state_dict(ckpt)

    # ---- offline: demonstration windows --------------------------------------------------------------------------
    def fit_offline(self) -> dict[str, Any]:
        a, student, services = self.cfg.algo, self.student, self.services
        teacher_data = RunDir(str(self.cfg.teacher.path)).dataset_path
        if a.dataset:
            sources = [(Path(a.dataset), None)]
        elif teacher_data.exists():
            sources = [(teacher_data, None)]
        else:
            sources = [(services.run.dataset_path, self.comps.task)]
        ckpt = services.resume()
        buffer = demonstrations(services, sources, ckpt is not None, student.obs_keys, student.horizons)

        updates = int(a.updates)
        fit = self.optimization(updates)
        start = 0
        if ckpt is not None:
            self.restore(ckpt, fit)
            start = ckpt["update"]
        fit_updates(
            services,
            fit,
            student,
            buffer,
            start,
            state=lambda: self.state(fit),
            desc=self.name,
            loss_fn=self.loss,
            after_step=self.update_target,
        )
        result = services.evaluate(student, updates, final=True)
        services.checkpoint("best", {**policy_state(student), "update": updates})
        return {**headline(result), "teacher_labels": len(buffer), "updates": updates}

    # ---- on-policy: the one-step head drives, the teacher's chunks at the states it visits -----------------------
    def fit_on_policy(self) -> dict[str, Any]:
        cfg, a, student = self.cfg, self.cfg.algo, self.student
        keys, horizons = student.obs_keys, student.horizons
        schedule = BetaSchedule(**a.beta)
        steps, batch = int(a.updates_per_round), int(a.batch_size)  # per round
        updates = int(a.rounds) * steps
        fit = self.optimization(updates)
        buffer = label_buffer(self.services)
        ckpt = self.services.resume()
        if ckpt is not None:
            self.restore(ckpt, fit)

        def add(episode: dict[str, Any]) -> None:
            """Observation histories of the visited states, each with the teacher's chunk there as x_0."""
            samples = sequence_labels(episode["obs"], episode["teacher"]["actions"], keys, horizons)
            buffer.add({**samples, LABEL: episode["teacher"]["chunk"]})

        with Rounds(self.services, ckpt, self.runner, bool(cfg.collector.student_deterministic)) as rounds:
            if ckpt is not None:  # aggregation: every checkpointed round's states, with the stored chunks
                buffer = load_labels(
                    rounds.dataset, keys, self.comps.shape_meta, horizons, chunk_label="teacher/chunk", into=buffer
                )
            for r in rounds:
                beta = schedule(r)
                rounds.collect(r, beta, add)
                losses = fit.regress(
                    student,
                    buffer,
                    steps,
                    batch,
                    loss_fn=self.loss,
                    after_step=self.update_target,
                    progress=self.services.progress,
                    desc=f"round {r} fit",
                )
                rounds.end(r, student, {"dataset_size": len(buffer), **losses}, self.state(fit))
        return rounds.finish(student, updates)
