"""A round collects exactly its episodes and keeps every state the teacher labelled; stateful policies are told
which env each batch row comes from."""

import gymnasium as gym
import h5py
import numpy as np

import envs
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter, dataset_summary
from robodistill.tasks import env_fns, env_meta
from robodistill.teachers import CallableTeacher, CountingTeacher, ImperfectTeacher, TeacherOutput

TASK = {"env_id": "robodistill/Reach-v0"}


class Histories:
    """A stateful policy's bookkeeping: each env's observations since its episode began (`reset(slot)`), the
    labelled-state count at each episode start, and the slots of every call."""

    obs_keys = ["state"]

    def __init__(self):
        self.history: dict[int, list[np.ndarray]] = {}
        self.ended: list[np.ndarray] = []
        self.starts: list[int] = []  # states seen before each per-env episode start
        self.calls: list[list[int]] = []
        self.seen = 0

    def reset(self, slot=None):
        for s in list(self.history) if slot is None else [slot]:
            if self.history.get(s):
                self.ended.append(np.stack(self.history[s]))
            self.history.pop(s, None)
        if slot is not None:
            self.starts.append(self.seen)

    def record(self, obs, slots):
        slots = list(range(len(obs["state"]))) if slots is None else list(slots)
        self.calls.append(slots)
        for j, s in enumerate(slots):
            self.history.setdefault(s, []).append(obs["state"][j])
        self.seen += len(slots)

    def episodes(self) -> list[bytes]:
        return sorted(e.tobytes() for e in self.ended + [np.stack(h) for h in self.history.values() if h])


class HistoryTeacher(Histories):
    def __init__(self, expert):
        super().__init__()
        self.expert = expert

    def act(self, obs, slots=None):
        self.record(obs, slots)
        return TeacherOutput(action=self.expert(obs["state"]))


class HistoryStudent(Histories):
    """The expert with noise: episodes of different lengths, so the batch shrinks to envs that are not 0..B-1."""

    def __init__(self, expert):
        super().__init__()
        self.expert, self.rng = expert, np.random.default_rng(0)

    def act(self, obs, deterministic=True, slots=None):
        self.record(obs, slots)
        a = self.expert(obs["state"]) + self.rng.normal(0.0, 0.6, (len(obs["state"]), 4))
        return a.astype(np.float32), np.zeros(len(a), np.float32)


class RowCountingTeacher(CallableTeacher):
    """A plain (stateless) batched teacher that counts the states it labels."""

    def __init__(self, env):
        super().__init__(envs.make_expert(env), ["state"])
        self.rows: list[int] = []

    def act(self, obs):
        self.rows.append(len(obs["state"]))
        return super().act(obs)


def _first_obs(path) -> dict[bytes, int]:
    with h5py.File(path, "r") as f:
        return {f["data"][k]["obs/state"][0].tobytes(): len(f["data"][k]["actions"]) for k in f["data"]}


def test_exactly_the_requested_episodes_every_labelled_state_kept(tmp_path):
    env = gym.make(TASK["env_id"])
    teacher = RowCountingTeacher(env)
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        stats = Collector(make_vector_env(env_fns(TASK, 3)), teacher, None, w).collect(5, 1.0, seed=7, progress=False)
    summary = dataset_summary(tmp_path / "d.hdf5")
    assert summary["demos"] == stats.episodes == 5
    assert sum(teacher.rows) == stats.teacher_calls == stats.steps == summary["samples"]
    assert stats.as_dict()["teacher_calls_per_label"] == 1.0
    # env i's first episode starts from reset(seed=7 + i); its later ones from its own RNG, reproducibly
    firsts = _first_obs(tmp_path / "d.hdf5")
    for i in range(3):
        assert env.reset(seed=7 + i)[0].astype(np.float32).tobytes() in firsts
    with EpisodeWriter(tmp_path / "again.hdf5", env_meta(env, TASK, "state")) as w:
        Collector(make_vector_env(env_fns(TASK, 3)), RowCountingTeacher(env), None, w).collect(
            5, 1.0, 7, progress=False
        )
    assert _first_obs(tmp_path / "again.hdf5") == firsts


def test_fewer_episodes_than_envs_leaves_the_others_idle():
    env = gym.make(TASK["env_id"])
    teacher = RowCountingTeacher(env)
    stats = Collector(make_vector_env(env_fns(TASK, 3)), teacher, None, None).collect(2, 1.0, seed=0, progress=False)
    assert stats.episodes == 2 and max(teacher.rows) == 2 and sum(teacher.rows) == stats.steps


def test_min_steps_keeps_whole_episodes_and_starts_none_it_does_not_need():
    env = gym.make(TASK["env_id"])
    teacher = HistoryTeacher(envs.make_expert(env))
    student = HistoryStudent(envs.make_expert(env))
    lengths = []
    stats = Collector(make_vector_env(env_fns(TASK, 3)), teacher, student, None).collect(
        None, 0.0, seed=0, min_steps=60, on_episode=lambda e: lengths.append(len(e["actions"])), progress=False
    )
    assert stats.steps == sum(lengths) >= 60 and stats.teacher_calls == stats.steps  # nothing labelled is dropped
    # every episode started while the finished and running ones held fewer than 60 steps
    assert len(teacher.starts) == stats.episodes and max(teacher.starts) < 60


def test_stateful_teacher_and_student_are_told_each_rows_env(tmp_path):
    """With the batch down to some of the envs, row j is env active[j]: a teacher (through the imperfect and counting
    wrappers) and a student that keep per-env state see each env's own observations in order."""
    env = gym.make(TASK["env_id"])
    teacher = HistoryTeacher(envs.make_expert(env))
    student = HistoryStudent(envs.make_expert(env))
    wrapped = CountingTeacher(ImperfectTeacher(teacher, wrong_action_rate=0.2, seed=0))
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        stats = Collector(make_vector_env(env_fns(TASK, 3)), wrapped, student, w).collect(
            7, 0.0, seed=3, progress=False
        )
    assert any(slots != list(range(len(slots))) for slots in teacher.calls)  # e.g. envs [0, 2] as rows [0, 1]
    assert student.calls == teacher.calls
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        written = sorted(f["data"][k]["obs/state"][()].tobytes() for k in f["data"])
    assert len(written) == stats.episodes == 7
    assert teacher.episodes() == written == student.episodes()
    assert sum(wrapped.labels.values()) == stats.steps


def test_a_task_without_success_reports_none():
    task = {"env_id": "Pendulum-v1"}
    episodes = []
    teacher = CallableTeacher(lambda s: np.zeros((len(s), 1), np.float32), ["state"])
    stats = Collector(make_vector_env(env_fns(task, 2)), teacher, None, None).collect(
        2, 1.0, seed=0, on_episode=episodes.append, progress=False
    )
    assert stats.success_rate is None and stats.as_dict()["success_rate"] is None
    assert [e["attrs"]["success"] for e in episodes] == [False, False]
