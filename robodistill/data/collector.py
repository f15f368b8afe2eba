"""The collector: the student drives vectorised envs, the teacher labels every visited state in one batched call.

At each step a per-env coin with probability beta decides whether the teacher's or the student's action is
executed; the teacher's label is stored either way. Finished episodes are written to the dataset at once.

A round's episodes are split over its env slots in fixed quotas, and each slot's episodes depend on its slot alone
(its reset seed, its coin stream): whichever process steps a slot (here, or an env-runner actor of the Ray backend),
it runs the same episodes. An env is no longer stepped once its quota is done: a round collects exactly its
episodes, and every state the teacher labels is kept (no episode is cut off and dropped).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate, create_empty_array

from robodistill.data.dataset import EpisodeWriter
from robodistill.observations import as_dict, stack, view
from robodistill.progress import progress_bar
from robodistill.teachers.protocol import OPTIONAL_LABELS, Teacher, act_in_slots, request_teacher, reset_episode


@dataclass
class CollectStats:
    """What one `collect` call did: episodes kept, their steps, success and return, and what the teacher labelled."""

    episodes: int = 0
    steps: int = 0  # steps of the episodes kept (all of them)
    successes: int = 0
    reported: int = 0  # episodes whose task reports success (`info["success"]`)
    returns: list[float] = field(default_factory=list)
    teacher_acted: int = 0
    env_steps: int = 0  # every env step taken
    teacher_calls: int = 0  # states the teacher labelled (rows of its batched calls)
    wall_s: float = 0.0

    @classmethod
    def combined(cls, parts: list[CollectStats]) -> CollectStats:
        """Several collections (e.g. one per task) as one."""
        out = cls()
        for p in parts:
            for f in ("episodes", "steps", "successes", "reported", "teacher_acted", "env_steps", "teacher_calls"):
                setattr(out, f, getattr(out, f) + getattr(p, f))
            out.returns += p.returns
            out.wall_s += p.wall_s
        return out

    def add(self, episode: dict[str, Any], reported: bool) -> None:
        """Count a finished episode (`reported`: its task reports success); every step of it was labelled."""
        n = len(episode["actions"])
        self.episodes += 1
        self.steps += n
        self.env_steps += n
        self.teacher_calls += n
        self.reported += reported
        self.successes += bool(episode["attrs"]["success"])
        self.returns.append(float(episode["rewards"].sum()))
        self.teacher_acted += int(episode["teacher"]["acted"].sum())

    @property
    def success_rate(self) -> float | None:
        """Successful episodes per episode; None for a task that reports no success."""
        return self.successes / self.reported if self.reported else None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "episodes": self.episodes,
            "steps": self.steps,
            "success_rate": self.success_rate,
            "return_mean": float(np.mean(self.returns)) if self.returns else 0.0,
            "env_steps": self.env_steps,
            "teacher_calls": self.teacher_calls,
            "teacher_calls_per_label": self.teacher_calls / max(self.steps, 1),  # 1.0: no labelled state dropped
            "teacher_acted_fraction": self.teacher_acted / max(self.steps, 1),
            "steps_per_s": self.steps / max(self.wall_s, 1e-9),
        }


@dataclass(frozen=True)
class RoundPlan:
    """One `collect` call, as every process that steps some of its env slots needs it (picklable)."""

    num_episodes: int | None  # episodes over all slots; None: collect until min_steps
    min_steps: int | None  # steps of whole episodes to reach (over the envs of one collector)
    beta: float  # the teacher's action executes with this probability, per env and step
    seed: int  # slot s is first reset with seed + s
    key: int  # the round's coin key: slot s draws its coins from the stream (key, s)
    student_horizon: int | None = None
    episode_attrs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 1  # env slots over all processes

    def quota(self, slot: int) -> int:
        """How many of the round's episodes slot `slot` runs: as even a split as the count allows, lower slots first."""
        if self.num_episodes is None:
            raise ValueError("a min_steps plan has no per-slot quota")
        return self.num_episodes // self.num_envs + (slot < self.num_episodes % self.num_envs)


def new_plan(
    rng: np.random.Generator,
    num_episodes: int | None,
    beta: float,
    seed: int,
    min_steps: int | None,
    student_horizon: int | None,
    episode_attrs: Mapping[str, Any] | None,
    num_envs: int,
) -> RoundPlan:
    """A round's plan over `num_envs` env slots, its coin key drawn from `rng` (a collector's one RNG stream, which
    its checkpoint stores)."""
    if (num_episodes is None) == (min_steps is None):
        raise ValueError("give exactly one of num_episodes and min_steps")
    key = int(rng.integers(2**63))
    return RoundPlan(num_episodes, min_steps, beta, seed, key, student_horizon, dict(episode_attrs or {}), num_envs)


def make_vector_env(env_fns: list[Callable[[], gym.Env]]) -> gym.vector.SyncVectorEnv:
    """In-process vector env (subprocess IPC costs more than small MuJoCo steps). The collector steps and resets its
    `envs` one by one, only those whose episode the round needs; its own `step` autoresets in the same step."""
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class EpisodeSource:
    """What every collector backend shares: `collect` a round's episodes from `stream(plan)`, count, write and hand
    them on. A backend sets `writer`, `num_envs` (env slots) and `rng` (the round-key stream its checkpoint stores)."""

    writer: Any = None
    num_envs: int
    rng: np.random.Generator

    def stream(self, plan: RoundPlan) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """The plan's episodes as (slot, episode, whether its task reports success), as they finish."""
        raise NotImplementedError

    def collect(
        self,
        num_episodes: int | None,
        beta: float,
        seed: int,
        on_episode: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = True,
        desc: str = "collect",
        min_steps: int | None = None,
        student_horizon: int | None = None,
        episode_attrs: Mapping[str, Any] | None = None,
    ) -> CollectStats:
        """Exactly `num_episodes` episodes, or whole episodes until they hold at least `min_steps` steps; each written
        to `writer` and handed to `on_episode` as it finishes.

        With `student_horizon` H the student drives (with probability 1 - beta per step) only the first H steps of
        each episode; the teacher's action runs from step H on (a horizon curriculum). `episode_attrs` are stored
        with every episode (e.g. its round). See `Collector.episodes` for which env runs which episode.
        """
        plan = new_plan(self.rng, num_episodes, beta, seed, min_steps, student_horizon, episode_attrs, self.num_envs)
        bar = progress_bar(total=num_episodes or min_steps, desc=desc, enabled=progress, leave=False)
        stats, t0 = CollectStats(), time.perf_counter()
        for _, episode, reported in self.stream(plan):
            stats.add(episode, reported)
            if self.writer is not None:
                self.writer.write(episode)
            if on_episode is not None:
                on_episode(episode)
            bar.update(1 if num_episodes is not None else len(episode["actions"]))
        bar.close()
        stats.wall_s = time.perf_counter() - t0
        return stats


class Collector(EpisodeSource):
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

        Nothing else carries over: every `collect` resets the envs it uses with its own seed (env i: seed + i; its
        later episodes reset without a seed, drawing from the env's reseeded RNG, and no action space is sampled),
        every episode starts the teacher's and student's episode state afresh, and a stochastic student samples from
        torch's global RNG, which the run's checkpoint restores.
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

    def episodes(
        self, plan: RoundPlan, first_slot: int = 0, done: Mapping[int, int] | None = None
    ) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """The plan's episodes of this collector's envs, which are env slots `first_slot`.. of the plan's
        `num_envs`, as (slot, episode, whether its task reports success) as they finish; `done` {slot: n}: episodes
        of the slot already collected elsewhere, taken off its quota.

        Every episode is a function of its slot alone, whichever process steps it: slot s runs
        `plan.quota(s)` episodes, is first reset with seed + s (its later episodes without a seed, drawing from the
        env's reseeded RNG) and draws its beta coins from its own stream (the round's key and s). A `min_steps` plan
        instead starts an episode on a free env while the finished and running ones (of these envs) hold fewer than
        `plan.min_steps` steps. An env with no episode to run idles: neither teacher nor student sees it. The call
        returns when every started episode has finished: all are kept.
        """
        obs: list[Any] = [None] * self.num_envs  # each env's current observation
        buffers: list[dict[str, Any] | None] = [None] * self.num_envs  # each env's running episode; None: idle
        slots = [first_slot + i for i in range(self.num_envs)]  # row j of a batch is env active[j], slot slots[.]
        coins = [np.random.default_rng([plan.key, s]) for s in slots]
        started, steps_done = [(done or {}).get(s, 0) for s in slots], [0]

        def start_if_needed(i: int, seed_i: int | None) -> None:
            if plan.num_episodes is not None:
                needed = started[i] < plan.quota(slots[i])
            else:
                needed = steps_done[0] + sum(len(b["actions"]) for b in buffers if b is not None) < plan.min_steps
            if needed:
                obs[i], info = self.venv.envs[i].reset(seed=seed_i)
                buffers[i] = self._new_buffer(info)
                started[i] += 1
                self._episode_start(slots[i])

        for i in range(self.num_envs):  # each started episode resets its slot's state in the teacher and student
            start_if_needed(i, plan.seed + slots[i])
        beta, horizon = plan.beta, plan.student_horizon
        while active := [i for i, b in enumerate(buffers) if b is not None]:
            active_slots = [slots[i] for i in active]
            batch = self._batch([obs[i] for i in active])
            labels = request_teacher(self.teacher, batch, self.action_dim, active_slots)  # the student runs meanwhile
            if self.student is not None and beta < 1.0:
                student_obs = view(batch, self.student.obs_keys)
                s_action, s_logp = act_in_slots(self.student, student_obs, active_slots, self.student_deterministic)
                label = labels()
            else:
                label = labels()
                s_action, s_logp = label.action, None
            use_teacher = np.array([coins[i].random() < beta for i in active], dtype=bool)
            if horizon is not None:  # past the student's horizon the teacher drives
                use_teacher |= np.array([len(buffers[i]["actions"]) >= horizon for i in active])
            executed = np.where(use_teacher[:, None], label.action, s_action).astype(np.float32)
            for j, i in enumerate(active):
                b = buffers[i]
                if self._sim_states[i] is not None:
                    b["states"].append(self._sim_states[i]())
                obs[i], reward, term, trunc, info = self.venv.envs[i].step(executed[j])
                b["obs"].append({k: v[j] for k, v in batch.items()})
                b["actions"].append(executed[j])
                b["rewards"].append(reward)
                b["teacher_actions"].append(label.action[j])
                b["teacher_acted"].append(use_teacher[j])
                for name in OPTIONAL_LABELS:
                    value = getattr(label, name)
                    if value is not None:
                        b.setdefault(f"teacher_{name}", []).append(value[j])
                if self.student is not None and s_logp is not None:
                    b["student_actions"].append(s_action[j])
                    b["student_log_probs"].append(s_logp[j])
                if term or trunc:
                    success = info.get("success")  # the episode's success (any step); None: the task reports none
                    episode = self._finish(b, as_dict(obs[i]), success, beta, bool(term))
                    episode["attrs"].update(plan.episode_attrs)
                    steps_done[0] += len(episode["actions"])
                    buffers[i] = None
                    yield slots[i], episode, success is not None
                    start_if_needed(i, None)

    def stream(self, plan: RoundPlan) -> Iterator[tuple[int, dict[str, Any], bool]]:
        return self.episodes(plan)

    def close(self) -> None:
        self.venv.close()

    def _batch(self, obs: list[Any]) -> dict[str, np.ndarray]:
        """Single-env observations as one batch, in the observation space's dtypes (as the vector env batches)."""
        space = self.venv.single_observation_space
        return as_dict(concatenate(space, obs, create_empty_array(space, len(obs))))

    def _episode_start(self, slot: int | None) -> None:
        """Tell a stateful teacher or student (observation history, action queue) that env `slot` (all: None)
        starts a new episode."""
        reset_episode(self.teacher, slot)
        reset_episode(self.student, slot)

    def _new_buffer(self, info: dict[str, Any]) -> dict[str, Any]:
        """An episode's step lists, from its reset `info`."""
        instruction = info.get("instruction")
        return {
            "obs": [],
            "actions": [],
            "rewards": [],
            "teacher_actions": [],
            "teacher_acted": [],
            "student_actions": [],
            "student_log_probs": [],
            "states": [],
            "instruction": "" if instruction is None else str(instruction),
        }

    def _finish(
        self, b: dict[str, Any], final_obs: dict[str, np.ndarray], success: bool | None, beta: float, terminated: bool
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
            "attrs": {
                "success": bool(success),
                "terminated": terminated,
                "beta": beta,
                "instruction": b["instruction"],
            },
        }
        if b["states"]:
            episode["states"] = np.asarray(b["states"])
        if b["student_actions"]:
            episode["student"] = {
                "actions": np.asarray(b["student_actions"], np.float32),
                "log_probs": np.asarray(b["student_log_probs"], np.float32),
            }
        return episode
