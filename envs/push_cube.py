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


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a C1 cubic ramp in between: smooth phase weights an MLP can regress."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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
    """Closed gripper: get behind the cube (seen from the goal) at a safe height, lower, push it toward the goal.

    One smooth field over the cube's push frame (`along` the cube->goal line, `lat` across it) instead of phases, so
    the labels have no jumps for a student to average across: how much the tcp is pushing (`w`) and how high it must
    be (`need`) are products of smoothstep ramps over along, lat and height, and every command is proportional.
    """

    PUSH_Z = 0.018  # tcp height while pushing: pad tips 6 mm above the table
    SAFE_Z = 0.075  # tcp height for moving over or beside the cube: pad tips 2.3 cm above its top
    STANDOFF = 0.06  # m behind the cube centre the tcp heads for: clears a rotated cube's corner to lower
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

        # pushing weight: behind the cube's centre, roughly lined up with it (the lateral correction below keeps
        # working up to 4.5 cm off) and low: the advance fades in from 3.6 to 2.4 cm tcp height, pads below the
        # cube's middle, so it slides instead of tipping
        aligned = 1.0 - smoothstep((np.abs(lat) - 0.025) / 0.02)
        behind = 1.0 - smoothstep((along + 0.015) / 0.02)
        w = smoothstep((0.036 - z) / 0.012) * aligned * behind

        # clearance: the tcp must be up at SAFE_Z when over or just behind the cube (within 4.5 cm of its centre
        # along the push line) unless its pads are already below the cube's top there (tcp under 3.8-5 cm, a wider
        # ramp than the advance's so a slightly high push settles back down), and when off to the side of the push
        # line while not well behind the cube, so the pads never land on it or sweep into it
        pocket = smoothstep((0.05 - z) / 0.012) * aligned * behind
        in_front = smoothstep((along + 0.045) / 0.02) * (1.0 - pocket)
        beside = smoothstep((np.abs(lat) - 0.03) / 0.02) * smoothstep((along + 0.08) / 0.025)
        need = np.maximum(in_front, beside)
        z_goal = self.PUSH_Z + (self.SAFE_Z - self.PUSH_Z) * need
        # xy motion fades out while the tcp is well below that height: it rises before it moves toward the cube
        xy_gain = smoothstep((z - z_goal + 0.025) / 0.02)

        # along: advance the tcp to 3 cm short of the goal (cube centre on it) when pushing, else back to the
        # standoff; across: always recentre on the cube->goal line, which also follows the cube as it turns
        forward = np.clip(dist - 0.03 - along, 0.0, self.MAX_PUSH_STEP)
        d_along = w * forward + (1.0 - w) * (-self.STANDOFF - along)
        dxy = (u * d_along - perp * lat) * xy_gain
        dpos = np.concatenate([dxy, z_goal - z], axis=1)
        # at most one controller step, direction kept: clipping the action per axis would bend the path
        return clip_norm(dpos, EE_POS_SCALE), -np.ones(len(tcp))
