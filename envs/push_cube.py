"""PushCube: push a cube across the table into a goal region with the closed gripper."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ScriptedExpert, TableTopEnv
from envs.robot import EE_POS_SCALE

HALF = 0.02  # cube half size, m
GOAL_TOLERANCE = 0.025  # m, cube centre to goal centre in xy; also the drawn disc's radius
# goal sampled 0.1-0.2 m from the cube, inside a box where the gripper can still get behind the cube at table height
# (the arm reaches x = 0.18 m at y = 0, less off-centre)
GOAL_LOW, GOAL_HIGH = np.array([-0.22, -0.2]), np.array([0.12, 0.2])


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
            f'<body name="goal" mocap="true" pos="0 0 0"><geom type="cylinder" size="{GOAL_TOLERANCE} 0.001" '
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
        cube, goal, quat = self.cube_pos, self.goal_pos, self.data.body("cube").xquat
        return {
            "cube_pos": cube,
            "cube_quat": quat * (1.0 if quat[0] >= 0 else -1.0),  # one of the two equal quaternions, fixed
            "goal_pos": goal,
            "tcp_to_cube": cube - self.tcp_pos,
            "cube_to_goal": goal - cube,
        }

    def evaluate(self) -> dict[str, Any]:
        cube, goal = self.cube_pos, self.goal_pos
        dist = float(np.linalg.norm(goal[:2] - cube[:2]))
        # the tcp's ideal pushing spot: just behind the cube on the goal->cube line
        push_dir = (goal[:2] - cube[:2]) / max(dist, 1e-6)
        push_spot = np.array([*(cube[:2] - push_dir * (HALF + 0.015)), cube[2]])
        return {
            "success": dist < GOAL_TOLERANCE and cube[2] < HALF + 0.01,  # on the table: pushed, not carried
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
    FUNNEL_SLOPE = 6.0  # m of height per m off the standoff point: at 2 cm off the tcp is already up at 7.8 cm
    MAX_PUSH_STEP = 0.03  # m per step while pushing: slower than free moves so the cube stays against the pads

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tcp, cube, goal = s["tcp_pos"], s["cube_pos"], s["goal_pos"]
        to_goal = goal[:, :2] - cube[:, :2]
        dist = np.linalg.norm(to_goal, axis=1, keepdims=True)
        u = to_goal / np.maximum(dist, 1e-6)  # push direction
        perp = np.stack([-u[:, 1], u[:, 0]], axis=1)
        rel = tcp[:, :2] - cube[:, :2]
        along, lat = (rel * u).sum(1, keepdims=True), (rel * perp).sum(1, keepdims=True)
        z = tcp[:, 2:3]

        # pushing: behind the cube and low; advance until the tcp is 3 cm short of the goal, which puts the cube
        # centre on it, and recentre on the cube->goal line as the cube turns. The advance fades in as the tcp
        # comes down from 3.8 to 2.8 cm (pushing high up would tip the cube), without on/off chatter.
        pushing = (along < -0.02) & (np.abs(lat) < 0.02) & (z < 0.045)
        lowered = np.clip((self.PUSH_Z + 0.02 - z) / 0.01, 0.0, 1.0)
        forward = np.clip(dist - 0.03 - along, 0.0, self.MAX_PUSH_STEP) * lowered
        push_xy = u * forward - perp * lat

        # approaching: a funnel down onto the standoff point; away from it the tcp first rises (xy speed fades in
        # from 5.5 to 7.5 cm, pad tips 1.5 cm over the cube's top), so the fingers never sweep into the cube
        standoff = cube[:, :2] - u * self.STANDOFF - tcp[:, :2]
        off = np.linalg.norm(standoff, axis=1, keepdims=True)
        move_xy = np.where(off < 0.02, 1.0, np.clip((z - 0.055) / 0.02, 0.0, 1.0))
        height = np.clip(self.FUNNEL_SLOPE * (off - 0.01), 0.0, self.SAFE_Z - self.PUSH_Z)
        approach = np.concatenate([standoff * move_xy, self.PUSH_Z + height - z], axis=1)

        push = np.concatenate([push_xy, self.PUSH_Z - z], axis=1)
        dpos = np.where(pushing, push, approach)
        # at most one controller step, direction kept: clipping the action per axis would bend the path
        return clip_norm(dpos, EE_POS_SCALE), -np.ones(len(tcp))
