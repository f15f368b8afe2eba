"""StackCube: pick the red cube and leave it resting on top of the green cube."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from envs.base import TableTopEnv
from envs.pick_cube import PickCubeExpert, is_grasping, pad_geoms
from envs.push_cube import HALF, clip_norm, cube_xml, yaw_quat
from envs.robot import EE_POS_SCALE, FINGER_RANGE

# open jaws reach 5.6 cm to each side of the tcp, so cube B stays this far from A's centre to keep them clear of B
MIN_SEPARATION = 0.1  # m
XY_TOLERANCE = 0.02  # m, A's centre over B's
Z_TOLERANCE = 0.005  # m, A's height above B off one cube width
STATIC_SPEED = 0.02  # m/s, A counts as resting below this


class StackCubeEnv(TableTopEnv):
    task_name = "stack_cube"
    instruction_templates = (
        "stack the red cube on the green cube",
        "put the red block on top of the green block",
        "place the red cube onto the green one",
        "pick up the red cube and set it on the green cube",
    )
    max_dense_reward = 8.0

    def _objects_xml(self) -> str:
        return cube_xml("cubeA", "0.85 0.15 0.15 1") + cube_xml("cubeB", "0.15 0.7 0.2 1")

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        xy_a = rng.uniform(-0.1, 0.1, size=2)
        while True:  # rejection-sample B: a few tries on average, even with A at the centre of the square
            xy_b = rng.uniform(-0.1, 0.1, size=2)
            if np.linalg.norm(xy_b - xy_a) >= MIN_SEPARATION:
                break
        for name, xy in (("cubeA", xy_a), ("cubeB", xy_b)):  # any yaw, as in PickCube
            adr = self.model.joint(name).qposadr[0]
            self.data.qpos[adr : adr + 7] = [*xy, HALF, *yaw_quat(rng.uniform(-np.pi, np.pi))]

    @cached_property
    def _grasp_geoms(self) -> tuple[np.ndarray, int]:
        """Pad geom ids and cube A's geom id, looked up once (evaluate runs every step)."""
        return pad_geoms(self.model), self.model.geom("cubeA").id

    def _cube(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Position and w >= 0 quaternion of a cube."""
        quat = self.data.body(name).xquat
        return self.data.body(name).xpos.copy(), quat * (1.0 if quat[0] >= 0 else -1.0)

    def _task_obs(self) -> dict[str, np.ndarray]:
        (pos_a, quat_a), (pos_b, quat_b) = self._cube("cubeA"), self._cube("cubeB")
        return {
            "cubeA_pos": pos_a,
            "cubeA_quat": quat_a,
            "cubeB_pos": pos_b,
            "cubeB_quat": quat_b,
            "tcp_to_cubeA": pos_a - self.tcp_pos,
            "cubeA_to_cubeB": pos_b - pos_a,
        }

    def evaluate(self) -> dict[str, Any]:
        pos_a, pos_b = self.data.body("cubeA").xpos, self.data.body("cubeB").xpos
        offset = pos_a - pos_b
        on_b = bool(np.linalg.norm(offset[:2]) < XY_TOLERANCE and abs(offset[2] - 2 * HALF) < Z_TOLERANCE)
        dof = self.model.joint("cubeA").dofadr[0]
        speed = float(np.linalg.norm(self.data.qvel[dof : dof + 3]))  # free joint: world-frame linear velocity first
        grasped = is_grasping(self.data, *self._grasp_geoms)
        return {
            "success": on_b and not grasped and speed < STATIC_SPEED,
            "fail": False,
            "is_cubeA_grasped": grasped,
            "is_cubeA_on_cubeB": on_b,
            "cubeA_speed": speed,
            "tcp_to_cubeA_dist": float(np.linalg.norm(pos_a - self.tcp_pos)),
            "cubeA_to_goal_dist": float(np.linalg.norm(pos_b + np.array([0.0, 0.0, 2 * HALF]) - pos_a)),
            "gripper_openness": self.gripper_width / (2 * FINGER_RANGE),
        }

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        # ManiSkill's StackCube stages: reach A (<= 2), grasp and carry A over B (4..5), release it there (6..7)
        if info["is_cubeA_on_cubeB"]:
            ungrasp = 1.0 if not info["is_cubeA_grasped"] else info["gripper_openness"]
            static = 1.0 - np.tanh(10.0 * info["cubeA_speed"])
            return float(6.0 + (ungrasp + static) / 2.0)
        if info["is_cubeA_grasped"]:
            return float(4.0 + 1.0 - np.tanh(5.0 * info["cubeA_to_goal_dist"]))
        return float(2.0 * (1.0 - np.tanh(5.0 * info["tcp_to_cubeA_dist"])))

    def make_expert(self) -> StackCubeExpert:
        return StackCubeExpert(self)


class StackCubeExpert(PickCubeExpert):
    """Grasp A, carry it over B high enough to clear it, lower it onto B, open, then rise."""

    CLEARANCE = 0.05  # m A is carried above its stacked height while off to the side of B
    CLEAR_SLOPE = 2.0  # lower 2 cm per cm of xy error closed: A's bottom stays above B's top while they overlap
    RELEASE_XY = 0.008  # m, A over B's centre to let go
    RELEASE_Z = 0.006  # m, A at most this high above its stacked height to let go

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tcp, width, cube_a = s["tcp_pos"], s["gripper_width"][:, 0], s["cubeA_pos"]
        dpos, grip, grasped = self.grasp(tcp, width, cube_a)

        to_stack = s["cubeA_to_cubeB"] + np.array([0.0, 0.0, 2 * HALF])  # A's displacement to its stacked pose
        xy_err = np.linalg.norm(to_stack[:, :2], axis=1)
        lift = np.clip(self.CLEAR_SLOPE * (xy_err - 0.005), 0.0, self.CLEARANCE)
        carry = to_stack + lift[:, None] * np.array([0.0, 0.0, 1.0])
        dpos = np.where(grasped[:, None], carry, dpos)

        # placed: open in place, and rise only once the jaws have let go, so A is not dragged off B
        placed = (xy_err < self.RELEASE_XY) & (to_stack[:, 2] > -self.RELEASE_Z)
        rise = np.where(width > 2 * HALF + 0.01, 0.03, 0.0)[:, None] * np.array([0.0, 0.0, 1.0])
        dpos = np.where(placed[:, None], rise, dpos)
        grip = np.where(placed, 1.0, grip)
        return clip_norm(dpos, EE_POS_SCALE), grip
