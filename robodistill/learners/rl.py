"""RL experts: Stable-Baselines3 PPO or SAC on the task's own reward (`algo=ppo`, `algo=sac`).

The run gets SB3's vector envs and TensorBoard logger, our seeded evaluation every `eval_every` env steps (the
same starts every learner is scored on), state_dict checkpoints at rollout boundaries for `resume=true`, SB3 .zip
models (`sb3/best_model.zip`, `sb3/final_model.zip`) that `teacher=sb3 teacher.path=<run or zip>` loads, and
learning curves (`learning_curves.png`); all of it is `learners.sb3`'s plumbing, which RPD calls too.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from robodistill.learners.components import Components
from robodistill.learners.sb3 import check_sb3_run, make_model, make_vec_env, train_in_run
from robodistill.learners.services import Services
from robodistill.teachers.sb3 import SB3_ALGOS


class RLLearner:
    """`algo=ppo` / `algo=sac`: SB3's algorithm of that name on the task's reward; a state or pixel student."""

    name = "rl"
    uses_teacher = False
    builds_student = False  # the student is an SB3 policy, built from `student.*` by `policy_spec`

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        check_sb3_run(cfg)
        venv, _ = make_vec_env(cfg, self.comps)
        model = make_model(SB3_ALGOS[cfg.algo.name], cfg, venv)
        ckpt = self.services.resume()  # after the model is built: SB3 seeds the global RNGs, resume restores them
        return train_in_run(model, venv, self.services, ckpt)
