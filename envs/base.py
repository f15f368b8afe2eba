"""Base class for robodistill's table-top tasks: modes as constructor arguments, a few hooks per task."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.rendering import make_renderer
from envs.robot import (
    CAMERAS,
    CONTROL_FREQ,
    EE_POS_SCALE,
    EE_ROT_SCALE,
    FINGER_RANGE,
    HOME_QPOS,
    SIM_TIMESTEP,
    ArmController,
    quat_error,
    scene_xml,
)

OBS_MODES = ("state", "rgb", "state+rgb")  # each may end in "+language": the instruction joins the observation
LANGUAGE = "+language"
INSTRUCTION_BYTES = 64  # the `instruction` observation: UTF-8 bytes, zero padded
REWARD_MODES = ("sparse", "dense", "normalized_dense")
IMAGE_SUFFIX = "_rgb"  # each camera's image is the observation `<camera>_rgb`
PROPRIO_KEY = "proprio"
# what `sim_state` saves: enough for mj_setState to restore an episode's exact state
SIM_STATE_SPEC = int(mujoco.mjtState.mjSTATE_FULLPHYSICS) | int(mujoco.mjtState.mjSTATE_USER)


class TableTopEnv(gym.Env):
    """A MuJoCo table-top manipulation task with ManiSkill-style modes.

    A task overrides: `_objects_xml`, `_initialize_episode`, `_task_obs`, `evaluate`, `compute_dense_reward`,
    `instruction_templates`, `max_dense_reward` and `make_expert`.

    The rgb obs modes observe each of `cameras` (a fixed scene camera `front`, a `wrist` camera on the hand) as its
    own uint8 image `<camera>_rgb` (H, W, 3) at `image_size`, plus `proprio`; only the listed cameras are rendered.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}
    task_name = "base"
    instruction_templates: tuple[str, ...] = ("do the task",)
    max_dense_reward = 1.0

    def __init__(
        self,
        obs_mode: str = "state",
        control_mode: str = "pd_ee_delta_pos",
        reward_mode: str = "dense",
        render_mode: str | None = None,
        image_size: int | tuple[int, int] = 96,
        render_size: int | tuple[int, int] = 256,
        cameras: Sequence[str] = CAMERAS,
    ):
        base_mode = obs_mode.removesuffix(LANGUAGE)
        if base_mode not in OBS_MODES:
            raise ValueError(
                f"unknown obs_mode {obs_mode!r}; choose one of {', '.join(OBS_MODES)}, each optionally + '{LANGUAGE}'"
            )
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {reward_mode!r}; choose one of {', '.join(REWARD_MODES)}")
        if isinstance(cameras, str) or not all(isinstance(c, str) for c in cameras):
            raise ValueError(f"cameras must be a list of camera names (of {', '.join(CAMERAS)}), got {cameras!r}")
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or len(set(cameras)) != len(cameras):
            what = f"unknown cameras {unknown}" if unknown else f"cameras listed twice in {list(cameras)}"
            raise ValueError(f"{what}; this task's cameras: {', '.join(CAMERAS)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; only 'rgb_array' is offered")
        self.obs_mode, self.reward_mode, self.render_mode = base_mode, reward_mode, render_mode
        self.language = obs_mode.endswith(LANGUAGE)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.render_size = (render_size, render_size) if isinstance(render_size, int) else tuple(render_size)
        self.cameras = tuple(cameras)  # rendered only in the rgb obs modes, in this order

        self.model = mujoco.MjModel.from_xml_string(scene_xml(self.task_name, self._objects_xml()))
        self.data = mujoco.MjData(self.model)
        self.controller = ArmController(self.model, control_mode)
        self.control_mode = control_mode
        self.n_substeps = int(round(1.0 / CONTROL_FREQ / SIM_TIMESTEP))
        self._obs_renderer = None
        self._video_renderer = None
        too_long = [t for t in self.instruction_templates if len(t.encode()) > INSTRUCTION_BYTES]
        if too_long:
            raise ValueError(f"instruction templates longer than {INSTRUCTION_BYTES} bytes: {too_long}")
        self.instruction = self.instruction_templates[0]
        self.elapsed_steps = 0

        self.action_space = spaces.Box(-1.0, 1.0, (self.controller.action_dim,), dtype=np.float32)
        mujoco.mj_forward(self.model, self.data)
        self._reset_robot()
        state = self._state_vector()
        self.state_layout = self._layout()
        state_space = spaces.Box(-np.inf, np.inf, state.shape, dtype=np.float32)
        obs_spaces = {} if base_mode == "rgb" else {"state": state_space}
        if base_mode != "state":
            h, w = self.image_size
            for camera in self.cameras:
                obs_spaces[image_key(camera)] = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
            obs_spaces[PROPRIO_KEY] = spaces.Box(-np.inf, np.inf, self._proprio().shape, dtype=np.float32)
        if self.language:
            obs_spaces["instruction"] = spaces.Box(0, 255, (INSTRUCTION_BYTES,), dtype=np.uint8)
        self.observation_space = state_space if list(obs_spaces) == ["state"] else spaces.Dict(obs_spaces)

    # ---- hooks for tasks ------------------------------------------------------------------------------------
    def _objects_xml(self) -> str:
        return ""

    def _initialize_episode(self, rng: np.random.Generator) -> None:
        """Place objects and goal for a new episode."""

    def _task_obs(self) -> dict[str, np.ndarray]:
        return {}

    def evaluate(self) -> dict[str, Any]:
        """Task metrics; must hold `success` and `fail` (bools)."""
        return {"success": False, "fail": False}

    def compute_dense_reward(self, info: dict[str, Any]) -> float:
        return 0.0

    def make_expert(self) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} has no scripted expert")

    # ---- robot state ----------------------------------------------------------------------------------------
    def _reset_robot(self, rng: np.random.Generator | None = None) -> None:
        q = HOME_QPOS.copy()
        if rng is not None:
            q += rng.normal(0.0, 0.02, size=7)
        c = self.controller
        self.data.qpos[c.arm_qpos] = q
        self.data.qpos[c.finger_qpos] = FINGER_RANGE
        self.data.qvel[:] = 0.0
        self.data.ctrl[:7] = q
        self.data.ctrl[7:9] = FINGER_RANGE

    def sim_state(self) -> np.ndarray:
        """Flat MuJoCo state (physics + controls + mocap goal poses, `SIM_STATE_SPEC`): robomimic's `states`."""
        spec = SIM_STATE_SPEC
        out = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, out, spec)
        return out

    @property
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.controller.tcp].copy()

    @property
    def gripper_width(self) -> float:
        return float(self.data.qpos[self.controller.finger_qpos].sum())

    def _agent_obs(self) -> dict[str, np.ndarray]:
        c = self.controller
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[c.tcp])
        return {
            "qpos": self.data.qpos[c.arm_qpos],
            "qvel": self.data.qvel[c.arm_dofs],
            "gripper_width": np.array([self.gripper_width]),
            "tcp_pos": self.tcp_pos,
            "tcp_quat": quat * (1.0 if quat[1] >= 0 else -1.0),  # hemisphere of the gripper-down quaternion
        }

    def _proprio(self) -> np.ndarray:
        return np.concatenate(list(self._agent_obs().values())).astype(np.float32)

    def _pieces(self) -> dict[str, np.ndarray]:
        return {**self._agent_obs(), **self._task_obs()}

    def _layout(self) -> dict[str, slice]:
        """Named slices of the flat state vector (what scripted experts read)."""
        layout, i = {}, 0
        for k, v in self._pieces().items():
            n = np.asarray(v).size
            layout[k] = slice(i, i + n)
            i += n
        return layout

    def _state_vector(self) -> np.ndarray:
        return np.concatenate([np.ravel(v) for v in self._pieces().values()]).astype(np.float32)

    @property
    def shape_meta(self) -> dict[str, Any]:
        """Observation and action shapes every policy, dataset and export reads."""
        obs = {}
        if isinstance(self.observation_space, spaces.Dict):
            kinds = {image_key(c): "rgb" for c in self.cameras} | {"instruction": "text"}
            for k, s in self.observation_space.spaces.items():
                obs[k] = {"shape": list(s.shape), "type": kinds.get(k, "low_dim")}
        else:
            obs["state"] = {"shape": list(self.observation_space.shape), "type": "low_dim"}
        # every control mode puts the gripper command last: discrete-valued, samplers may treat it apart
        gripper = [int(self.action_space.shape[0]) - 1]
        return {"obs": obs, "action": {"shape": list(self.action_space.shape), "gripper_dims": gripper}}

    # ---- gym API --------------------------------------------------------------------------------------------
    def _get_obs(self):
        if self.obs_mode == "state" and not self.language:
            return self._state_vector()
        obs = {} if self.obs_mode == "rgb" else {"state": self._state_vector()}
        if self.obs_mode != "state":
            obs.update({image_key(c): self._render_camera(c) for c in self.cameras})
            obs[PROPRIO_KEY] = self._proprio()
        if self.language:
            obs["instruction"] = encode_instruction(self.instruction)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_robot(self.np_random)
        self._initialize_episode(self.np_random)
        templates = self.instruction_templates
        self.instruction = templates[int(self.np_random.integers(len(templates)))]
        mujoco.mj_forward(self.model, self.data)
        self.elapsed_steps = 0
        info = self.evaluate()
        info["instruction"] = self.instruction
        return self._get_obs(), info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        action = np.clip(action, -1.0, 1.0)
        self.data.ctrl[:7] = self.controller.joint_targets(self.data, action)
        self.data.ctrl[7:9] = (action[-1] + 1.0) * 0.5 * FINGER_RANGE
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.elapsed_steps += 1
        info = self.evaluate()
        reward = self._reward(info)
        return self._get_obs(), reward, bool(info["success"] or info["fail"]), False, info

    def _reward(self, info: dict[str, Any]) -> float:
        if self.reward_mode == "sparse":
            return float(info["success"])
        # success earns the maximum once and ends the episode; for a discounted RL learner lingering near the goal
        # would still pay more, which robodistill's RL learners undo by treating success as absorbing (sb3.py)
        dense = self.max_dense_reward if info["success"] else self.compute_dense_reward(info)
        return float(dense / self.max_dense_reward) if self.reward_mode == "normalized_dense" else float(dense)

    # ---- rendering ------------------------------------------------------------------------------------------
    def _render_camera(self, camera: str) -> np.ndarray:
        """One observation frame (H, W, 3) uint8 of `camera` at `image_size`."""
        if self._obs_renderer is None:  # one renderer (GL context) draws every camera of the same size
            h, w = self.image_size
            self._obs_renderer = make_renderer(self.model, h, w)
        r = self._obs_renderer
        r.update_scene(self.data, camera=camera)
        # observation frames skip shadows and reflections: ~3x faster, and nothing a policy needs
        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return r.render()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._video_renderer is None:
            h, w = self.render_size
            self._video_renderer = make_renderer(self.model, h, w)
        self._video_renderer.update_scene(self.data, camera="render")
        return self._video_renderer.render()

    def close(self):
        for r in (self._obs_renderer, self._video_renderer):
            if r is not None:
                r.close()
        self._obs_renderer = self._video_renderer = None


def image_key(camera: str) -> str:
    """The observation key of a camera's image: `<camera>_rgb`."""
    return camera + IMAGE_SUFFIX


def cameras_read(keys: Iterable[str]) -> list[str]:
    """The cameras whose images (`<camera>_rgb`) are among the observation `keys`, in their order."""
    return [k.removesuffix(IMAGE_SUFFIX) for k in keys if k.endswith(IMAGE_SUFFIX)]


def encode_instruction(text: str) -> np.ndarray:
    """An instruction as the `instruction` observation: UTF-8 bytes, zero padded to INSTRUCTION_BYTES (uint8)."""
    out = np.zeros(INSTRUCTION_BYTES, dtype=np.uint8)
    raw = text.encode()[:INSTRUCTION_BYTES]
    out[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


class ScriptedExpert:
    """A privileged, stateless expert: reads the flat state vector, plans a TCP displacement and a gripper command.

    Subclasses implement `plan`; this class converts the plan into the env's control mode and handles batches
    (obs (D,) or (N, D) -> action (A,) or (N, A)).
    """

    def __init__(self, env: TableTopEnv):
        self.layout = dict(env.state_layout)
        self.control_mode = env.control_mode
        self.controller = env.controller
        self.action_dim = env.action_space.shape[0]

    def plan(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Given named state pieces (N, k), return TCP displacement in metres (N, 3) and gripper in [-1, 1] (N,)."""
        raise NotImplementedError

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        single = obs.ndim == 1
        obs = np.atleast_2d(obs)
        s = {k: obs[:, sl] for k, sl in self.layout.items()}
        dpos, grip = self.plan(s)
        n = obs.shape[0]
        action = np.zeros((n, self.action_dim), dtype=np.float32)
        action[:, -1] = np.clip(grip, -1.0, 1.0)
        if self.control_mode == "pd_joint_delta_pos":
            for i in range(n):
                action[i, :7] = self.controller.ee_to_joint_action(s["qpos"][i], dpos[i])
        else:
            action[:, :3] = np.clip(dpos / EE_POS_SCALE, -1.0, 1.0)
            if self.control_mode == "pd_ee_delta_pose":
                for i in range(n):  # rotate back to gripper-down
                    action[i, 3:6] = np.clip(
                        quat_error(self.controller.down_quat, s["tcp_quat"][i]) / EE_ROT_SCALE, -1.0, 1.0
                    )
        return action[0] if single else action
