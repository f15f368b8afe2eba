"""The horizon curriculum (TCOD, `collector.student_horizon`): the student drives the first H steps of each episode
and the teacher the rest, with H growing over rounds on a schedule."""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from conftest import train_run, user_error

import envs
from policies import GaussianPolicy
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter
from robodistill.learners.schedules import StudentHorizon
from robodistill.tasks import env_fns, env_meta, shape_meta
from robodistill.teachers import CallableTeacher

TASK = {"env_id": "robodistill/Reach-v0"}


def test_the_schedule_grows_the_horizon_from_start_to_end_over_the_rounds():
    assert StudentHorizon()(3, 5, 50) is None  # off: the student drives whole episodes
    assert [StudentHorizon("constant", 7)(r, 5, 50) for r in range(5)] == [7] * 5
    assert [StudentHorizon("linear", 10, 50)(r, 5, None) for r in range(5)] == [10, 20, 30, 40, 50]
    assert [StudentHorizon("exponential", 10, 40)(r, 3, None) for r in range(3)] == [10, 20, 40]
    assert StudentHorizon("linear", 10)(1, 2, 60) == 60  # end null: the episode limit
    with pytest.raises(ValueError, match="kind must be one of off, constant, linear, exponential"):
        StudentHorizon("cosine")
    with pytest.raises(ValueError, match="start must be a whole number of steps >= 1, got 0"):
        StudentHorizon("linear", 0)
    with pytest.raises(ValueError, match="set collector.student_horizon.end"):
        StudentHorizon("linear", 10)(0, 3, None)


def test_past_the_horizon_the_teacher_drives(tmp_path):
    env = gym.make(TASK["env_id"])
    expert = envs.make_expert(env)
    torch.manual_seed(0)
    student = GaussianPolicy(shape_meta(env), ["state"], hidden=[32])
    venv = make_vector_env(env_fns(TASK, 3))
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        Collector(venv, CallableTeacher(expert, ["state"]), student, w, seed=0).collect(
            4, beta=0.0, seed=1, progress=False, student_horizon=5
        )
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        episodes = [{p: f["data"][k][p][()] for p in ("actions", "obs/state", "teacher/acted")} for k in f["data"]]
    assert len(episodes) == 4
    for ep in episodes:
        assert len(ep["actions"]) > 5
        assert not ep["teacher/acted"][:5].any() and ep["teacher/acted"][5:].all()
        np.testing.assert_allclose(ep["actions"][:5], student.act({"state": ep["obs/state"][:5]})[0], atol=1e-5)
        np.testing.assert_allclose(ep["actions"][5:], expert(ep["obs/state"][5:]), atol=1e-5)


def test_a_curriculum_run_logs_each_rounds_horizon_and_a_bad_schedule_is_one_error(tmp_path):
    common = [
        "task=reach",
        "algo=dagger",
        "algo.rounds=3",
        "algo.episodes_per_round=2",
        "algo.updates_per_round=5",
        "algo.beta.kind=constant",
        "algo.beta.start=0.0",
        "student.hidden=[16]",
        "collector.num_envs=2",
        "eval.episodes=2",
        "eval.num_envs=2",
        "eval.videos=0",
    ]
    curriculum = ["collector.student_horizon.kind=linear", "collector.student_horizon.start=4"]
    train_run(*common, *curriculum, "collector.student_horizon.end=12", run=tmp_path / "run")
    rounds = [m for m in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines()) if "round" in m]
    assert [m["student_horizon"] for m in rounds] == [4, 8, 12]
    assert all(0 < m["collect/teacher_acted_fraction"] < 1 for m in rounds)  # the student's prefix, then the teacher
    with user_error("collector.student_horizon: end must be a whole number of steps >= 1, got 0"):
        train_run(*common, *curriculum, "collector.student_horizon.end=0", run=tmp_path / "bad")
