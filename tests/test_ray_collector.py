"""collector.backend=ray on a real local Ray: the same episodes as sync, one batching teacher for several runners,
a killed runner that loses nothing finished, a whole DAgger run, and one error line where Ray is missing."""

import os
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from conftest import train_run, user_error

import envs
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter
from robodistill.tasks import env_fns, env_meta
from robodistill.teachers import CallableTeacher

ray = pytest.importorskip("ray")
from robodistill.data.ray_collector import RayCollector, start_ray  # noqa: E402

TASK = {"env_id": "robodistill/PushCube-v0"}


class ExpertStudent:
    """A deterministic student whose every row depends on that row alone (so a batch of 2 acts as one of 4): half
    the scripted expert's action plus a bias, unlike the teacher's."""

    obs_keys = ["state"]

    def __init__(self):
        self.expert = None

    def act(self, obs: dict, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if self.expert is None:
            self.expert = envs.make_expert(gym.make(TASK["env_id"]))
        action = np.clip(0.5 * self.expert(obs["state"]) + 0.1, -1, 1).astype(np.float32)
        return action, np.zeros(len(action), np.float32)

    def __getstate__(self) -> dict:
        return {"expert": None}  # rebuilt where it acts


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of modules that this process and Ray's workers import (on PYTHONPATH before Ray starts)."""
    return tmp_path_factory.mktemp("ray_modules")


@pytest.fixture(scope="module")
def local_ray(modules):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", f"{modules}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # Ray's workers inherit it
        mp.syspath_prepend(str(modules))
        start_ray(num_cpus=2)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
        yield ray
        ray.shutdown()  # its processes would otherwise idle beside the rest of the suite


def episodes_in(path) -> list[tuple]:
    """Every episode's observations, actions, labels and coins, in a canonical order."""
    with h5py.File(path, "r") as f:
        eps = [
            tuple(
                f["data"][k][name][()].tobytes()
                for name in ("obs/state", "actions", "teacher/actions", "teacher/acted")
            )
            for k in f["data"]
        ]
    return sorted(eps)


def test_ray_writes_the_same_episodes_as_sync(local_ray, tmp_path):
    env = gym.make(TASK["env_id"])
    meta = env_meta(env, TASK, "state")
    with EpisodeWriter(tmp_path / "sync.hdf5", meta) as w:
        teacher = CallableTeacher(envs.make_expert(env), ["state"])
        sync = Collector(make_vector_env(env_fns(TASK, 4)), teacher, ExpertStudent(), w, seed=5)
        s_stats = sync.collect(7, beta=0.5, seed=11, progress=False)
    ray_c = RayCollector(TASK, "state", {"kind": "scripted"}, ["state"], ExpertStudent(), 4, 2, seed=5)
    try:
        with EpisodeWriter(tmp_path / "ray.hdf5", meta) as w:
            ray_c.writer = w
            r_stats = ray_c.collect(7, beta=0.5, seed=11, progress=False)
        calls = ray_c.teacher_stats()
    finally:
        ray_c.close()
    assert episodes_in(tmp_path / "ray.hdf5") == episodes_in(tmp_path / "sync.hdf5")
    assert (r_stats.episodes, r_stats.steps, r_stats.successes) == (s_stats.episodes, s_stats.steps, s_stats.successes)
    assert 0 < r_stats.teacher_acted < r_stats.steps  # beta 0.5: both drove
    # one teacher for both runners: requests answered in fewer calls, more rows per call than one runner's 2 envs
    assert calls["rows"] == r_stats.steps and calls["requests"] > calls["calls"]
    assert calls["rows"] / calls["calls"] > 2


def test_a_killed_runner_is_replaced_and_nothing_finished_is_lost(local_ray, tmp_path):
    env = gym.make(TASK["env_id"])
    collector = RayCollector(TASK, "state", {"kind": "scripted"}, ["state"], ExpertStudent(), 4, 2, seed=0)
    seen = []

    def kill_after_the_first(episode: dict) -> None:
        seen.append(episode)
        if len(seen) == 1:
            ray.kill(collector.runners[1])  # mid-round: its running episodes are lost, its finished ones kept

    try:
        with EpisodeWriter(tmp_path / "d.hdf5", env_meta(env, TASK, "state")) as w:
            collector.writer = w
            stats = collector.collect(10, beta=0.5, seed=3, on_episode=kill_after_the_first, progress=False)
        assert collector.replaced == 1
    finally:
        collector.close()
    with h5py.File(tmp_path / "d.hdf5", "r") as f:
        assert len(f["data"]) == stats.episodes == len(seen) == 10  # the round completes with all its episodes
        assert sum(int(f["data"][k].attrs["num_samples"]) for k in f["data"]) == stats.steps


def test_a_killed_teacher_actor_is_restarted_and_the_round_completes(local_ray, tmp_path):
    collector = RayCollector(TASK, "state", {"kind": "scripted"}, ["state"], ExpertStudent(), 4, 2, seed=0)

    def kill_the_teacher(episode: dict) -> None:
        if kill_the_teacher.first:
            kill_the_teacher.first = False
            ray.kill(collector.teachers[0], no_restart=False)  # Ray restarts it; the waiting requests are retried

    kill_the_teacher.first = True
    try:
        stats = collector.collect(6, beta=0.5, seed=3, on_episode=kill_the_teacher, progress=False)
    finally:
        collector.close()
    assert stats.episodes == 6 and not kill_the_teacher.first


def test_dagger_runs_with_the_ray_backend(local_ray, tmp_path):
    out = train_run(
        "task=pushcube", "algo.rounds=2", "algo.episodes_per_round=4", "algo.updates_per_round=20",
        "collector.backend=ray", "collector.num_envs=4", "collector.runners=2", "eval.episodes=2", "eval.videos=0",
        run=tmp_path / "r",
    )  # fmt: skip
    assert 0.0 <= out["success_rate"] <= 1.0
    with h5py.File(tmp_path / "r" / "data" / "dataset.hdf5", "r") as f:
        rounds = sorted(int(f["data"][k].attrs["round"]) for k in f["data"])
    assert rounds == [0] * 4 + [1] * 4
    assert out["teacher_labels"] > 0


DYING_TEACHER = """
import os

import gymnasium as gym

import envs

_expert = None


def act(states):
    \"\"\"The scripted PushCube expert, which kills its process (a teacher actor, never the test's) once the run's first
    checkpoint exists and the flag file does.\"\"\"
    global _expert
    if os.getpid() != {driver} and os.path.exists({flag!r}) and os.path.exists({checkpoint!r}):
        os._exit(1)
    if _expert is None:
        _expert = envs.make_expert(gym.make("robodistill/PushCube-v0"))
    return _expert(states)
"""


def test_a_teacher_that_keeps_dying_is_one_clear_error_and_resume_continues(local_ray, modules, tmp_path):
    run, flag = tmp_path / "r", tmp_path / "die"
    name = f"dying_teacher_{os.getpid()}"
    source = DYING_TEACHER.format(driver=os.getpid(), flag=str(flag), checkpoint=str(run / "checkpoints" / "last.pt"))
    (modules / f"{name}.py").write_text(source)
    args = (
        "task=pushcube", "algo.rounds=2", "algo.episodes_per_round=4", "algo.updates_per_round=20",
        "collector.backend=ray", "collector.num_envs=4", "collector.runners=2", "eval.episodes=2", "eval.videos=0",
        "teacher=callable", f"teacher.target={name}:act",
    )  # fmt: skip
    flag.touch()  # round 1's teacher dies at its first call, in its restarts too: past Ray's retries, one error
    with user_error("the teacher actor died and stayed dead after 2 restarts", "resume=true continues"):
        train_run(*args, run=run)
    with h5py.File(run / "data" / "dataset.hdf5", "r") as f:
        assert sorted(int(f["data"][k].attrs["round"]) for k in f["data"]) == [0] * 4  # round 0 kept, nothing else
    flag.unlink()
    out = train_run(*args, "resume=true", run=run)  # continues at round 1 from round 0's checkpoint
    with h5py.File(run / "data" / "dataset.hdf5", "r") as f:
        live = [f["data"][k] for k in f["data"] if not f["data"][k].attrs.get("orphaned", False)]
        assert sorted(int(g.attrs["round"]) for g in live) == [0] * 4 + [1] * 4
    assert out["teacher_labels"] > 0


def test_more_runners_than_envs_or_cpus_is_one_clear_error(local_ray):
    with user_error("collector.runners=5 needs 1 <= runners <= collector.num_envs=4"):
        RayCollector(TASK, "state", {"kind": "scripted"}, ["state"], None, 4, 5)
    with user_error("collector.runners=3, but the Ray cluster has", "of 2 CPUs free"):
        RayCollector(TASK, "state", {"kind": "scripted"}, ["state"], None, 4, 3)


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch):
    from robodistill.data.ray_collector import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with user_error("collector.backend=ray needs Ray: pip install 'robodistill[ray]'"):
        import_ray()
