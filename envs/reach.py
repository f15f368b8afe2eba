"""Reach: move the gripper's tool-centre point to a goal position in the air."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ScriptedExpert, TableTopEnv

GOAL_TOLERANCE = 0.025  # m


class ReachEnv(TableTopEnv):
    task_name = "reach"
    instruction_templates = (
        "reach the green target",
        "move the gripper to the green ball",
        "put your hand on the target",
        "touch the floating green marker",
    )
    max_dense_reward = 1.0

    def _objects_xml(self) -> str:
        return (
            '<body name="goal" mocap="true" pos="0 0 0.2">'
            '<geom type="sphere" size="0.02" rgba="0.1 0.8 0.2 0.6" contype="0" conaffinity="0"/></body>'
        )

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        goal = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.3)])
        self.data.mocap_pos[0] = goal

    @property
    def goal_pos(self) -> np.ndarray:
        return self.data.mocap_pos[0].copy()

    def _task_obs(self) -> dict[str, np.ndarray]:
        return {"goal_pos": self.goal_pos, "tcp_to_goal": self.goal_pos - self.tcp_pos}

    def evaluate(self) -> dict[str, Any]:
        dist = float(np.linalg.norm(self.goal_pos - self.tcp_pos))
        return {"success": dist < GOAL_TOLERANCE, "fail": False, "tcp_to_goal_dist": dist}

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        return 1.0 - np.tanh(5.0 * info["tcp_to_goal_dist"])

    def make_expert(self) -> ReachExpert:
        return ReachExpert(self)


class ReachExpert(ScriptedExpert):
    """Proportional move straight to the goal."""

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return 0.8 * s["tcp_to_goal"], np.ones(len(s["tcp_to_goal"]))
