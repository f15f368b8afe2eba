"""PickCube: grasp a cube from the table and hold it at a goal position in the air."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import mujoco
import numpy as np

from envs.base import ScriptedExpert, TableTopEnv
from envs.push_cube import HALF, clip_norm, cube_xml, yaw_quat
from envs.robot import EE_POS_SCALE

GOAL_TOLERANCE = 0.025  # m, cube centre to goal
GRASP_MAX_WIDTH = 2 * np.sqrt(2) * HALF + 0.003  # m, widest jaw opening that still means "holding the cube"


def pad_geoms(model: mujoco.MjModel) -> np.ndarray:
    """Geom ids (2,) of the two finger pads."""
    return np.array([model.body_geomadr[model.body(f).id] for f in ("left_finger", "right_finger")])


def is_grasping(data: mujoco.MjData, pads: np.ndarray, geom: int) -> bool:
    """Whether both finger pads (geom ids `pads`) touch geom `geom`."""
    pairs = data.contact.geom[: data.ncon]
    touching = np.where(pairs[:, 0] == geom, pairs[:, 1], np.where(pairs[:, 1] == geom, pairs[:, 0], -1))
    return bool(np.isin(pads, touching).all())


class PickCubeEnv(TableTopEnv):
    task_name = "pick_cube"
    instruction_templates = (
        "pick up the red cube and move it to the goal",
        "lift the cube to the green target",
        "grasp the red block and hold it at the green marker",
        "bring the cube to the floating green ball",
    )
    max_dense_reward = 4.0

    def _objects_xml(self) -> str:
        return cube_xml("cube", "0.85 0.15 0.15 1") + (
            f'<body name="goal" mocap="true" pos="0 0 0.2"><geom type="sphere" size="{GOAL_TOLERANCE}" '
            'rgba="0.1 0.8 0.2 0.4" contype="0" conaffinity="0"/></body>'
        )

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        # any yaw: by the cube's 90-degree symmetry it is within 45 degrees of the (fixed-yaw) jaws, which square it
        # up on closing or hold it across its diagonal
        xy, yaw = rng.uniform(-0.1, 0.1, size=2), rng.uniform(-np.pi, np.pi)
        adr = self.model.joint("cube").qposadr[0]
        self.data.qpos[adr : adr + 7] = [*xy, HALF, *yaw_quat(yaw)]
        self.data.mocap_pos[0] = [*rng.uniform(-0.1, 0.1, size=2), rng.uniform(0.05, 0.3)]

    @cached_property
    def _grasp_geoms(self) -> tuple[np.ndarray, int]:
        """Pad geom ids and the cube's geom id, looked up once (evaluate runs every step)."""
        return pad_geoms(self.model), self.model.geom("cube").id

    @property
    def cube_pos(self) -> np.ndarray:
        return self.data.body("cube").xpos.copy()

    @property
    def goal_pos(self) -> np.ndarray:
        return self.data.mocap_pos[0].copy()

    def _task_obs(self) -> dict[str, np.ndarray]:
        cube, goal, quat = self.cube_pos, self.goal_pos, self.data.body("cube").xquat
        return {
            "cube_pos": cube,
            "cube_quat": quat * (1.0 if quat[0] >= 0 else -1.0),  # one of the two equal quaternions, fixed
            "goal_pos": goal,
            "tcp_to_cube": cube - self.tcp_pos,
            "cube_to_goal": goal - cube,
        }

    def evaluate(self) -> dict[str, Any]:
        cube = self.cube_pos
        dist = float(np.linalg.norm(self.goal_pos - cube))
        return {
            "success": dist < GOAL_TOLERANCE,
            "fail": False,
            "is_grasped": is_grasping(self.data, *self._grasp_geoms),
            "tcp_to_cube_dist": float(np.linalg.norm(cube - self.tcp_pos)),
            "cube_to_goal_dist": dist,
        }

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        reaching = 1.0 - np.tanh(5.0 * info["tcp_to_cube_dist"])
        placing = 1.0 - np.tanh(5.0 * info["cube_to_goal_dist"])
        return float(reaching + info["is_grasped"] * (1.0 + placing))

    def make_expert(self) -> PickCubeExpert:
        return PickCubeExpert(self)


class PickCubeExpert(ScriptedExpert):
    """Open, funnel down onto the cube, close, then carry it straight to the goal."""

    GRASP_DZ = -0.004  # tcp below the cube centre when closing: pad tips 4 mm above the table
    HOVER = 0.05  # m above the grasp height while still off to the side of the cube
    FUNNEL_SLOPE = 4.0  # descend 4 cm per cm of xy error closed: pads stay clear of a turned cube's corners
    XY_TOL = 0.01  # m, tcp to cube centre in xy to close
    OPEN_WIDTH = 0.07  # m, the jaws must be at least this far apart to descend around the cube

    def grasp(self, tcp: np.ndarray, width: np.ndarray, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plan toward a grasp of the cube at `obj`: (dpos (N, 3), grip (N,), grasped (N,) bool)."""
        grasp_pos = obj + np.array([0.0, 0.0, self.GRASP_DZ])
        err = grasp_pos - tcp
        xy_err = np.linalg.norm(err[:, :2], axis=1)
        # the width is observed, so "holding" is: cube between the pads and jaws stopped at the cube's width, or at
        # its diagonal if it was knocked round to 45 degrees (pads on two edges hold it too)
        grasped = (np.linalg.norm(obj - tcp, axis=1) < 0.02) & (width > 0.75 * 2 * HALF) & (width < GRASP_MAX_WIDTH)
        closing = (xy_err < self.XY_TOL) & (np.abs(err[:, 2]) < 0.008)
        # funnel: hover height shrinks with xy error; stay at hover height until the jaws are open
        height = np.clip(self.FUNNEL_SLOPE * (xy_err - 0.008), 0.0, self.HOVER)
        height = np.where(width < self.OPEN_WIDTH, np.maximum(height, self.HOVER), height)
        dpos = err + (height * ~closing)[:, None] * np.array([0.0, 0.0, 1.0])
        grip = np.where(closing | grasped, -1.0, 1.0)
        return dpos, grip, grasped

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        dpos, grip, grasped = self.grasp(s["tcp_pos"], s["gripper_width"][:, 0], s["cube_pos"])
        dpos = np.where(grasped[:, None], s["cube_to_goal"], dpos)
        return clip_norm(dpos, EE_POS_SCALE), grip
