"""robomimic-layout HDF5: robomimic's own SequenceDataset reads it; a crash keeps finished episodes; bad files fail clearly."""

import os
import signal
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import envs
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import DatasetError, EpisodeWriter, dataset_summary, iter_demos
from robodistill.tasks import env_fns, env_meta
from robodistill.teachers import CallableTeacher

TASK = {"env_id": "robodistill/Reach-v0", "kwargs": {"image_size": 32}}


def _collect(path, episodes, obs_mode="state"):
    env = gym.make(TASK["env_id"], obs_mode=obs_mode, image_size=32)
    teacher = CallableTeacher(envs.make_expert(env), ["state"])
    venv = make_vector_env(env_fns(TASK, 2, obs_mode))
    with EpisodeWriter(path, env_meta(env, TASK, obs_mode)) as w:
        return Collector(venv, teacher, None, w).collect(episodes, beta=1.0, seed=0, progress=False)


def test_robomimic_sequence_dataset_reads_collector_output(tmp_path):
    """Each camera is its own rgb modality (obs/front_rgb, obs/wrist_rgb) for robomimic."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path = tmp_path / "demos.hdf5"
    stats = _collect(path, 4, obs_mode="state+rgb")
    cameras = ["front_rgb", "wrist_rgb"]
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["state", "proprio"], "rgb": cameras}})
    ds = SequenceDataset(
        hdf5_path=str(path),
        obs_keys=("state", "proprio", *cameras),
        dataset_keys=("actions", "rewards", "dones"),
        seq_length=4,
        load_next_obs=True,
        hdf5_cache_mode=None,
        filter_by_attribute="train",
    )
    assert ds.total_num_sequences > 0
    item = ds[0]
    assert item["actions"].shape == (4, 4)
    assert item["obs"]["state"].shape[0] == 4
    first = next(iter_demos(path, ["actions", *(f"obs/{k}" for k in cameras)]))
    for k in cameras:  # each camera's frames as stored (robomimic processes rgb later, in its training loop)
        np.testing.assert_array_equal(item["obs"][k], first[f"obs/{k}"][:4])
        assert item["obs"][k].shape == (4, 32, 32, 3)
    assert not np.array_equal(item["obs"]["front_rgb"], item["obs"]["wrist_rgb"])
    np.testing.assert_allclose(item["actions"], first["actions"][:4])
    assert dataset_summary(path)["samples"] == stats.steps


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time, gymnasium as gym, envs
    from robodistill.data.collector import Collector, make_vector_env
    from robodistill.data.dataset import BackgroundEpisodeWriter, EpisodeWriter
    from robodistill.tasks import env_fns, env_meta
    from robodistill.teachers import CallableTeacher
    task = {"env_id": "robodistill/Reach-v0"}
    env = gym.make(task["env_id"])
    slow = envs.make_expert(env)
    def teacher(s):
        time.sleep(0.01)  # slow enough that the kill lands mid-collection
        return slow(s)
    if __name__ == "__main__":
        Writer = BackgroundEpisodeWriter if sys.argv[2] == "background" else EpisodeWriter
        w = Writer(sys.argv[1], env_meta(env, task, "state"))
        c = Collector(make_vector_env(env_fns(task, 2)), CallableTeacher(teacher), None, w)
        c.collect(10_000, beta=1.0, seed=0, progress=False, on_episode=lambda e: print("episode", flush=True))
    """
)


@pytest.mark.parametrize("writer", ["inline", "background"])
def test_killed_collector_keeps_finished_episodes(tmp_path, writer):
    path = tmp_path / "crash.hdf5"
    script = tmp_path / "collect.py"
    script.write_text(WRITER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(path), writer], stdout=subprocess.PIPE, text=True)
    written = 0
    for line in proc.stdout:  # ends early only if the collector dies by itself
        written += line.startswith("episode")
        if written == 5:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert written == 5
    # a background writer drains what it was sent, then exits; until then it holds HDF5's lock on the file, and
    # reading waits for it
    summary = dataset_summary(path)  # still a readable file
    assert summary["demos"] >= 5
    assert sum(len(d["actions"]) for d in iter_demos(path, ["actions"])) == summary["samples"]


def test_missing_and_corrupt_dataset_files_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_summary(tmp_path / "nope.hdf5")
    bad = tmp_path / "corrupt.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2048))
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        dataset_summary(bad)
    good = tmp_path / "good.hdf5"
    _collect(good, 2)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError):
        list(iter_demos(truncated, ["actions"]))
