"""The collector: batched teacher labels every step, beta-mixing, episodes written as they finish."""

import textwrap

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from conftest import run_script

import envs
from policies import GaussianPolicy
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter, dataset_summary
from robodistill.tasks import env_fns, env_meta, shape_meta
from robodistill.teachers import CallableTeacher, TeacherError

TASK = {"env_id": "robodistill/Reach-v0"}


class CountingTeacher(CallableTeacher):
    def __init__(self, fn):
        super().__init__(fn, ["state"])
        self.calls = 0
        self.batch_sizes = []
        self.keys_seen = set()

    def act(self, obs):
        self.calls += 1
        self.batch_sizes.append(len(obs["state"]))
        self.keys_seen |= set(obs)
        return super().act(obs)


def _setup(num_envs=3, student=True):
    env = gym.make(TASK["env_id"])
    teacher = CountingTeacher(envs.make_expert(env))
    torch.manual_seed(0)
    pol = GaussianPolicy(shape_meta(env), ["state"], hidden=[32]) if student else None
    venv = make_vector_env(env_fns(TASK, num_envs))
    return env, teacher, pol, venv


def _episodes(path):
    with h5py.File(path, "r") as f:
        return {
            k: {p: f["data"][k][p][()] for p in ("actions", "obs/state", "teacher/actions", "teacher/acted")}
            for k in f["data"]
        }, dict(f["data"].attrs)


def test_beta_zero_executes_student_and_stores_teacher_labels(tmp_path):
    env, teacher, pol, venv = _setup()
    expert = envs.make_expert(env)
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        stats = Collector(venv, teacher, pol, w, seed=0).collect(4, beta=0.0, seed=1, progress=False)
    eps, attrs = _episodes(tmp_path / "d.hdf5")
    assert len(eps) == 4 and attrs["total"] == stats.steps
    for ep in eps.values():
        student_action = pol.act({"state": ep["obs/state"]})[0]
        np.testing.assert_allclose(ep["actions"], student_action, atol=1e-5)
        np.testing.assert_allclose(ep["teacher/actions"], expert(ep["obs/state"]), atol=1e-5)
        assert not ep["teacher/acted"].any()
    # one batched teacher call per step for every env whose episode runs: all 3 at first, the last one alone
    assert teacher.batch_sizes[0] == 3 and teacher.batch_sizes[-1] == 1 and max(teacher.batch_sizes) == 3
    assert sum(teacher.batch_sizes) == stats.teacher_calls == stats.env_steps == stats.steps


def test_beta_one_executes_teacher_and_mixture_is_per_env_per_step(tmp_path):
    env, teacher, pol, venv = _setup()
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        Collector(venv, teacher, pol, w, seed=0).collect(3, beta=1.0, seed=1, progress=False)
    for ep in _episodes(tmp_path / "d.hdf5")[0].values():
        np.testing.assert_allclose(ep["actions"], ep["teacher/actions"])
    env, teacher, pol, venv = _setup(num_envs=4)
    with EpisodeWriter(tmp_path / "m.hdf5", env_meta(env, TASK, "state")) as w:
        stats = Collector(venv, teacher, pol, w, seed=0).collect(12, beta=0.5, seed=1, progress=False)
    acted = np.concatenate([ep["teacher/acted"] for ep in _episodes(tmp_path / "m.hdf5")[0].values()])
    assert 0.3 < acted.mean() < 0.7  # a coin per env and step, not per episode
    assert 0.3 < stats.as_dict()["teacher_acted_fraction"] < 0.7


def test_next_obs_and_instruction_are_recorded(tmp_path):
    env, teacher, pol, venv = _setup(num_envs=2)
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
        Collector(venv, teacher, None, w, seed=0).collect(2, beta=1.0, seed=5, progress=False)
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        g = f["data/demo_0"]
        np.testing.assert_array_equal(g["next_obs/state"][:-1], g["obs/state"][1:])
        assert g.attrs["instruction"] in envs.reach.ReachEnv.instruction_templates
        assert g["states"].shape[0] == g.attrs["num_samples"]
        # the first state reproduces the first observation when loaded into a fresh env
        e = gym.make(TASK["env_id"]).unwrapped
        e.reset(seed=0)
        import mujoco

        mujoco.mj_setState(e.model, e.data, g["states"][0], envs.base.SIM_STATE_SPEC)
        mujoco.mj_forward(e.model, e.data)
        np.testing.assert_allclose(e._state_vector(), g["obs/state"][0], atol=1e-5)


def test_teacher_returning_nan_stops_with_clear_error(tmp_path):
    venv = make_vector_env(env_fns(TASK, 2))
    bad = CallableTeacher(lambda s: np.full((len(s), 4), np.nan), ["state"])
    with pytest.raises(TeacherError, match="NaN"):
        Collector(venv, bad, None, None).collect(1, beta=1.0, seed=0, progress=False)


def test_pixel_student_drives_while_a_state_teacher_labels(tmp_path):
    """The collector gives each its own view of one observation: the CNN student acts on its cameras + proprio,
    the teacher labels from the privileged state, and both views are stored."""
    env = gym.make(TASK["env_id"], obs_mode="state+rgb", image_size=32)
    task = {**TASK, "kwargs": {"image_size": 32}}
    teacher = CountingTeacher(envs.make_expert(env))
    torch.manual_seed(0)
    pol = GaussianPolicy(shape_meta(env), ["front_rgb", "wrist_rgb", "proprio"], hidden=[16])
    venv = make_vector_env(env_fns(task, 2, "state+rgb"))
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, task, "state+rgb")) as w:
        Collector(venv, teacher, pol, w, seed=0).collect(2, beta=0.0, seed=1, progress=False)
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        g = f["data/demo_0"]
        front, wrist, state = g["obs/front_rgb"][()], g["obs/wrist_rgb"][()], g["obs/state"][()]
        for rgb in (front, wrist):
            assert rgb.shape[1:] == (32, 32, 3) and rgb.dtype == np.uint8 and rgb.std() > 5  # rendered frames
        assert state.shape[1:] == env.observation_space["state"].shape
        np.testing.assert_allclose(g["teacher/actions"][()], envs.make_expert(env)(state), atol=1e-5)
        student_action = pol.act({"front_rgb": front, "wrist_rgb": wrist, "proprio": g["obs/proprio"][()]})[0]
        np.testing.assert_allclose(g["actions"][()], student_action, atol=1e-5)
        assert not g["teacher/acted"][()].any()
    assert teacher.calls > 0 and teacher.keys_seen == {"state"}  # the teacher sees only its own view


UNGUARDED_SCRIPT = textwrap.dedent(
    """
    import sys, gymnasium as gym, envs
    from robodistill.data.collector import Collector, make_vector_env
    from robodistill.data.dataset import BackgroundEpisodeWriter
    from robodistill.tasks import env_fns, env_meta
    from robodistill.teachers import CallableTeacher
    print("top level runs", flush=True)
    task = {"env_id": "robodistill/Reach-v0"}
    env = gym.make(task["env_id"])
    with BackgroundEpisodeWriter(sys.argv[1], env_meta(env, task, "state")) as writer:
        teacher = CallableTeacher(envs.make_expert(env), ["state"])
        Collector(make_vector_env(env_fns(task, 2)), teacher, None, writer).collect(3, 1.0, seed=0, progress=False)
    """
)


def test_collector_and_background_writer_work_from_a_script_without_a_main_guard(tmp_path):
    """The writer's process does not re-import the user's script (spawn would, re-running its top level there)."""
    script = tmp_path / "collect.py"
    script.write_text(UNGUARDED_SCRIPT)
    p = run_script(str(script), str(tmp_path / "d.hdf5"))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.count("top level runs") == 1
    assert dataset_summary(tmp_path / "d.hdf5")["demos"] == 3
