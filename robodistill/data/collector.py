"""The collector: the student drives vectorised envs, the teacher labels every visited state in one batched call.

At each step a per-env coin with probability beta decides whether the teacher's or the student's action is
executed; the teacher's label is stored either way. Finished episodes are written to the dataset at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from robodistill.data.dataset import EpisodeWriter
from robodistill.observations import as_dict, stack, view
from robodistill.progress import progress_bar
from robodistill.teachers.protocol import OPTIONAL_LABELS, Teacher, query_teacher, reset_episode


@dataclass
class CollectStats:
    episodes: int = 0
    steps: int = 0
    successes: int = 0
    returns: list[float] = field(default_factory=list)
    teacher_acted: int = 0
    env_steps: int = 0  # every env step taken, including episodes dropped at the end; each one teacher-labelled
    wall_s: float = 0.0

    @property
    def teacher_labels(self) -> int:
        return self.env_steps  # the teacher labels every env at every step

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)

    def as_dict(self) -> dict[str, float]:
        return {
            "episodes": self.episodes,
            "steps": self.steps,
            "success_rate": self.success_rate,
            "return_mean": float(np.mean(self.returns)) if self.returns else 0.0,
            "teacher_labels": self.teacher_labels,
            "teacher_acted_fraction": self.teacher_acted / max(self.steps, 1),
            "steps_per_s": self.steps / max(self.wall_s, 1e-9),
        }


def make_vector_env(env_fns: list[Callable[[], gym.Env]]) -> gym.vector.SyncVectorEnv:
    """In-process vector env (subprocess IPC costs more than small MuJoCo steps) with same-step autoreset."""
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class Collector:
    """Runs student and teacher on a vector env and records executed, student and teacher actions."""

    def __init__(
        self,
        venv: gym.vector.SyncVectorEnv,
        teacher: Teacher,
        student: Any | None = None,
        writer: EpisodeWriter | None = None,
        seed: int = 0,
        student_deterministic: bool = True,
    ):
        self.venv = venv
        self.teacher = teacher
        self.student = student
        self.writer = writer
        self.student_deterministic = student_deterministic
        self.rng = np.random.default_rng(seed)
        self.num_envs = venv.num_envs
        self.action_dim = int(venv.single_action_space.shape[0])
        self._sim_states = [getattr(e.unwrapped, "sim_state", None) for e in venv.envs]

    def state_dict(self) -> dict[str, Any]:
        """What the collector draws from across `collect` calls: its coin RNG and the RNGs of the teacher and its
        wrappers (an imperfect teacher's noise).

        Nothing else carries over: every `collect` resets the envs with its own seed (env i: seed + i; SAME_STEP
        autoreset then draws from each env's reseeded RNG, and no action space is sampled), every episode starts
        the teacher's and student's episode state afresh, and a stochastic student samples from torch's global RNG,
        which the run's checkpoint restores.
        """
        return {"coins": self.rng.bit_generator.state, "teacher": [g.bit_generator.state for g in self._teacher_rngs()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["coins"]
        rngs = self._teacher_rngs()
        if len(rngs) != len(state["teacher"]):
            n = len(state["teacher"])
            raise ValueError(f"the collector state holds {n} teacher RNGs, this teacher has {len(rngs)}")
        for g, s in zip(rngs, state["teacher"], strict=True):
            g.bit_generator.state = s

    def _teacher_rngs(self) -> list[np.random.Generator]:
        """The `rng` of the teacher and of every teacher it wraps (`.teacher`), outermost first."""
        rngs, t = [], self.teacher
        while t is not None:
            if isinstance(getattr(t, "rng", None), np.random.Generator):
                rngs.append(t.rng)
            t = getattr(t, "teacher", None)
        return rngs

    def collect(
        self,
        num_episodes: int | None,
        beta: float,
        seed: int,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        desc: str = "collect",
        min_steps: int | None = None,
    ) -> CollectStats:
        """Run until `num_episodes` episodes finish, or until finished episodes hold `min_steps` steps.

        Episodes still running then are dropped; env i is reset with seed + i.
        """
        if (num_episodes is None) == (min_steps is None):
            raise ValueError("give exactly one of num_episodes and min_steps")
        stats = CollectStats()

        def done() -> bool:
            return stats.episodes >= num_episodes if num_episodes is not None else stats.steps >= min_steps

        t0 = time.perf_counter()
        obs, info = self.venv.reset(seed=seed)
        self._episode_start(None)
        buffers = [self._new_buffer(info, i) for i in range(self.num_envs)]
        bar = progress_bar(total=num_episodes or min_steps, desc=desc, enabled=progress, leave=False)
        while not done():
            obs_d = as_dict(obs)
            label = query_teacher(self.teacher, obs_d, self.action_dim)
            if self.student is not None and beta < 1.0:
                s_action, s_logp = self.student.act(view(obs_d, self.student.obs_keys), self.student_deterministic)
            else:
                s_action, s_logp = label.action, None
            use_teacher = self.rng.random(self.num_envs) < beta
            executed = np.where(use_teacher[:, None], label.action, s_action).astype(np.float32)
            states = [f() if f is not None else None for f in self._sim_states]

            obs, reward, term, trunc, info = self.venv.step(executed)
            stats.env_steps += self.num_envs
            for i in range(self.num_envs):
                b = buffers[i]
                b["obs"].append({k: v[i] for k, v in obs_d.items()})
                b["actions"].append(executed[i])
                b["rewards"].append(reward[i])
                b["teacher_actions"].append(label.action[i])
                b["teacher_acted"].append(use_teacher[i])
                for name in OPTIONAL_LABELS:
                    value = getattr(label, name)
                    if value is not None:
                        b.setdefault(f"teacher_{name}", []).append(value[i])
                if self.student is not None and s_logp is not None:
                    b["student_actions"].append(s_action[i])
                    b["student_log_probs"].append(s_logp[i])
                if states[i] is not None:
                    b["states"].append(states[i])
                if term[i] or trunc[i]:
                    success = info["final_info"].get("success")  # generic Gymnasium envs may not report it
                    success = bool(success[i]) if success is not None else False
                    episode = self._finish(b, as_dict(info["final_obs"][i]), success, beta, bool(term[i]))
                    stats.episodes += 1
                    stats.steps += len(episode["actions"])
                    stats.successes += int(episode["attrs"]["success"])
                    stats.returns.append(float(episode["rewards"].sum()))
                    stats.teacher_acted += int(episode["teacher"]["acted"].sum())
                    if self.writer is not None:
                        self.writer.write(episode)
                    if on_episode is not None:
                        on_episode(episode)
                    bar.update(1 if num_episodes is not None else len(episode["actions"]))
                    buffers[i] = self._new_buffer(info, i)
                    self._episode_start(i)
                    if done():
                        break
        bar.close()
        stats.wall_s = time.perf_counter() - t0
        return stats

    def _episode_start(self, slot: int | None) -> None:
        """Tell a stateful teacher or student (observation history, action queue) that env `slot` (all: None)
        starts a new episode."""
        reset_episode(self.teacher, slot)
        reset_episode(self.student, slot)

    def _new_buffer(self, info: dict[str, Any], i: int) -> dict[str, Any]:
        instr = info.get("instruction")
        has = info.get("_instruction")
        instruction = str(instr[i]) if instr is not None and (has is None or has[i]) else ""
        return {
            "obs": [],
            "actions": [],
            "rewards": [],
            "teacher_actions": [],
            "teacher_acted": [],
            "student_actions": [],
            "student_log_probs": [],
            "states": [],
            "instruction": instruction,
        }

    def _finish(
        self, b: dict[str, Any], final_obs: dict[str, np.ndarray], success: bool, beta: float, terminated: bool
    ) -> dict[str, Any]:
        """Turn a finished episode's step lists into the dataset's arrays."""
        obs = stack(b["obs"])
        next_obs = {k: np.concatenate([v[1:], np.asarray(final_obs[k])[None]]) for k, v in obs.items()}
        n = len(b["actions"])
        dones = np.zeros(n, dtype=np.int64)
        dones[-1] = 1
        teacher = {"actions": np.asarray(b["teacher_actions"], np.float32), "acted": np.asarray(b["teacher_acted"])}
        for name in OPTIONAL_LABELS:
            if f"teacher_{name}" in b:
                teacher[name] = np.asarray(b[f"teacher_{name}"], np.float32)
        episode: dict[str, Any] = {
            "obs": obs,
            "next_obs": next_obs,
            "actions": np.asarray(b["actions"], np.float32),
            "rewards": np.asarray(b["rewards"], np.float32),
            "dones": dones,
            "teacher": teacher,
            "attrs": {"success": success, "terminated": terminated, "beta": beta, "instruction": b["instruction"]},
        }
        if b["states"]:
            episode["states"] = np.asarray(b["states"])
        if b["student_actions"]:
            episode["student"] = {
                "actions": np.asarray(b["student_actions"], np.float32),
                "log_probs": np.asarray(b["student_log_probs"], np.float32),
            }
        return episode
