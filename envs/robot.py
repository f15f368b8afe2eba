"""A 7-DoF arm with the Franka Panda's published kinematics, built from primitive geoms, and its controllers.

Link frames follow the Panda's modified-DH table (the same frames MuJoCo Menagerie uses), joint limits are
Franka's datasheet values; geometry is capsules and boxes so nothing is downloaded.
"""

from __future__ import annotations

import mujoco
import numpy as np

JOINT_LIMITS = np.array(
    [
        [-2.8973, 2.8973],
        [-1.7628, 1.7628],
        [-2.8973, 2.8973],
        [-3.0718, -0.0698],
        [-2.8973, 2.8973],
        [-0.0175, 3.7525],
        [-2.8973, 2.8973],
    ]
)
HOME_QPOS = np.array([0.0, np.pi / 8, 0.0, -5 * np.pi / 8, 0.0, 3 * np.pi / 4, np.pi / 4])
FINGER_RANGE = 0.04  # each finger slides 0..4 cm
BASE_POS = (-0.615, 0.0, 0.0)
CONTROL_MODES = ("pd_joint_delta_pos", "pd_ee_delta_pos", "pd_ee_delta_pose")
CAMERAS = ("front", "wrist")  # observation cameras: fixed on the scene, and on the hand (moves with it)
# The wrist camera in the hand frame (z runs along the fingers, x toward the front camera when the gripper points
# down): behind the hand's palm, tilted toward the fingertips so that they sit at the top of the image and the table
# below them fills the rest, as a camera clamped to a real robot's wrist sees it.
WRIST_CAMERA_POS = (-0.07, 0.0, 0.03)
WRIST_CAMERA_TILT = 0.44  # rad between the view direction and the fingers' axis
WRIST_CAMERA_FOVY = 75  # degrees
CONTROL_FREQ = 20  # Hz
SIM_TIMESTEP = 0.002  # s
JOINT_DELTA_SCALE = 0.1  # rad per control step at |action| = 1
EE_POS_SCALE = 0.05  # m per control step at |action| = 1
EE_ROT_SCALE = 0.1  # rad per control step at |action| = 1
# TCP workspace the EE controllers clip targets into (table at z = 0).
WORKSPACE_LOW = np.array([-0.35, -0.4, 0.005])
WORKSPACE_HIGH = np.array([0.35, 0.4, 0.5])

_KP = (800, 800, 800, 800, 400, 300, 150)
_ARM = """
<body name="link0" pos="{base}">
  <geom class="arm" type="cylinder" size="0.07 0.05" pos="0 0 0.05"/>
  <body name="link1" pos="0 0 0.333" gravcomp="1">
    <joint name="joint1" range="{r0}"/>
    <geom class="arm" type="capsule" size="0.06" fromto="0 0 -0.25 0 0 -0.05"/>
    <body name="link2" quat="1 -1 0 0" gravcomp="1">
      <joint name="joint2" range="{r1}"/>
      <geom class="arm" type="capsule" size="0.06" fromto="0 0 -0.06 0 0 0.06"/>
      <geom class="arm" type="capsule" size="0.055" fromto="0 0 0 0 -0.2 0"/>
      <body name="link3" pos="0 -0.316 0" quat="1 1 0 0" gravcomp="1">
        <joint name="joint3" range="{r2}"/>
        <geom class="arm" type="capsule" size="0.055" fromto="0 0 -0.1 0 0 0"/>
        <geom class="arm" type="capsule" size="0.05" fromto="0 0 0 0.0825 0 0"/>
        <body name="link4" pos="0.0825 0 0" quat="1 1 0 0" gravcomp="1">
          <joint name="joint4" range="{r3}"/>
          <geom class="arm" type="capsule" size="0.055" fromto="0 0 -0.05 0 0 0.05"/>
          <geom class="arm" type="capsule" size="0.05" fromto="0 0 0 -0.0825 0.1 0"/>
          <body name="link5" pos="-0.0825 0.384 0" quat="1 -1 0 0" gravcomp="1">
            <joint name="joint5" range="{r4}"/>
            <geom class="arm" type="capsule" size="0.05" fromto="0 0 -0.23 0 0 -0.02"/>
            <body name="link6" quat="1 1 0 0" gravcomp="1">
              <joint name="joint6" range="{r5}"/>
              <geom class="arm" type="capsule" size="0.045" fromto="0 0 -0.03 0 0 0.03"/>
              <geom class="arm" type="capsule" size="0.04" fromto="0 0 0 0.088 0 0"/>
              <body name="link7" pos="0.088 0 0" quat="1 1 0 0" gravcomp="1">
                <joint name="joint7" range="{r6}"/>
                <geom class="arm" type="cylinder" size="0.045 0.03" pos="0 0 0.05"/>
                <body name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834" gravcomp="1">
                  <geom class="arm" type="box" size="0.025 0.09 0.025" pos="0 0 0.03"/>
                  <site name="tcp" pos="0 0 0.1034" size="0.005" rgba="1 0 0 0" group="4"/>
                  <camera name="wrist" pos="{wrist_pos}" xyaxes="{wrist_xyaxes}" fovy="{wrist_fovy}"/>
                  <body name="left_finger" pos="0 0 0.0584" gravcomp="1">
                    <joint name="finger_left" class="finger" axis="0 1 0"/>
                    <geom class="pad" pos="0 0.008 0.035"/>
                  </body>
                  <body name="right_finger" pos="0 0 0.0584" gravcomp="1">
                    <joint name="finger_right" class="finger" axis="0 -1 0"/>
                    <geom class="pad" pos="0 -0.008 0.035"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
  </body>
</body>
"""

_SCENE = """
<mujoco model="robodistill_{name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="1024" offsamples="4"/>
    <global offwidth="640" offheight="640"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.78 0.72" rgb2="0.78 0.74 0.68" width="256" height="256"/>
    <material name="table" texture="grid" texrepeat="6 6" reflectance="0"/>
    <material name="arm" rgba="0.92 0.92 0.94 1"/>
    <material name="dark" rgba="0.2 0.2 0.22 1"/>
  </asset>
  <default>
    <joint type="hinge" axis="0 0 1" armature="0.1" damping="1"/>
    <default class="arm">
      <geom material="arm" contype="2" conaffinity="1" density="400"/>
    </default>
    <default class="finger">
      <joint type="slide" range="0 {finger}" armature="0.01" damping="5"/>
    </default>
    <default class="pad">
      <geom type="box" size="0.008 0.008 0.022" material="dark" contype="2" conaffinity="1" friction="1.5 0.02 0.002"
            condim="4" solref="0.01 1" density="400"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="1" friction="1.0 0.01 0.001" condim="4" density="500"/>
    </default>
  </default>
  <worldbody>
    <light pos="0 -0.4 1.5" dir="0 0.3 -1" diffuse="0.6 0.6 0.6" castshadow="true"/>
    <geom name="floor" type="plane" size="2 2 0.05" pos="0 0 -0.8" rgba="0.3 0.3 0.32 1" contype="1" conaffinity="1"/>
    <geom name="table" type="box" size="0.7 0.8 0.4" pos="-0.12 0 -0.4" material="table" contype="1" conaffinity="1"/>
    <camera name="front" pos="0.45 0 0.4" xyaxes="0 1 0 -0.625 0 0.781" fovy="55"/>
    <camera name="render" pos="0.45 0.45 0.45" xyaxes="-0.633 0.774 0 -0.380 -0.311 0.871" fovy="60"/>
    {arm}
    {objects}
  </worldbody>
  <actuator>
    {arm_actuators}
    <general name="finger_left" joint="finger_left" biastype="affine" gainprm="300" biasprm="0 -300 -10" ctrlrange="0 {finger}" forcerange="-20 20"/>
    <general name="finger_right" joint="finger_right" biastype="affine" gainprm="300" biasprm="0 -300 -10" ctrlrange="0 {finger}" forcerange="-20 20"/>
  </actuator>
</mujoco>
"""


def scene_xml(name: str, objects: str) -> str:
    """Full MJCF for a table-top task: table, arm, cameras and the task's own `objects` XML."""
    ranges = {f"r{i}": f"{lo} {hi}" for i, (lo, hi) in enumerate(JOINT_LIMITS)}
    # a camera looks along its -z with image up its y: view (sin t, 0, cos t), up (cos t, 0, -sin t), right hand +y
    c, s = np.cos(WRIST_CAMERA_TILT), np.sin(WRIST_CAMERA_TILT)
    arm = _ARM.format(
        base=" ".join(str(v) for v in BASE_POS),
        wrist_pos=" ".join(str(v) for v in WRIST_CAMERA_POS),
        wrist_xyaxes=f"0 1 0 {c:.4f} 0 {-s:.4f}",
        wrist_fovy=WRIST_CAMERA_FOVY,
        **ranges,
    )
    actuators = "\n    ".join(
        f'<general name="act{i + 1}" joint="joint{i + 1}" biastype="affine" gainprm="{kp}" biasprm="0 -{kp} -{2 * np.sqrt(kp):.1f}" '
        f'ctrlrange="{JOINT_LIMITS[i, 0]} {JOINT_LIMITS[i, 1]}" forcerange="-87 87"/>'
        for i, kp in enumerate(_KP)
    )
    return _SCENE.format(
        name=name, timestep=SIM_TIMESTEP, finger=FINGER_RANGE, arm=arm, objects=objects, arm_actuators=actuators
    )


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions."""
    out = np.empty(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def quat_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) that turns `current` into `target`."""
    conj = np.empty(4)
    mujoco.mju_negQuat(conj, current)
    err = quat_mul(target, conj)
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, err, 1.0)
    return vel


class ArmController:
    """Maps normalised actions in [-1, 1] to joint position targets for one control mode.

    EE modes run damped least-squares differential IK on MuJoCo's site Jacobian, with a null-space pull
    toward the home posture; `pd_ee_delta_pos` holds the gripper pointing straight down.
    """

    DAMPING = 0.05
    NULLSPACE_GAIN = 0.05

    def __init__(self, model: mujoco.MjModel, control_mode: str):
        if control_mode not in CONTROL_MODES:
            raise ValueError(f"unknown control_mode {control_mode!r}; choose one of {', '.join(CONTROL_MODES)}")
        self.model = model
        self.control_mode = control_mode
        self.arm_dofs = np.array([model.joint(f"joint{i + 1}").dofadr[0] for i in range(7)])
        self.arm_qpos = np.array([model.joint(f"joint{i + 1}").qposadr[0] for i in range(7)])
        self.finger_qpos = np.array([model.joint(n).qposadr[0] for n in ("finger_left", "finger_right")])
        self.tcp = model.site("tcp").id
        self.scratch = mujoco.MjData(model)
        # gripper pointing down (TCP z axis = world -z), fingers along world y
        self.down_quat = np.array([0.0, 1.0, 0.0, 0.0])

    @property
    def action_dim(self) -> int:
        return {"pd_joint_delta_pos": 8, "pd_ee_delta_pos": 4, "pd_ee_delta_pose": 7}[self.control_mode]

    def joint_targets(self, data: mujoco.MjData, action: np.ndarray) -> np.ndarray:
        """Joint position targets (7,) for the arm from a normalised action (gripper excluded)."""
        q = data.qpos[self.arm_qpos].copy()
        if self.control_mode == "pd_joint_delta_pos":
            return np.clip(q + JOINT_DELTA_SCALE * action[:7], JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1])
        tcp_pos = data.site_xpos[self.tcp].copy()
        tcp_quat = np.empty(4)
        mujoco.mju_mat2Quat(tcp_quat, data.site_xmat[self.tcp])
        target_pos = np.clip(tcp_pos + EE_POS_SCALE * action[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        if self.control_mode == "pd_ee_delta_pos":
            target_quat = self.down_quat
        else:
            rot = EE_ROT_SCALE * action[3:6]
            dq = np.empty(4)
            mujoco.mju_axisAngle2Quat(dq, rot / (np.linalg.norm(rot) + 1e-12), np.linalg.norm(rot))
            target_quat = quat_mul(dq, tcp_quat)
        return self.ik_step(data, q, target_pos - tcp_pos, quat_error(target_quat, tcp_quat))

    def ik_step(self, data: mujoco.MjData, q: np.ndarray, dpos: np.ndarray, drot: np.ndarray) -> np.ndarray:
        """One damped least-squares step: joint targets (7,) that move the TCP by (dpos, drot)."""
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, data, jacp, jacr, self.tcp)
        jac = np.vstack([jacp, jacr])[:, self.arm_dofs]  # (6, 7)
        err = np.concatenate([dpos, drot])
        jac_pinv = jac.T @ np.linalg.inv(jac @ jac.T + self.DAMPING**2 * np.eye(6))  # damped pseudo-inverse (7, 6)
        dq = jac_pinv @ err
        dq += (np.eye(7) - jac_pinv @ jac) @ (self.NULLSPACE_GAIN * (HOME_QPOS - q))  # null-space pull to home
        return np.clip(q + dq, JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1])

    def ee_to_joint_action(self, qpos: np.ndarray, dpos: np.ndarray) -> np.ndarray:
        """Joint-delta action (7,) in [-1, 1] that moves the TCP by `dpos` metres, gripper kept pointing down.

        Used by scripted experts to drive `pd_joint_delta_pos` from a Cartesian plan; works on a scratch copy.
        """
        self.scratch.qpos[self.arm_qpos] = qpos
        mujoco.mj_kinematics(self.model, self.scratch)
        mujoco.mj_comPos(self.model, self.scratch)
        cur = np.empty(4)
        mujoco.mju_mat2Quat(cur, self.scratch.site_xmat[self.tcp])
        target = self.ik_step(self.scratch, qpos, dpos, quat_error(self.down_quat, cur))
        delta = (target - qpos) / JOINT_DELTA_SCALE
        return delta / max(1.0, float(np.abs(delta).max()))  # scale the whole vector: keeps the motion's direction
