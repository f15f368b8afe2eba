"""A resumed run equals the uninterrupted run: orphaned demos, writer sync, the collector's state, and whole runs
SIGKILLed at several points and resumed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, checkpoint_tensors

import envs
from policies import GaussianPolicy
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import (
    BackgroundEpisodeWriter,
    DatasetError,
    EpisodeWriter,
    dataset_summary,
    iter_demos,
    mark_orphans,
)
from robodistill.data.labels import load_labels
from robodistill.tasks import env_fns, shape_meta
from robodistill.teachers import CallableTeacher, ImperfectTeacher

ENV_ARGS = {"env_name": "test", "type": 4, "env_kwargs": {}}
META = {"obs": {"state": {"shape": [3]}}, "action": {"shape": [2]}}


def _episode(i: int, n: int = 5) -> dict:
    """A small episode whose values say which one it is."""
    obs = {"state": np.full((n, 3), i, np.float32)}
    return {
        "obs": obs,
        "next_obs": obs,
        "actions": np.full((n, 2), i, np.float32),
        "rewards": np.zeros(n, np.float32),
        "dones": np.eye(1, n, n - 1, dtype=np.int64)[0],
        "teacher": {"actions": np.full((n, 2), -i, np.float32)},
        "attrs": {"success": i % 2 == 0},
    }


def _write(path, ids, append=False) -> int:
    with EpisodeWriter(path, ENV_ARGS, append=append) as w:
        for i in ids:
            w.write(_episode(i, n=5 + i))
        return w.sync()


def _masks(path) -> dict[str, list[str]]:
    with h5py.File(path, "r") as f:
        return {k: [x.decode() for x in f["mask"][k][()]] for k in ("train", "valid")}


def _live_ids(path) -> list[int]:
    return [int(d["actions"][0, 0]) for d in iter_demos(path, ["actions"])]


def test_orphans_stay_on_disk_out_of_training_and_new_demos_number_after_them(tmp_path):
    path = tmp_path / "d.hdf5"
    assert _write(path, range(12)) == 12
    assert mark_orphans(path, keep=9) == 3
    assert mark_orphans(path, keep=9) == 0  # already marked
    with h5py.File(path, "r") as f:
        assert len(f["data"]) == 12  # kept on disk
        orphaned = [bool(f["data"][f"demo_{i}"].attrs.get("orphaned", False)) for i in range(12)]
        assert orphaned == [False] * 9 + [True] * 3
        assert f["data"].attrs["total"] == sum(5 + i for i in range(9))
    assert _live_ids(path) == list(range(9))
    summary = dataset_summary(path)
    assert summary == {"demos": 9, "samples": sum(5 + i for i in range(9)), "successes": 5, "orphaned": 3}
    labels = load_labels(path, ["state"], META)
    assert len(labels) == summary["samples"] and set(labels.view("state")[:, 0]) == set(range(9))
    assert _masks(path) == {"train": [f"demo_{i}" for i in range(9)], "valid": []}

    # a resumed run writes on: demo_12, demo_13, ... (never over an orphan); the masks pick by live order
    assert _write(path, [100, 101], append=True) == 14
    with h5py.File(path, "r") as f:
        assert f["data/demo_12/actions"][0, 0] == 100 and f["data/demo_11/actions"][0, 0] == 11
    assert _live_ids(path) == [*range(9), 100, 101]
    assert _masks(path) == {"train": [f"demo_{i}" for i in range(9)] + ["demo_13"], "valid": ["demo_12"]}
    # a second kill and resume: `keep` counts every demo in write order, orphans included
    assert mark_orphans(path, keep=13) == 1
    assert _live_ids(path) == [*range(9), 100]
    assert dataset_summary(path)["orphaned"] == 4


def test_robomimic_reads_only_live_demos_through_the_masks(tmp_path):
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    path = tmp_path / "d.hdf5"
    _write(path, range(6))
    mark_orphans(path, keep=4)
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["state"]}})
    ds = SequenceDataset(
        hdf5_path=str(path),
        obs_keys=("state",),
        dataset_keys=("actions",),
        seq_length=1,
        hdf5_cache_mode=None,
        filter_by_attribute="train",
    )
    assert ds.demos == [f"demo_{i}" for i in range(4)]
    assert ds.total_num_sequences == sum(5 + i for i in range(4))


@pytest.mark.parametrize("broken", ["missing_datasets", "num_samples_disagrees", "no_num_samples"])
def test_a_half_written_last_demo_is_orphaned_without_losing_complete_ones(tmp_path, broken):
    path = tmp_path / "d.hdf5"
    _write(path, range(3))
    with h5py.File(path, "a") as f:  # what a writer killed inside `write` leaves
        g = f["data"].create_group("demo_3")
        g.create_dataset("actions", data=np.zeros((7, 2), np.float32))
        if broken == "missing_datasets":
            g.attrs["num_samples"] = 7
        elif broken == "num_samples_disagrees":
            g.attrs["num_samples"] = 9
            for k in ("obs/state", "next_obs/state", "teacher/actions", "rewards", "dones"):
                g.create_dataset(k, data=np.zeros((7, *([3] if "state" in k else [2] if "act" in k else []))))
    assert mark_orphans(path, keep=3) == 1
    assert _live_ids(path) == [0, 1, 2]
    assert dataset_summary(path) == {"demos": 3, "samples": 18, "successes": 2, "orphaned": 1}
    assert _write(path, [7], append=True) == 5
    assert _live_ids(path) == [0, 1, 2, 7]


def test_a_checkpoint_that_counts_demos_the_file_lacks_is_refused(tmp_path):
    path = tmp_path / "d.hdf5"
    _write(path, range(2))
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/state"]
    with pytest.raises(DatasetError, match="demo_1 is incomplete"):
        mark_orphans(path, keep=2)
    with pytest.raises(DatasetError, match="holds 2 demos but the run's checkpoint counts 5"):
        mark_orphans(path, keep=5)
    with pytest.raises(DatasetError, match="does not exist"):
        mark_orphans(tmp_path / "elsewhere.hdf5", keep=2)


def test_background_writer_sync_puts_every_sent_episode_on_disk(tmp_path):
    path = tmp_path / "d.hdf5"
    w = BackgroundEpisodeWriter(path, ENV_ARGS)
    for i in range(5):
        w.write(_episode(i, n=200))
    assert w.sync() == 5
    os.kill(w.proc.pid, signal.SIGKILL)  # nothing flushes after the sync
    w.proc.join()
    assert _live_ids(path) == list(range(5))
    with pytest.raises(DatasetError, match="stopped"):
        w.sync()
    w.conn.close()
    w.replies.close()
    # appending continues the numbering
    w = BackgroundEpisodeWriter(path, ENV_ARGS, append=True)
    w.write(_episode(9))
    assert w.sync() == 6
    w.close()
    assert _live_ids(path) == [0, 1, 2, 3, 4, 9]


def test_background_writer_holds_the_file_once_constructed_or_says_why_it_could_not(tmp_path):
    path = tmp_path / "d.hdf5"
    with BackgroundEpisodeWriter(path, ENV_ARGS):
        with pytest.raises(BlockingIOError):  # the writer process has it open (and locked) already
            h5py.File(path, "r")
    assert dataset_summary(path)["demos"] == 0
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(DatasetError, match="failed to start"):
        BackgroundEpisodeWriter(path, ENV_ARGS, append=True)


BIG_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from robodistill.data.dataset import EpisodeWriter

    def episode(i, n, keys):
        obs = {f"k{j}": np.full((n, 64), i, np.float32) for j in range(keys)}
        return {"obs": obs, "next_obs": obs, "actions": np.full((n, 2), i, np.float32), "rewards": np.zeros(n),
                "dones": np.zeros(n), "attrs": {"success": i % 2 == 0}}

    with EpisodeWriter(sys.argv[1], {}) as w:
        for i in range(3):
            w.write(episode(i, 5, 1))
        print(w.sync(), flush=True)
        w.write(episode(3, 4000, 200))  # 200 MB
    """
)


def test_a_writer_killed_mid_write_leaves_a_file_mark_orphans_makes_consistent(tmp_path):
    path = tmp_path / "d.hdf5"
    script = tmp_path / "big_writer.py"
    script.write_text(BIG_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "3"
    size = path.stat().st_size
    while path.stat().st_size < size + 20_000_000 and proc.poll() is None:  # the big episode is being written
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    marked = mark_orphans(path, keep=3)
    # HDF5 keeps a write's metadata in memory until the flush, so the half-written demo_3 is usually not on disk at
    # all; if it is, it is orphaned (demos half-written in each way are tested above)
    assert marked in (0, 1)
    assert _live_ids(path) == [0, 1, 2]
    assert dataset_summary(path) == {"demos": 3, "samples": 15, "successes": 2, "orphaned": marked}
    obs = {"k0": np.zeros((5, 64))}
    with EpisodeWriter(path, ENV_ARGS, append=True) as w:
        assert w.write({**_episode(8), "obs": obs, "next_obs": obs}) == 3 + marked  # after any orphan
    assert _live_ids(path) == [0, 1, 2, 8]


def test_collector_state_resumes_coins_teacher_noise_and_student_sampling(tmp_path):
    """Round 1 collected by a fresh collector (new envs, teacher and collector objects) from round 0's state equals
    round 1 collected by the collector that ran round 0."""
    env = gym.make("robodistill/Reach-v0")
    task = {"env_id": "robodistill/Reach-v0"}
    torch.manual_seed(0)
    student = GaussianPolicy(shape_meta(env), ["state"], hidden=[16])

    def collector(seed: int = 3) -> Collector:
        teacher = ImperfectTeacher(CallableTeacher(envs.make_expert(env), ["state"]), noise_std=0.3, seed=seed)
        return Collector(
            make_vector_env(env_fns(task, 2)), teacher, student, None, seed=seed, student_deterministic=False
        )

    def round1(c: Collector) -> list[dict]:
        episodes = []
        c.collect(2, beta=0.5, seed=1000, progress=False, on_episode=episodes.append)
        return episodes

    first = collector()
    first.collect(2, beta=0.5, seed=0, progress=False)
    state, torch_state = first.state_dict(), torch.get_rng_state()
    uninterrupted = round1(first)

    resumed = collector()
    resumed.load_state_dict(state)
    torch.set_rng_state(torch_state)
    again = round1(resumed)
    for a, b in zip(uninterrupted, again, strict=True):
        for key in ("actions", "rewards"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a["obs"]["state"], b["obs"]["state"])
        np.testing.assert_array_equal(a["teacher"]["actions"], b["teacher"]["actions"])
        np.testing.assert_array_equal(a["teacher"]["acted"], b["teacher"]["acted"])

    fresh = collector()  # without the state the coins and the teacher's noise start over: round 1 differs
    torch.set_rng_state(torch_state)
    other = round1(fresh)
    assert not np.array_equal(other[0]["teacher"]["actions"], uninterrupted[0]["teacher"]["actions"])
    with pytest.raises(ValueError, match="teacher RNGs"):
        Collector(fresh.venv, CallableTeacher(envs.make_expert(env), ["state"])).load_state_dict(state)


# ---- whole runs: SIGKILLed mid-collection, mid-fit and mid-write, resumed, equal to the uninterrupted run ----------

RUN = (
    "progress=false",
    "task=reach",
    "algo=dagger",
    "seed=3",
    "algo.rounds=3",
    "algo.episodes_per_round=4",
    "algo.updates_per_round=200",
    "algo.batch_size=64",
    "algo.beta.horizon=2",
    "collector.num_envs=2",
    "collector.student_deterministic=false",
    "teacher.noise_std=0.1",
    "eval.episodes=2",
    "eval.num_envs=2",
    "eval.videos=0",
)
FIELDS = ["actions", "obs/state", "teacher/actions", "teacher/acted"]


def _start(run, *extra: str) -> subprocess.Popen:
    """scripts/train.py in its own process group (a kill of the group takes the episode writer too)."""
    log_path = run.parent / f"{run.name}.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "scripts/train.py", *RUN, f"hydra.run.dir={run}", *extra],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path
    return proc


def _log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text()[-3000:]


def _until(proc: subprocess.Popen, condition, what: str, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + 600  # a safety net against a hung run, not a speed claim
    while not condition():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}:\n{_log(proc)}"
        assert time.monotonic() < deadline, f"no {what} after 600 s"
        time.sleep(poll_s)


def _round(run) -> int:
    """The round of checkpoints/last.pt (-1: none yet)."""
    path = run / "checkpoints/last.pt"
    try:
        return torch.load(path, weights_only=True)["round"]
    except FileNotFoundError:
        return -1


def _demos_on_disk(run) -> int:
    """Demo groups in the dataset as another process writes it (no lock: the writer holds it), -1 if unreadable."""
    try:
        with h5py.File(run / "data/dataset.hdf5", "r", locking=False) as f:
            return len(f["data"])
    except (OSError, KeyError, RuntimeError, ValueError):  # caught between two of the writer's HDF5 updates
        return -1


def _writer_pid(proc: subprocess.Popen) -> int:
    """The run's episode writer: its child process started by multiprocessing's spawn."""
    for children in Path(f"/proc/{proc.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    raise AssertionError(f"no episode writer process under {proc.pid}")


def _bytes_read(pid: int) -> int:
    """What a process has read so far (the writer reads nothing but the episodes sent down its pipe)."""
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return next(int(x.split()[1]) for x in lines if x.startswith("rchar:"))


def _kill(proc: subprocess.Popen, group: bool = False) -> None:
    os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _round_metrics(run) -> dict[int, dict]:
    """Per round, the metrics of the run that finished it (a killed run may have logged it before)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {m["round"]: m for m in lines if "round" in m}


@pytest.mark.parametrize(
    "kills", [("collection",), pytest.param(("collection", "fit", "write"), marks=pytest.mark.slow)], ids="-".join
)
def test_a_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path, kills):
    """Killed mid-collection (the default suite); then, in the slow variant, resumed and killed mid-fit, resumed and
    killed mid-write; resumed to the end each time: the same live episodes, metrics, checkpoint and evaluation."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    reference = _start(ref)  # on the other core meanwhile

    # killed mid-collection: round 0 checkpointed, round 1's first episodes on disk, the rest still running
    p = _start(run)
    _until(p, lambda: _round(run) == 0 and _demos_on_disk(run) > 4, "round 1's first episode")
    _kill(p)
    assert _round(run) == 0
    orphans = dataset_summary(run / "data/dataset.hdf5")["demos"] - 4  # waits for the writer to drain
    assert 1 <= orphans <= 4

    if "fit" in kills:  # resumed, killed mid-fit: round 1 collected again (after the orphans), its update running
        p = _start(run, "resume=true")
        _until(p, lambda: _demos_on_disk(run) == 4 + orphans + 4, "round 1's episodes")
        _kill(p)
        assert _round(run) == 0, "the kill meant for round 1's fit landed after its checkpoint"
        orphans += 4

    if "write" in kills:  # resumed, killed with its episode writer as the writer receives round 2's first episode
        # (writing it takes a few milliseconds: the kill lands in it or just after; a writer killed well inside a
        # write is tested above)
        p = _start(run, "resume=true")
        _until(p, lambda: _round(run) == 1, "round 1's checkpoint")
        writer = _writer_pid(p)
        read = _bytes_read(writer)
        _until(p, lambda: _bytes_read(writer) > read, "round 2's first episode", poll_s=0.0005)
        _kill(p, group=True)

    # resumed to the end
    p = _start(run, "resume=true")
    assert p.wait() == 0, _log(p)
    assert reference.wait() == 0, _log(reference)

    summary, expected = dataset_summary(run / "data/dataset.hdf5"), dataset_summary(ref / "data/dataset.hdf5")
    assert summary["orphaned"] >= orphans and expected["orphaned"] == 0
    assert {**summary, "orphaned": 0} == expected
    # the same episodes trained on
    for a, b in zip(
        iter_demos(ref / "data/dataset.hdf5", FIELDS), iter_demos(run / "data/dataset.hdf5", FIELDS), strict=True
    ):
        for k in FIELDS:
            np.testing.assert_allclose(b[k], a[k], atol=1e-5, err_msg=k)
    got, want = _round_metrics(run), _round_metrics(ref)
    assert sorted(got) == sorted(want) == [0, 1, 2]
    for r in want:
        for k in ("teacher_labels", "dataset_size", "collect/steps", "beta"):
            assert got[r][k] == want[r][k], (r, k)
        for k in (k for k in want[r] if "loss" in k):
            assert got[r][k] == pytest.approx(want[r][k], abs=1e-5), (r, k)
    # the same student, optimizer and RNG streams
    a, b = (dict(checkpoint_tensors(torch.load(d / "checkpoints/last.pt", weights_only=True))) for d in (ref, run))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k].double(), a[k].double(), atol=1e-5, rtol=0, msg=k)
    # the same evaluation
    e_ref, e_run = (json.loads((d / "eval.json").read_text()) for d in (ref, run))
    assert e_run["success_rate"] == e_ref["success_rate"]
    np.testing.assert_allclose(
        [x["return"] for x in e_run["per_episode"]], [x["return"] for x in e_ref["per_episode"]], atol=1e-4
    )
