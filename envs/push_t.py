"""Push-T: push a T-shaped block with the closed gripper until it matches a fixed goal pose on the table."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ScriptedExpert, TableTopEnv

# T geometry (m): a bar and a stem, the body frame at the T's centre of mass so the pose is the COM pose.
BAR_HALF = np.array([0.06, 0.015])
STEM_HALF = np.array([0.015, 0.045])
HALF_HEIGHT = 0.015
_BAR_AREA, _STEM_AREA = 4 * BAR_HALF.prod(), 4 * STEM_HALF.prod()
BAR_Y = _STEM_AREA * (BAR_HALF[1] + STEM_HALF[1]) / (_BAR_AREA + _STEM_AREA)  # bar centre above the COM
STEM_Y = BAR_Y - BAR_HALF[1] - STEM_HALF[1]  # stem centre below the COM
TEE_FRICTION = 0.5  # block-table and block-finger friction; low enough that the block slides instead of tipping

# The T starts within +-0.1 m of CENTER at any angle; the goal pose is fixed, as in the classic benchmark.
# CENTER sits 5 cm toward the robot so every pushing position stays within the arm's reach at table height.
CENTER = np.array([-0.05, 0.0])
INIT_RANGE = 0.1
GOAL_POSE = np.array([-0.05, 0.0, np.pi / 4])  # x, y, yaw
POS_TOLERANCE = 0.02  # m
ANGLE_TOLERANCE = 0.2  # rad


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def _tee_geoms(extra: str, half_height: float, z: float) -> str:
    """The T's two boxes as MJCF geoms sharing the attributes `extra`."""
    return "".join(
        f'<geom type="box" size="{hx} {hy} {half_height}" pos="0 {y:.6f} {z}" {extra}/>'
        for (hx, hy), y in ((BAR_HALF, BAR_Y), (STEM_HALF, STEM_Y))
    )


class PushTEnv(TableTopEnv):
    task_name = "push_t"
    instruction_templates = (
        "push the T-shaped block onto the green T",
        "align the T block with the green outline on the table",
        "slide the T into the goal pose",
        "push the T so that it covers the green target T",
    )
    max_dense_reward = 3.0

    def _objects_xml(self) -> str:
        # priority=1 makes the block's friction govern its contacts with both the table and the fingers
        tee_attrs = f'class="object" priority="1" friction="{TEE_FRICTION} 0.005 0.0001" rgba="0.3 0.45 0.85 1"'
        tee = _tee_geoms(tee_attrs, HALF_HEIGHT, 0.0)
        goal = _tee_geoms('rgba="0.1 0.8 0.2 0.45" contype="0" conaffinity="0"', 0.0005, 0.0006)
        gx, gy, gyaw = GOAL_POSE
        return (
            f'<body name="tee" pos="{CENTER[0]} {CENTER[1]} {HALF_HEIGHT}"><freejoint name="tee"/>{tee}</body>'
            f'<body name="goal_tee" pos="{gx} {gy} 0" euler="0 0 {gyaw}">{goal}</body>'
        )

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        # redraw poses within twice the tolerances of the goal, so every episode needs real pushing
        while True:
            xy = CENTER + rng.uniform(-INIT_RANGE, INIT_RANGE, size=2)
            yaw = rng.uniform(-np.pi, np.pi)
            if (
                np.linalg.norm(GOAL_POSE[:2] - xy) > 2 * POS_TOLERANCE
                or abs(wrap_angle(GOAL_POSE[2] - yaw)) > 2 * ANGLE_TOLERANCE
            ):
                break
        adr = self.model.joint("tee").qposadr[0]
        self.data.qpos[adr : adr + 7] = [*xy, HALF_HEIGHT, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    @property
    def tee_pose(self) -> np.ndarray:
        """Planar pose (x, y, yaw) of the T's centre of mass."""
        body = self.data.body("tee")
        mat = body.xmat.reshape(3, 3)
        return np.array([body.xpos[0], body.xpos[1], np.arctan2(mat[1, 0], mat[0, 0])])

    def _task_obs(self) -> dict[str, np.ndarray]:
        x, y, yaw = self.tee_pose
        gx, gy, gyaw = GOAL_POSE
        err = wrap_angle(gyaw - yaw)
        return {
            "tee_pose": np.array([x, y, np.cos(yaw), np.sin(yaw)]),
            "goal_pose": np.array([gx, gy, np.cos(gyaw), np.sin(gyaw)]),
            "tee_to_goal": np.array([gx - x, gy - y, np.cos(err), np.sin(err)]),
            "tcp_to_tee": np.array([x, y]) - self.tcp_pos[:2],
        }

    def evaluate(self) -> dict[str, Any]:
        x, y, yaw = self.tee_pose
        pos_err = float(np.hypot(GOAL_POSE[0] - x, GOAL_POSE[1] - y))
        angle_err = float(abs(wrap_angle(GOAL_POSE[2] - yaw)))
        body = self.data.body("tee")
        # tipped over or off the table: the pushing task cannot be recovered
        fail = bool(body.xmat[8] < 0.9 or body.xpos[2] < 0.0)
        return {
            "success": pos_err < POS_TOLERANCE and angle_err < ANGLE_TOLERANCE and not fail,
            "fail": fail,
            "pos_err": pos_err,
            "angle_err": angle_err,
            "tcp_to_tee_dist": float(np.linalg.norm(self.tcp_pos[:2] - [x, y])),
        }

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        reach = 1.0 - np.tanh(5.0 * info["tcp_to_tee_dist"])
        pose = 1.0 - np.tanh(10.0 * info["pos_err"] + 1.0 * info["angle_err"])
        return float(reach + 2.0 * pose)

    def make_expert(self) -> PushTExpert:
        return PushTExpert(self)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z component of the cross product of planar vectors (..., 2)."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


class PushTExpert(ScriptedExpert):
    """Greedy planar pusher: pick the contact that best reduces the pose error, approach it from outside, push.

    Twelve candidate contacts lie on the T's faces, each pushed along its inward normal. A quasi-static
    ellipsoidal limit-surface model predicts the block twist per metre of pushing; the expert picks the contact
    whose twist removes the largest fraction of the weighted pose error (a contact it is already lined up with
    gets a bonus, so it keeps pushing instead of dithering), travels to a point just outside that face at a
    safe height when the straight path at table height would hit the block, lowers, and pushes.
    """

    # candidate pushes: contact point (body frame) and inward face normal, per face of the T
    _BAR_TOP, _WING_BOTTOM, _STEM_END = BAR_Y + BAR_HALF[1], BAR_Y - BAR_HALF[1], STEM_Y - STEM_HALF[1]
    _PUSHES = np.array(
        [
            [-0.045, _BAR_TOP, 0, -1],  # top of the bar: off-centre pushes turn, the middle one translates
            [0.0, _BAR_TOP, 0, -1],
            [0.045, _BAR_TOP, 0, -1],
            [-0.042, _WING_BOTTOM, 0, 1],  # undersides of the bar's wings
            [0.042, _WING_BOTTOM, 0, 1],
            [-BAR_HALF[0], BAR_Y, 1, 0],  # ends of the bar
            [BAR_HALF[0], BAR_Y, -1, 0],
            [-STEM_HALF[0], -0.03, 1, 0],  # sides of the stem
            [-STEM_HALF[0], -0.065, 1, 0],
            [STEM_HALF[0], -0.03, -1, 0],
            [STEM_HALF[0], -0.065, -1, 0],
            [0.0, _STEM_END, 0, 1],  # end of the stem
        ]
    )
    CONTACTS, NORMALS = _PUSHES[:, :2], _PUSHES[:, 2:]
    LIMIT_SURFACE_C = 0.04  # m: moment/force ratio of the block's friction limit surface (~ mean |r| over the T)
    ANGLE_WEIGHT = 0.1  # m per rad: weighs angle against position error, like the tolerances' ratio
    PAD_HALF = np.array([0.008, 0.016])  # closed fingertips' half footprint (world x, y)
    PUSH_Z, SAFE_Z = 0.018, 0.07  # TCP heights: fingertips 6 mm above the table, and clear of the block's top
    STANDOFF = 0.02  # gap between fingertips and face at the pre-push point
    ALIGNED_BONUS = 1.5  # score multiplier for the contact the fingers already sit at
    MAX_PUSH_STEP = 0.02  # m per control step, slow enough to push quasi-statically

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        n = len(s["tcp_pos"])
        tcp_xy, tcp_z = s["tcp_pos"][:, :2], s["tcp_pos"][:, 2]
        pos, cos, sin = s["tee_pose"][:, :2], s["tee_pose"][:, 2], s["tee_pose"][:, 3]
        rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (N, 2, 2) body -> world
        pos_err = s["tee_to_goal"][:, :2]
        ang_err = np.arctan2(s["tee_to_goal"][:, 3], s["tee_to_goal"][:, 2])

        # candidate contacts in the world frame (N, K, 2)
        contact = pos[:, None] + np.einsum("nij,kj->nki", rot, self.CONTACTS)
        normal = np.einsum("nij,kj->nki", rot, self.NORMALS)
        # fingertip footprint: world-aligned, widening along y as the fingers open
        pad_half = np.stack([np.full(n, self.PAD_HALF[0]), self.PAD_HALF[1] + 0.5 * s["gripper_width"][:, 0]], -1)
        pad = np.einsum("nki,ni->nk", np.abs(normal), pad_half)  # fingertip extent along each normal (N, K)

        # predicted twist per metre the finger pushes along the normal (quasi-static, ellipsoidal limit surface)
        arm = _cross(self.CONTACTS, self.NORMALS) / self.LIMIT_SURFACE_C**2
        per_metre = 1.0 / (1.0 + _cross(self.CONTACTS, self.NORMALS) * arm)  # (K,)
        v, w = normal * per_metre[:, None], arm * per_metre  # (N, K, 2), (K,)
        w2 = self.ANGLE_WEIGHT**2
        gain = np.einsum("nki,ni->nk", v, pos_err) + w2 * w * ang_err[:, None]
        norm2 = np.sum(v**2, -1) + w2 * w**2
        cost = np.sum(pos_err**2, -1) + w2 * ang_err**2
        fraction = np.maximum(gain, 0.0) ** 2 / norm2 / cost[:, None]  # share of the error one push removes

        rel = tcp_xy[:, None] - contact
        along = np.sum(rel * normal, -1)  # < 0: fingers outside the face
        across = np.abs(_cross(normal, rel))
        aligned = (
            (across < 0.012)
            & (along > -(pad + self.STANDOFF + 0.025))
            & (along < -pad + 0.01)
            & (tcp_z[:, None] < self.PUSH_Z + 0.015)
        )
        best = np.argmax(fraction * np.where(aligned, self.ALIGNED_BONUS, 1.0), -1)
        rows = np.arange(n)
        c, nrm, p, al = contact[rows, best], normal[rows, best], pad[rows, best], aligned[rows, best]
        step = np.clip(np.maximum(gain[rows, best], 0.0) / norm2[rows, best], 0.004, self.MAX_PUSH_STEP)

        # push: fingers onto the contact point and `step` past the face; the sideways term keeps them on it
        push_xy = c + nrm * (step - p)[:, None]
        pre_xy = c - nrm * (p + self.STANDOFF)[:, None]
        near_pre = np.linalg.norm(pre_xy - tcp_xy, axis=-1) < 0.008
        high = tcp_z > self.SAFE_Z - 0.02
        radius = np.linalg.norm(pad_half, axis=-1)
        blocked = self._path_blocked(tcp_xy, pre_xy, pos, rot, radius)
        # wide-open fingers may not fit at the pre-push point: they then wait above it while closing
        fits = ~self._path_blocked(pre_xy, pre_xy, pos, rot, radius)
        lower = fits & (near_pre | ~(high | blocked))  # onto the pre-push point, or slide there at table height
        # push, else lower or glide at safe height to the pre-push point, else rise in place
        target_xy = np.select([al[:, None], (lower | high)[:, None]], [push_xy, pre_xy], tcp_xy)
        target_z = np.where(al | lower, self.PUSH_Z, self.SAFE_Z)

        dpos = np.concatenate([target_xy - tcp_xy, (target_z - tcp_z)[:, None]], -1)
        # pushing moves stay slow; free-space moves use the controller's full step
        limit = np.where(al, self.MAX_PUSH_STEP, 0.05)
        dpos *= np.minimum(1.0, limit / (np.linalg.norm(dpos, axis=-1) + 1e-9))[:, None]
        return dpos, -np.ones(n)

    @staticmethod
    def _path_blocked(
        start: np.ndarray, end: np.ndarray, pos: np.ndarray, rot: np.ndarray, radius: np.ndarray
    ) -> np.ndarray:
        """Whether fingertips of `radius` (N,) sliding from `start` to `end` (N, 2) at table height would touch the T."""
        a = np.einsum("nji,nj->ni", rot, start - pos)  # body frame
        d = np.einsum("nji,nj->ni", rot, end - start)
        hit = np.zeros(len(a), dtype=bool)
        margin = (radius + 0.004)[:, None]
        for centre_y, half in ((BAR_Y, BAR_HALF), (STEM_Y, STEM_HALF)):
            lo = np.array([-half[0], centre_y - half[1]]) - margin
            hi = np.array([half[0], centre_y + half[1]]) + margin
            # slab test of the segment a + t d, t in [0, 1], against the margin-grown box
            safe_d = np.where(np.abs(d) < 1e-9, 1e-9, d)
            t1, t2 = (lo - a) / safe_d, (hi - a) / safe_d
            t_in = np.max(np.minimum(t1, t2), -1).clip(min=0.0)
            t_out = np.min(np.maximum(t1, t2), -1).clip(max=1.0)
            parallel_outside = np.any((np.abs(d) < 1e-9) & ((a < lo) | (a > hi)), -1)
            hit |= (t_in <= t_out) & ~parallel_outside
        return hit
