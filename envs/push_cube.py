"""PushCube: push a cube across the table into a goal region with the closed gripper."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ScriptedExpert, TableTopEnv
from envs.robot import EE_POS_SCALE

HALF = 0.02  # cube half size, m
GOAL_TOLERANCE = 0.025  # m, cube centre to goal centre in xy
GOAL_RADIUS = 0.025  # m, drawn goal disc (matches the tolerance, so "inside the disc" means success)
# goal sampled 0.1-0.2 m from the cube, inside a box the gripper reaches at table height with room behind the cube
GOAL_LOW, GOAL_HIGH = np.array([-0.2, -0.25]), np.array([0.2, 0.25])


def yaw_quat(yaw: float) -> np.ndarray:
    """(w, x, y, z) quaternion of a rotation by `yaw` about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def clip_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    """Rows of `v` (N, k) scaled down to at most `max_norm`, keeping their direction."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v * np.minimum(1.0, max_norm / np.maximum(norm, 1e-12))


def cube_xml(name: str, rgba: str) -> str:
    """A free 4 cm cube body named `name`."""
    return (
        f'<body name="{name}" pos="0 0 {HALF}"><freejoint name="{name}"/>'
        f'<geom name="{name}" class="object" type="box" size="{HALF} {HALF} {HALF}" rgba="{rgba}"/></body>'
    )


class PushCubeEnv(TableTopEnv):
    task_name = "push_cube"
    instruction_templates = (
        "push the red cube to the goal",
        "slide the red block into the target circle",
        "push the cube onto the marked spot",
        "move the red cube to the goal region without lifting it",
    )
    max_dense_reward = 3.0

    def _objects_xml(self) -> str:
        # the disc marks the target on the table; goal_pos (observed) is where the cube's centre should end up
        return cube_xml("cube", "0.85 0.15 0.15 1") + (
            f'<body name="goal" mocap="true" pos="0 0 0"><geom type="cylinder" size="{GOAL_RADIUS} 0.001" '
            'pos="0 0 0.001" rgba="0.1 0.8 0.2 0.5" contype="0" conaffinity="0"/></body>'
        )

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        cube_xy = rng.uniform(-0.1, 0.1, size=2)
        while True:  # rejection-sample a reachable goal; terminates fast since most directions qualify
            angle, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 0.2)
            goal_xy = cube_xy + dist * np.array([np.cos(angle), np.sin(angle)])
            if np.all(goal_xy >= GOAL_LOW) and np.all(goal_xy <= GOAL_HIGH):
                break
        adr = self.model.joint("cube").qposadr[0]
        self.data.qpos[adr : adr + 7] = [*cube_xy, HALF, *yaw_quat(rng.uniform(-np.pi, np.pi))]
        self.data.mocap_pos[0] = [*goal_xy, 0.0]

    @property
    def cube_pos(self) -> np.ndarray:
        return self.data.body("cube").xpos.copy()

    @property
    def goal_pos(self) -> np.ndarray:
        return self.data.mocap_pos[0] + np.array([0.0, 0.0, HALF])

    def _task_obs(self) -> dict[str, np.ndarray]:
        quat = self.data.body("cube").xquat
        return {
            "cube_pos": self.cube_pos,
            "cube_quat": quat * (1.0 if quat[0] >= 0 else -1.0),
            "goal_pos": self.goal_pos,
            "tcp_to_cube": self.cube_pos - self.tcp_pos,
            "cube_to_goal": self.goal_pos - self.cube_pos,
        }

    def evaluate(self) -> dict[str, Any]:
        cube, goal = self.cube_pos, self.goal_pos
        dist = float(np.linalg.norm(goal[:2] - cube[:2]))
        # the tcp's ideal pushing spot: just behind the cube on the goal->cube line
        push_dir = (goal[:2] - cube[:2]) / max(dist, 1e-6)
        push_spot = np.array([*(cube[:2] - push_dir * (HALF + 0.015)), cube[2]])
        return {
            "success": dist < GOAL_TOLERANCE and cube[2] < HALF + 0.01,
            "fail": False,
            "cube_to_goal_dist": dist,
            "tcp_to_push_spot_dist": float(np.linalg.norm(push_spot - self.tcp_pos)),
        }

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        reaching = 1.0 - np.tanh(5.0 * info["tcp_to_push_spot_dist"])
        # placing only counts once the tcp is behind the cube, so pushing is the rewarded way to move it
        placing = (1.0 - np.tanh(5.0 * info["cube_to_goal_dist"])) * (info["tcp_to_push_spot_dist"] < 0.03)
        return float(reaching + placing)

    def make_expert(self) -> PushCubeExpert:
        return PushCubeExpert(self)


class PushCubeExpert(ScriptedExpert):
    """Closed gripper: hover behind the cube (seen from the goal), lower, push through its centre toward the goal."""

    PUSH_Z = 0.018  # tcp height while pushing: pad tips 6 mm above the table
    SAFE_Z = 0.09  # tcp height for moving around the cube: pad tips 3.8 cm above its top
    STANDOFF = 0.06  # m behind the cube centre where the tcp lowers: clears a rotated cube's corner
    MAX_PUSH_STEP = 0.03  # m per step while pushing, slow enough that the cube never slides far after contact

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tcp, cube, goal = s["tcp_pos"], s["cube_pos"], s["goal_pos"]
        to_goal = goal[:, :2] - cube[:, :2]
        dist = np.linalg.norm(to_goal, axis=1, keepdims=True)
        u = to_goal / np.maximum(dist, 1e-6)  # push direction
        perp = np.stack([-u[:, 1], u[:, 0]], axis=1)
        rel = tcp[:, :2] - cube[:, :2]
        along, lat = (rel * u).sum(1, keepdims=True), (rel * perp).sum(1, keepdims=True)
        z = tcp[:, 2:3]

        # pushing: behind the cube and low; advance to where the cube centre lands on the goal, recentre laterally
        pushing = (along < -0.02) & (np.abs(lat) < 0.02) & (z < 0.045)
        forward = np.clip(dist - 0.03 - along, 0.0, self.MAX_PUSH_STEP) * (z < self.PUSH_Z + 0.015)
        forward *= np.clip(1.0 - np.abs(lat) / 0.02, 0.0, 1.0)  # recentre before pushing on, or the cube drifts off-line
        push_xy = u * forward - perp * lat

        # approaching: hover over the standoff point, rising first so the fingers never sweep into the cube
        standoff = cube[:, :2] - u * self.STANDOFF - tcp[:, :2]
        above = np.linalg.norm(standoff, axis=1, keepdims=True) < 0.01
        move_xy = (z > self.SAFE_Z - 0.03) | above  # margin: the tcp can dip below SAFE_Z while moving
        approach_xy = standoff * move_xy
        approach_z = np.where(above, self.PUSH_Z, self.SAFE_Z) - z

        dpos = np.where(pushing, np.concatenate([push_xy, self.PUSH_Z - z], 1), np.concatenate([approach_xy, approach_z], 1))
        # one controller step at most, direction kept: per-axis clipping (or joint-delta clipping) would bend the path
        return clip_norm(dpos, float(__import__('os').environ.get('MS','0.05'))), -np.ones(len(tcp))
