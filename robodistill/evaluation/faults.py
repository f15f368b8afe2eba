"""Perturbed episodes for testing a failure monitor: faults that make a policy fail and benign changes that should
not, injected into robodistill's MuJoCo tasks by a Gymnasium wrapper.

- `displace`: at the fault step, every free-floating object (the cube, the T) is moved `magnitude` metres in the
  table plane in a random direction and stopped.
- `action_noise`: from the fault step, Gaussian noise of std `magnitude` is added to every action.
- `camera_shift`: at the fault step, the fixed scene camera (`front`) moves `magnitude` metres in a random direction
  (a bumped camera mount); only a student that reads that camera sees it.
- `table_colour` (benign): the table is drawn in another colour for the whole episode.
- `lighting` (benign): the scene's lights are dimmed to `magnitude` of their strength.
The fault step and direction come from the episode's reset seed, so a perturbed episode is as repeatable as any.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

FAULTS = ("displace", "action_noise")  # faults any student meets (the failure-monitor bench's state students)
CAMERA_FAULTS = ("camera_shift",)  # faults only a camera student sees
BENIGN = ("table_colour", "lighting")
KINDS = FAULTS + CAMERA_FAULTS + BENIGN
SCENE_CAMERA = "front"


class Perturbed(gym.Wrapper):
    """`env` with the perturbation `kind` (see the module docstring) from a step drawn in [first, last)."""

    def __init__(self, env: gym.Env, kind: str, magnitude: float, first: int = 20, last: int = 60):
        if kind not in KINDS:
            raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(KINDS)}")
        super().__init__(env)
        self.kind, self.magnitude, self.first, self.last = kind, float(magnitude), int(first), int(last)
        model = env.unwrapped.model
        self._defaults = (
            model.geom_rgba.copy(),
            model.light_diffuse.copy(),
            model.geom_matid.copy(),
            model.cam_pos.copy(),
        )
        self._free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
        self.rng = np.random.default_rng(0)
        self.fault_step = self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.rng = np.random.default_rng(seed)
        self.fault_step = int(self.rng.integers(self.first, self.last))
        self.steps = 0
        model = self.env.unwrapped.model
        model.geom_rgba[:], model.light_diffuse[:], model.geom_matid[:], model.cam_pos[:] = self._defaults
        if self.kind == "table_colour":
            table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table")
            model.geom_rgba[table] = [*self.rng.uniform(0.2, 0.9, 3), 1.0]
            model.geom_matid[table] = -1  # the colour, not the grid texture
        elif self.kind == "lighting":
            model.light_diffuse[:] *= self.magnitude
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> Any:
        if self.kind == "action_noise" and self.steps >= self.fault_step:
            noise = self.rng.normal(0.0, self.magnitude, np.shape(action))
            action = np.clip(np.asarray(action) + noise, -1.0, 1.0).astype(np.float32)
        if self.kind == "displace" and self.steps == self.fault_step:
            self._displace()
        if self.kind == "camera_shift" and self.steps == self.fault_step:
            model = self.env.unwrapped.model
            camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, SCENE_CAMERA)
            direction = self.rng.normal(size=3)
            model.cam_pos[camera] += self.magnitude * direction / np.linalg.norm(direction)
        self.steps += 1
        return self.env.step(action)

    def _displace(self) -> None:
        u = self.env.unwrapped
        angle = self.rng.uniform(0, 2 * np.pi)
        for j in self._free:
            adr, vadr = u.model.jnt_qposadr[j], u.model.jnt_dofadr[j]
            u.data.qpos[adr : adr + 2] += self.magnitude * np.array([np.cos(angle), np.sin(angle)])
            u.data.qvel[vadr : vadr + 6] = 0.0
        mujoco.mj_forward(u.model, u.data)
