"""Resumed learner runs equal uninterrupted ones, in-process: a rounds learner whose student samples and augments
(a token policy), and an offline learner whose demonstration set a killed run left unfinished.
(tests/test_resume.py SIGKILLs whole DAgger runs at several points.)"""

import h5py
import numpy as np
import pytest
import torch
from conftest import checkpoint_tensors, train_run

from robodistill.data.dataset import dataset_summary, iter_demos
from robodistill.rundir import RunDir

TOKEN_DAGGER = [
    "task=reach",
    "algo=dagger",
    "student=vla",
    "student.d_model=32",
    "student.layers=1",
    "student.bins=32",
    "task.kwargs.image_size=32",
    "collector.student_deterministic=false",
    "algo.episodes_per_round=2",
    "algo.updates_per_round=6",
    "algo.batch_size=16",
    "algo.beta.horizon=2",
    "collector.num_envs=2",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.videos=0",
]
BC = [
    "task=reach",
    "algo=bc",
    "algo.num_demos=4",
    "algo.updates=20",
    "algo.log_every=10",
    "collector.num_envs=2",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.videos=0",
]


def assert_same_last_checkpoint(a, b) -> None:
    """Policy, optimizer, sampler, collector and global RNG states of checkpoints/last.pt agree."""
    x, y = (dict(checkpoint_tensors(RunDir(d).load_checkpoint("last"))) for d in (a, b))
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(y[k].double(), x[k].double(), atol=1e-6, rtol=0, msg=k)


def test_a_token_policy_dagger_run_resumed_after_a_round_equals_the_uninterrupted_run(tmp_path):
    """The sampling student acts after resuming as it did before the checkpoint (eval mode: no training-time image
    shifts), and the checkpointed round's episodes are reloaded from disk in write order."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_run(*TOKEN_DAGGER, "algo.rounds=2", run=ref)
    train_run(*TOKEN_DAGGER, "algo.rounds=1", run=run)
    train_run(*TOKEN_DAGGER, "algo.rounds=2", "resume=true", run=run)
    assert_same_last_checkpoint(ref, run)
    fields = ["actions", "obs/proprio", "teacher/actions", "teacher/acted"]
    a, b = (list(iter_demos(d / "data/dataset.hdf5", fields)) for d in (ref, run))
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        for k in fields:
            np.testing.assert_array_equal(y[k], x[k], err_msg=k)


def test_demos_a_killed_run_left_unfinished_are_collected_again_and_a_checkpointed_set_is_kept(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_run(*BC, run=ref)
    # a run killed mid-collection: part of the demo set on disk (the last demo missing), no checkpoint
    (run / "data").mkdir(parents=True)
    with h5py.File(ref / "data/dataset.hdf5") as src, h5py.File(run / "data/dataset.hdf5", "w") as dst:
        src.copy(src["data"], dst, "data")
        del dst["data/demo_3"]
    train_run(*BC, "resume=true", run=run)
    assert dataset_summary(run / "data/dataset.hdf5") == dataset_summary(ref / "data/dataset.hdf5")
    assert_same_last_checkpoint(ref, run)

    # resumed from its checkpoint, the run trains on: its demo set is read as it is, not collected again
    before = (run / "data/dataset.hdf5").stat().st_mtime_ns
    train_run(*BC, "algo.updates=30", "resume=true", run=run)
    assert (run / "data/dataset.hdf5").stat().st_mtime_ns == before
    assert RunDir(run).load_checkpoint("last")["update"] == 30
    assert [m["update"] for m in RunDir(run).metrics() if "update" in m] == [10, 20, 30]
    assert len([m for m in RunDir(run).metrics() if "demos/episodes" in m]) == 1
    with pytest.raises(AssertionError):  # the comparison above can fail: another run's weights differ
        assert_same_last_checkpoint(ref, run)
