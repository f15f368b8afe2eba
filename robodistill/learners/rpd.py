"""RPD — Refined Policy Distillation: PPO plus a loss that pulls the student toward a teacher, on Stable-Baselines3.

loss = PPO clipped surrogate + c_v * value loss - c_ent * entropy + lambda(t) * L_distill

L_distill is taken on the minibatch's own (student-visited) states:
  mse  (default)  squared error between the student's mean action and the teacher's action (summed over dims)
  kl              Gaussian reverse KL(N_student || N_teacher), for teachers that give a std
  nll             -log N(a_teacher; mu_student, sigma_student)
lambda(t) is constant, or cosine-annealed from `value` to `floor` over `anneal_steps` env steps; with a floor of 0
the teacher is no longer called at all after that. The teacher labels every state of a rollout once, in batched calls right after the rollout, and the
labels travel with the rollout through every epoch and minibatch (the original code re-queries the teacher for each
minibatch of each epoch: the same labels at several times the cost).

`RPD` is SB3's `PPO` with its rollout collection, rollout buffer and update extended; `RPDLearner.fit` runs it in the
run with the plumbing PPO uses (`learners.sb3`). It relies on SB3 internals (`PPO.collect_rollouts` and `train`, the
rollout buffers' `reset`, `get`, `_get_samples` and `swap_and_flatten`, the policy's `extract_features`,
`mlp_extractor` and `_get_action_dist_from_latent`): written against stable-baselines3 2.x (tested with 2.9.2);
pyproject bounds it below 3.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv

from robodistill.errors import UserError
from robodistill.learners.components import Components
from robodistill.learners.sb3 import StudentView, check_sb3_run, make_model, make_vec_env, train_in_run
from robodistill.learners.schedules import DistillWeight
from robodistill.learners.services import Services
from robodistill.teachers import CountingTeacher, Teacher, check_teacher, query_teacher

DISTILL_LOSSES = ("mse", "kl", "nll")


# ---- the rollout buffer, with the teacher's labels stored next to each collected state -----------------------------
class LabelledSamples(NamedTuple):
    rollout: Any  # SB3's RolloutBufferSamples / DictRolloutBufferSamples
    teacher_action: torch.Tensor  # (B, A)
    teacher_mean: torch.Tensor | None  # (B, A)
    teacher_std: torch.Tensor | None  # (B, A)


class _TeacherLabels:
    """Mixin for SB3's rollout buffers: per-state teacher labels, flattened and minibatched with everything else."""

    def reset(self) -> None:
        super().reset()
        shape = (self.buffer_size, self.n_envs, self.action_dim)
        self.teacher_action = np.zeros(shape, np.float32)
        self.teacher_mean: np.ndarray | None = None
        self.teacher_std: np.ndarray | None = None
        self.labelled = False

    def get(self, batch_size: int | None = None):
        if not self.generator_ready:
            for name in ("teacher_action", "teacher_mean", "teacher_std"):
                if getattr(self, name) is not None:
                    setattr(self, name, self.swap_and_flatten(getattr(self, name)))  # (T, N, A) -> (N * T, A)
        yield from super().get(batch_size)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> LabelledSamples:
        def rows(x: np.ndarray | None) -> torch.Tensor | None:
            return None if x is None else self.to_torch(x[batch_inds])

        return LabelledSamples(
            super()._get_samples(batch_inds, env),
            rows(self.teacher_action),
            rows(self.teacher_mean),
            rows(self.teacher_std),
        )


class LabelledRolloutBuffer(_TeacherLabels, RolloutBuffer):
    pass


class LabelledDictRolloutBuffer(_TeacherLabels, DictRolloutBuffer):
    pass


# ---- the algorithm ---------------------------------------------------------------------------------------------------
class RPD(PPO):
    """SB3's PPO with a distillation term toward `teacher`, whose labels are taken once per collected state."""

    def __init__(
        self,
        policy: str,
        env: VecEnv,
        teacher: Teacher,
        student_view: StudentView,
        distill_loss: str,
        distill_weight: DistillWeight,
        label_batch_size: int,
        **ppo_kwargs: Any,
    ):
        if distill_loss not in DISTILL_LOSSES:
            raise UserError(f"unknown distill_loss {distill_loss!r}; choose one of {', '.join(DISTILL_LOSSES)}")
        self.teacher = CountingTeacher(teacher)  # counts every state it labels, per phase
        self.student_view = student_view
        self.distill_loss, self.distill_weight = distill_loss, distill_weight
        self.label_batch_size = label_batch_size
        self.steps = {"distill": 0, "annealed": 0}  # env steps collected while lambda > 0 / after it reached 0
        self.current_lambda = self.distill_weight(0)
        self.last_train_stats: dict[str, float] = {}  # the latest update's losses, lambda and teacher counts
        dict_obs = student_view.observation_space.__class__.__name__ == "Dict"
        buffer_class = LabelledDictRolloutBuffer if dict_obs else LabelledRolloutBuffer
        super().__init__(policy, env, rollout_buffer_class=buffer_class, **ppo_kwargs)

    def _excluded_save_params(self) -> list[str]:
        # the .zip is a plain PPO model: a teacher or env view is no part of the student
        return [*super()._excluded_save_params(), "teacher", "student_view", "distill_weight", "rollout_buffer_class"]

    # 1. collect a rollout with SB3's PPO, then label every state of it once
    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        self.current_lambda = self.distill_weight(self.num_timesteps)  # lambda for this rollout's update
        labelling = self.current_lambda > 0
        self.teacher.phase = "distill" if labelling else "annealed"
        before = self.num_timesteps
        if labelling:
            self.student_view.start_recording()
        try:
            complete = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        finally:
            teacher_obs = self.student_view.stop_recording() if labelling else []
        self.steps[self.teacher.phase] += self.num_timesteps - before
        if complete and labelling:
            self.label_rollout(rollout_buffer, teacher_obs)
        return complete

    def label_rollout(self, buffer: RolloutBuffer, teacher_obs: list[dict[str, np.ndarray]]) -> None:
        """Teacher labels for all T x N states of the rollout, in batches of `label_batch_size`."""
        T, N, A = len(teacher_obs), buffer.n_envs, buffer.action_dim
        flat = {k: np.concatenate([o[k] for o in teacher_obs]) for k in teacher_obs[0]}  # (T * N, ...), step-major
        outs = []
        for start in range(0, T * N, self.label_batch_size):
            chunk = {k: v[start : start + self.label_batch_size] for k, v in flat.items()}
            outs.append(query_teacher(self.teacher, chunk, A))
        buffer.teacher_action = np.concatenate([o.action for o in outs]).reshape(T, N, A)
        if all(o.mean is not None for o in outs):
            buffer.teacher_mean = np.concatenate([o.mean for o in outs]).reshape(T, N, A)
        if all(o.std is not None for o in outs):
            buffer.teacher_std = np.concatenate([o.std for o in outs]).reshape(T, N, A)
        buffer.labelled = True

    # 2. the distillation term on a minibatch
    def distill(self, dist: torch.distributions.Normal, labels: LabelledSamples) -> torch.Tensor:
        """L_distill of the student's action distribution on the minibatch's states against the stored labels.

        Each loss sums over action dimensions and averages over states, so one lambda means the same for all three.
        """
        if self.distill_loss == "mse":
            return ((dist.mean - labels.teacher_action) ** 2).sum(-1).mean()
        if self.distill_loss == "nll":
            return -dist.log_prob(labels.teacher_action).sum(-1).mean()
        if labels.teacher_std is None:
            raise UserError("distill_loss=kl needs a teacher that gives a std (sb3 PPO, a robodistill checkpoint)")
        mean_t = labels.teacher_mean if labels.teacher_mean is not None else labels.teacher_action
        teacher = torch.distributions.Normal(mean_t, labels.teacher_std)
        return torch.distributions.kl_divergence(dist, teacher).sum(-1).mean()  # KL(student || teacher)

    # 3. PPO's update with lambda * L_distill added
    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)
        lam = self.current_lambda if self.rollout_buffer.labelled else 0.0
        logs: dict[str, list[float]] = {k: [] for k in ("pg", "value", "entropy", "distill", "clip", "kl")}

        continue_training = True
        for _ in range(self.n_epochs):
            for batch in self.rollout_buffer.get(self.batch_size):
                data = batch.rollout
                # one forward pass gives the value, the action distribution and its log-prob of the taken actions
                features = self.policy.extract_features(data.observations)
                if self.policy.share_features_extractor:
                    latent_pi, latent_vf = self.policy.mlp_extractor(features)
                else:
                    latent_pi = self.policy.mlp_extractor.forward_actor(features[0])
                    latent_vf = self.policy.mlp_extractor.forward_critic(features[1])
                action_dist = self.policy._get_action_dist_from_latent(latent_pi)
                values = self.policy.value_net(latent_vf).flatten()
                log_prob = action_dist.log_prob(data.actions)
                entropy = action_dist.entropy()

                advantages = data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = torch.exp(log_prob - data.old_log_prob)
                policy_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is not None:
                    values = data.old_values + torch.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(data.returns, values)
                entropy_loss = -torch.mean(entropy) if entropy is not None else torch.mean(log_prob)

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if lam > 0:
                    distill_loss = self.distill(action_dist.distribution, batch)
                    loss = loss + lam * distill_loss
                    logs["distill"].append(distill_loss.item())

                with torch.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                logs["pg"].append(policy_loss.item())
                logs["value"].append(value_loss.item())
                logs["entropy"].append(entropy_loss.item())
                logs["clip"].append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                logs["kl"].append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        self.last_train_stats = {
            "train/policy_gradient_loss": float(np.mean(logs["pg"])),
            "train/value_loss": float(np.mean(logs["value"])),
            "train/entropy_loss": float(np.mean(logs["entropy"])),
            "train/approx_kl": float(np.mean(logs["kl"])),
            "train/clip_fraction": float(np.mean(logs["clip"])),
            "train/explained_variance": float(
                explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
            ),
            "distill/lambda": lam,
            "distill/teacher_labels": sum(self.teacher.labels.values()),
            "distill/teacher_calls": sum(self.teacher.calls.values()),
        }
        if logs["distill"]:
            self.last_train_stats["distill/loss"] = float(np.mean(logs["distill"]))
        for k, v in self.last_train_stats.items():
            self.logger.record(k, v)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    # counters that resume must restore
    def counters(self) -> dict[str, dict[str, int]]:
        return {"steps": dict(self.steps), "calls": dict(self.teacher.calls), "labels": dict(self.teacher.labels)}

    def set_counters(self, counters: dict[str, dict[str, int]]) -> None:
        self.steps = dict(counters["steps"])
        self.teacher.calls, self.teacher.labels = dict(counters["calls"]), dict(counters["labels"])


# ---- the learner: RPD in the run, on the task's reward with the configured teacher ------------------------------------
class RPDLearner:
    """`algo=rpd`: RPD on the task's reward with the configured teacher; a state or pixel student."""

    name = "rpd"
    uses_teacher = True
    builds_student = False  # the student is an SB3 policy, built from `student.*` by `policy_spec`

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services

    def fit(self) -> dict[str, Any]:
        cfg, a, comps, services = self.cfg, self.cfg.algo, self.comps, self.services
        check_sb3_run(cfg)
        if a.distill_loss == "kl" and check_teacher(comps.teacher, comps.env).std is None:
            raise UserError(
                "algo.distill_loss=kl needs a teacher that gives a std (teacher=sb3 with a PPO model, "
                "teacher=checkpoint); this teacher gives actions only: use distill_loss=mse or nll"
            )
        try:
            weight = DistillWeight(**a.distill_weight)
        except (TypeError, ValueError) as exc:
            raise UserError(f"algo.distill_weight: {exc}") from exc

        # the student acts on its own keys; the teacher's view of every state it acted on is kept for labelling
        venv, student_view = make_vec_env(cfg, comps, teacher_keys=list(comps.teacher.obs_keys))
        model = make_model(
            RPD,
            cfg,
            venv,
            teacher=comps.teacher,
            student_view=student_view,
            distill_loss=str(a.distill_loss),
            distill_weight=weight,
            label_batch_size=int(a.label_batch_size),
        )

        ckpt = services.resume()  # after the model is built: SB3 seeds the global RNGs, resume restores them
        if ckpt is not None:
            model.set_counters(ckpt["counters"])
            teacher_success = ckpt["teacher_success"]
        else:  # the teacher's own success: the line the student should cross
            teacher = services.evaluate_teacher()  # its success rate, or mean return on a task without success
            services.log(0, {f"eval/teacher_{k}": v for k, v in teacher.items()})
            teacher_success = next(iter(teacher.values()))

        def log_update() -> None:  # lambda, the PPO and distillation losses and the teacher's counts of an update
            if model.last_train_stats:
                services.log(model.num_timesteps, model.last_train_stats)

        summary = train_in_run(
            model,
            venv,
            services,
            ckpt,
            teacher_success,
            state=lambda: {"counters": model.counters()},
            after_update=log_update,
        )

        # teacher labels per collected env step, counted at the teacher, while lambda > 0 and after it reached 0
        steps, labels = model.steps, model.teacher.labels
        return {
            **summary,
            "teacher_calls": sum(model.teacher.calls.values()),
            "teacher_labels_per_step": labels.get("distill", 0) / steps["distill"] if steps["distill"] else None,
            "teacher_labels_per_step_after_anneal": (
                labels.get("annealed", 0) / steps["annealed"] if steps["annealed"] else None
            ),
            "steps_distill": steps["distill"],
            "steps_annealed": steps["annealed"],
        }
