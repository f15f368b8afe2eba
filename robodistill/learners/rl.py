"""RL experts: Stable-Baselines3 PPO or SAC on the task's own reward (`algo=ppo`, `algo=sac`).

The run gets SB3's vector envs and TensorBoard logger, our seeded evaluation every `eval_every` env steps (the
same starts every learner is scored on), state_dict checkpoints at rollout boundaries for `resume=true`, SB3 .zip
models (`sb3/best_model.zip`, `sb3/final_model.zip`) that `teacher=sb3 teacher.path=<run or zip>` loads, and
learning curves (`learning_curves.png`). `RPDLearner` reuses all of this with its own model.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv

from robodistill.config import to_dict
from robodistill.errors import UserError
from robodistill.evaluation.curves import plot_learning_curves, steps_to_success
from robodistill.evaluation.rollouts import evaluate, teacher_policy
from robodistill.learners.base import Learner
from robodistill.learners.sb3 import (
    RunCallback,
    StudentView,
    load_training_state,
    make_vec_env,
    policy_spec,
    save_model_zip,
    training_state,
)
from robodistill.rundir import RunDir, restore_rng
from robodistill.teachers.sb3 import SB3_ALGOS, SB3Student


class RLLearner(Learner):
    """SB3 PPO/SAC on the task's reward; subclasses swap in another model (RPD) through `make_model`."""

    name = "rl"
    uses_teacher = False
    builds_student = False  # the student is an SB3 policy, built from `student.*` by `policy_spec`

    # ---- hooks for subclasses -------------------------------------------------------------------------------------
    def make_model(self, venv: VecEnv, student_view: StudentView, policy: str, kwargs: dict[str, Any]) -> BaseAlgorithm:
        return SB3_ALGOS[self.algo.name](policy, venv, **kwargs)

    def check(self) -> None:
        """Checks that must pass before any training."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, ckpt: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def log_rollout(self, run: RunDir) -> None:
        """Called after every update (a PPO rollout, or SAC's train_freq steps)."""

    # ---- the run --------------------------------------------------------------------------------------------------
    def fit(self, run: RunDir) -> dict[str, Any]:
        a, comps, cfg = self.algo, self.comps, self.cfg
        total, seed = int(a.total_timesteps), int(cfg.seed)
        sampler = (cfg.get("sampler") or {}).get("kind", "auto")
        if sampler != "auto":
            raise UserError(
                f"sampler={sampler} needs a diffusion-family policy, but algo={a.name} trains an SB3 policy"
            )
        self.check()
        student_keys = list(cfg.student.obs_keys)
        teacher_keys = list(comps.teacher.obs_keys) if self.uses_teacher else []
        gamma = float(a.sb3.get("gamma", 0.99)) if a.get("absorbing_success", False) else None
        venv, student_view = make_vec_env(comps.task, comps.obs_mode, int(a.num_envs), student_keys, teacher_keys,
                                          absorbing_success_gamma=gamma)  # fmt: skip
        policy, policy_kwargs = policy_spec(
            cfg.student, bool(a.get("normalize_obs", False)), to_dict(a.get("policy_kwargs") or {})
        )
        kwargs = {**to_dict(a.sb3), "policy_kwargs": policy_kwargs, "seed": seed, "device": "cpu", "verbose": 0}
        try:
            self.model = model = self.make_model(venv, student_view, policy, kwargs)
        except TypeError as exc:
            raise UserError(f"algo.sb3 has an argument {a.name.upper()} does not take: {exc}") from exc
        model.set_logger(configure(str(run.dir / "tb"), ["tensorboard"]))
        self.student = SB3Student(model, student_keys)

        self.history: list[dict[str, float]] = []
        self.teacher_success: float | None = None
        ckpt = run.load_checkpoint("last") if cfg.get("resume", False) else None
        if ckpt is not None:
            load_training_state(model, ckpt["train_state"])
            self.history, self.teacher_success = ckpt["history"], ckpt["teacher_success"]
            self.restore_extra(ckpt)
            restore_rng(ckpt["rng"])
            venv.seed(seed + model.num_timesteps)  # fresh episodes, not a replay of the first ones
        elif self.uses_teacher:
            self.teacher_success = self.evaluate_teacher()
            run.log(0, {"eval/teacher_success_rate": self.teacher_success})

        def checkpoint(name: str) -> None:
            state = {"train_state": training_state(model), "history": self.history,
                     "teacher_success": self.teacher_success, **self.extra_state()}  # fmt: skip
            run.save_checkpoint(state, name)
            if name == "best":
                save_model_zip(model, run.dir / "sb3" / "best_model.zip")

        def evaluate_at(step: int) -> float:
            return self.record_eval(run, step, self.evaluate_student(run, step, episodes=int(a.eval_episodes)))

        callback = RunCallback(
            total, int(a.eval_every), evaluate_at, checkpoint, int(a.get("checkpoint_every", 0)),
            after_update=lambda step: self.log_rollout(run), progress=self.progress,
        )  # fmt: skip
        if self.history:
            callback.best = max(h["success_rate"] for h in self.history)
        try:
            if total > model.num_timesteps:
                model.learn(total - model.num_timesteps, callback=callback, reset_num_timesteps=ckpt is None)
        finally:
            venv.close()
        self.log_rollout(run)
        checkpoint("last")

        result = self.evaluate_student(run, model.num_timesteps, final=True)
        self.record_eval(run, model.num_timesteps, result)
        save_model_zip(model, run.dir / "sb3" / "final_model.zip")
        if result["success_rate"] >= callback.best:
            checkpoint("best")
        plot_learning_curves(self.history, run.dir / "learning_curves.png", self.teacher_success, tb=run.tb)
        return {
            "success_rate": result["success_rate"],
            "env_steps": model.num_timesteps,
            "teacher_success": self.teacher_success,
            "steps_to_80": steps_to_success(self.history, 0.8),
            **self.summary(),
        }

    # ---- evaluation -----------------------------------------------------------------------------------------------
    def record_eval(self, run: RunDir, step: int, result: dict[str, Any]) -> float:
        """Keep the point for the learning curve (and the teacher's line in TensorBoard)."""
        self.history.append({"env_steps": step, "success_rate": result["success_rate"],
                             "return_mean": result["return_mean"]})  # fmt: skip
        if self.teacher_success is not None:
            run.log(step, {"eval/teacher_success_rate": self.teacher_success})
        return result["success_rate"]

    def evaluate_teacher(self) -> float:
        """The teacher's own success on the evaluation episodes (the line the student should cross)."""
        e, teacher = self.cfg.eval, self.comps.teacher
        result = evaluate(
            teacher_policy(teacher),
            self.comps.task, self.comps.obs_mode, episodes=int(e.episodes), seed=int(e.seed),
            num_envs=int(e.num_envs), progress=self.progress,
        )  # fmt: skip
        return result["success_rate"]
