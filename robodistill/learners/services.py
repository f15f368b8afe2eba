"""What every learner calls, never inherits: its run directory, checkpoints and resume, seeded evaluation with
videos, and logging.

A learner is a small class with `fit() -> summary`; it holds a `Services` and calls it. The algorithm reads top
to bottom in the learner's own file; nothing here is a hook to override.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from omegaconf import DictConfig

from robodistill.config import to_dict
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import evaluate, headline, student_policy, teacher_policy
from robodistill.evaluation.video import Filming
from robodistill.learners.components import Components
from robodistill.rundir import RunDir, restore_rng


class Learner(Protocol):
    """`algo=<name>` selects a learner class: built as `cls(cfg, comps, services)`, run with `fit()`."""

    name: ClassVar[str]
    uses_teacher: ClassVar[bool]  # build and check the configured teacher
    builds_student: ClassVar[bool]  # build a `policies` student from `student.*`

    def fit(self) -> dict[str, Any]: ...


class Services:
    """The run's plumbing for one learner: `log`, `checkpoint`, `resume`, `evaluate`, `evaluate_teacher`."""

    def __init__(self, cfg: DictConfig, comps: Components, run: RunDir):
        self.cfg, self.comps, self.run = cfg, comps, run
        self.progress = bool(cfg.progress)

    # ---- logging and checkpoints --------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log(step, metrics)

    def checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """checkpoints/<name>.pt: `state` (state_dicts, counters) plus the global RNG states, written atomically."""
        return self.run.save_checkpoint(state, name)

    def resume(self) -> dict[str, Any] | None:
        """With `resume=true` and a checkpoints/last.pt: that checkpoint, with the global RNG states restored; the
        learner restores the rest of its own state from it. Otherwise None (a fresh run)."""
        if not self.cfg.resume:
            return None
        ckpt = self.run.load_checkpoint("last", missing_ok=True)
        if ckpt is not None:
            restore_rng(ckpt["rng"])
        return ckpt

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def evaluate(
        self,
        policy: Any,
        step: int,
        final: bool = False,
        episodes: int | None = None,
        task: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`policy` (a student network, or an SB3Student) on `task` (default the run's) over the eval config's
        seeded episodes, or the first `episodes` of them, sampled by the run's `sampler`. Logs eval/* at `step`;
        `final` films `eval.videos` episodes into videos/ and writes eval.json."""
        e = self.cfg.eval
        result = evaluate(
            student_policy(policy, to_dict(self.cfg.sampler)),
            task or self.comps.task,
            self.comps.obs_mode,
            episodes=int(episodes or e.episodes),
            seed=int(e.seed),
            num_envs=int(e.num_envs),
            video_dir=self.run.video_dir if final else None,
            filming=Filming.from_config(e) if final else None,
            progress=self.progress,
        )
        if task is None:
            self.log(step, {f"eval/{k}": result[k] for k in ("success_rate", "return_mean") if result[k] is not None})
            if final:
                self.run.write_json("eval.json", result)
        return result

    def evaluate_tasks(
        self, policy: Any, step: int, result: dict[str, Any], tasks: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """After the final evaluation `result` (of the run's task): `policy` on each other task of a multi-task run
        on the same seeded episodes, without videos, logged as eval/<task>/success_rate; eval.json's `tasks` holds
        every task's success rate. Returns `result` with it."""
        result["tasks"] = {self.comps.task["env_id"]: result["success_rate"]}
        for task in tasks:
            other = self.evaluate(policy, step, task=task)["success_rate"]
            self.log(step, {f"eval/{task['env_id'].split('/')[-1]}/success_rate": other})
            result["tasks"][task["env_id"]] = other
        self.run.write_json("eval.json", result)
        return result

    def evaluate_teacher(self) -> dict[str, float]:
        """The teacher's own headline on the evaluation episodes (the line a student should cross): its success rate,
        or its mean return on a task that reports no success (`evaluation.rollouts.headline`)."""
        e = self.cfg.eval
        result = evaluate(
            teacher_policy(self.comps.teacher),
            self.comps.task,
            self.comps.obs_mode,
            episodes=int(e.episodes),
            seed=int(e.seed),
            num_envs=int(e.num_envs),
            progress=self.progress,
        )
        return headline(result)


def policy_state(policy: torch.nn.Module) -> dict[str, Any]:
    """What a checkpoint stores of a policy: its config (to rebuild it) and its state_dict."""
    return {"policy_config": policy.config, "policy": policy.state_dict()}


def load_policy_state(policy: torch.nn.Module, ckpt: dict[str, Any]) -> None:
    """Load a checkpoint's policy weights into `policy`, refusing one trained for other shapes, and leave it in eval
    mode: checkpoints are taken after an update, which ends in eval mode, and a resumed run must act as the
    uninterrupted one did (a token policy's training-time image shifts would change the collected episodes)."""
    saved = ckpt.get("policy_config", {}).get("shape_meta")
    if saved is not None and saved != policy.config["shape_meta"]:
        raise UserError(f"checkpoint was trained for shapes {saved}, but this task has {policy.config['shape_meta']}")
    policy.load_state_dict(ckpt["policy"])
    policy.eval()
