"""SFT: supervised fine-tuning of one multi-task policy on demonstrations of several tasks (behaviour cloning).

The demonstrations are `algo.datasets` (collector datasets), or are collected here: `algo.num_demos` episodes of
the run's task and each task in `algo.tasks`, driven by that task's teacher (e.g. its scripted expert), one dataset per task under
`<run>/demos/`. All tasks share the run's task settings (control mode, image size) and must share the student's
observation and action shapes. A token policy (student=vla) conditions on each demo's instruction, so one model
serves every task; it is fitted with cross-entropy to the tokenised actions. Training and evaluation are BC's; the
final evaluation runs on every task (eval.json `tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robodistill.learners.bc import BCLearner
from robodistill.rundir import RunDir


class SFTLearner(BCLearner):
    name = "sft"

    def task_configs(self) -> list[dict[str, Any]]:
        """The run's task settings for the run's own task and each other env id in `algo.tasks`."""
        main = dict(self.comps.task)
        ids = [main["env_id"], *(t for t in self.algo.get("tasks") or [] if t != main["env_id"])]
        return [main if env_id == main["env_id"] else {**main, "name": env_id.split("/")[-1], "env_id": env_id}
                for env_id in ids]  # fmt: skip

    def sources(self, run: RunDir) -> list[tuple[Path, Mapping[str, Any] | None]]:
        if self.algo.get("datasets"):
            return [(Path(p), None) for p in self.algo.datasets]
        return [(run.dir / "demos" / f"{t['env_id'].split('/')[-1]}.hdf5", t) for t in self.task_configs()]

    def evaluate_student(self, run: RunDir, step: int, final: bool = False, episodes: int | None = None) -> dict[str, Any]:
        """The run's task as BC evaluates it; at the end also every other task of `algo.tasks` (no videos)."""
        result = super().evaluate_student(run, step, final, episodes)
        if final:
            per_task = {}
            for task in self.task_configs():
                if task["env_id"] == self.comps.task["env_id"]:
                    per_task[task["env_id"]] = result["success_rate"]
                    continue
                other = self.evaluate_on(task, episodes)
                per_task[task["env_id"]] = other["success_rate"]
                run.log(step, {f"eval/{task['env_id'].split('/')[-1]}/success_rate": other["success_rate"]})
            result["tasks"] = per_task
            run.write_json("eval.json", result)
        return result
