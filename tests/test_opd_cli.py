"""algo=sft and algo=opd end to end from the command line: a multi-task token policy trained on scripted demos,
served as a teacher in-process and over the websocket protocol, on-policy distillation with each loss, resume,
a remote teacher that goes down mid-run, and one clear error for each bad input."""

import json
import math
import tempfile
import threading
import time

import h5py
import pytest
import torch
from conftest import one_clear_error, run_script
from hydra import compose, initialize_config_dir

from robodistill.benchmarks.runs import CONF_DIR
from robodistill.errors import UserError
from robodistill.learners.components import build
from robodistill.learners.opd import OPDLearner
from robodistill.learners.services import Services
from robodistill.rundir import RunDir
from robodistill.runtime.server import PolicyServer
from robodistill.teachers import VLATeacher, load_policy

SMALL = ["student.d_model=32", "student.layers=1", "student.bins=64", "task.kwargs.image_size=32",
         "eval.episodes=2", "eval.num_envs=2", "eval.videos=0", "collector.num_envs=2"]  # fmt: skip
OPD = ["task=reach", "algo=opd", "student=vla", *SMALL, "algo.rounds=2", "algo.episodes_per_round=2",
       "algo.updates_per_round=4", "algo.batch_size=16"]  # fmt: skip


def ok(p):
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def train(*overrides, run):
    return run_script("scripts/train.py", "progress=false", *overrides, f"hydra.run.dir={run}")


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A tiny multi-task token policy trained on scripted demos of Reach and PushCube."""
    run = tmp_path_factory.mktemp("sft") / "run"
    ok(train("task=reach", "algo=sft", "student=vla", *SMALL, "algo.tasks=[robodistill/PushCube-v0]",
             "algo.num_demos=4", "algo.updates=20",
             "algo.log_every=10", "algo.batch_size=16", run=run))  # fmt: skip
    return run


def test_sft_trains_one_token_policy_on_demos_of_several_tasks(sft_run):
    result = json.loads((sft_run / "eval.json").read_text())
    assert set(result["tasks"]) == {"robodistill/Reach-v0", "robodistill/PushCube-v0"}
    for name in ("Reach-v0", "PushCube-v0"):
        with h5py.File(sft_run / "demos" / f"{name}.hdf5") as f:
            demo = f["data/demo_0"]
            assert demo["obs/rgb"].shape[1:] == (32, 32, 3) and demo["obs/instruction"].dtype == "uint8"
            assert bytes(demo["obs/instruction"][0]).rstrip(b"\0").decode() in demo.attrs["instruction"]
    ckpt = torch.load(sft_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["policy_config"]["kind"] == "vla" and "cube" in ckpt["policy_config"]["vocab"]
    assert [m["loss/ce"] for m in metrics(sft_run) if "loss/ce" in m]  # CE on tokenised actions was logged


def test_opd_over_a_remote_teacher_that_goes_down_stops_cleanly_and_resumes(sft_run, tmp_path):
    """Post-training from the SFT student (algo.init) on every round's states (replay=all) with the teacher's logits
    served over the websocket protocol: the student samples its tokens and drives; the server dies after round 0,
    the run stops with one clear error and everything written stays; with the server back, resume completes it."""
    teacher = VLATeacher(load_policy(str(sft_run)))
    meta = {"server": "robodistill", "obs_keys": teacher.obs_keys, "bins": teacher.bins, "batched": True}

    def infer(obs):
        action, logits = teacher.policy.label(obs)
        return {"actions": action, "logits": logits}

    run = tmp_path / "opd"
    server = PolicyServer(infer, meta, port=0).start()
    args = [*OPD, "teacher=remote", f"teacher.uri={server.url}", "teacher.obs_keys=[rgb,proprio,instruction]",
            "teacher.retries=2", "teacher.backoff_s=0.05", f"algo.init={sft_run}", "algo.replay=all"]  # fmt: skip

    def stop_after_first_round():
        while not (run / "checkpoints" / "last.pt").exists():
            time.sleep(0.05)
        server.stop()

    watcher = threading.Thread(target=stop_after_first_round, daemon=True)
    watcher.start()
    p = train(*args, run=run)
    watcher.join(5)
    one_clear_error(p, "remote teacher", server.url, "3 tries")
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["round"] == 0
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        assert len(f["data"]) >= 2  # round 0's episodes are intact

    with PolicyServer(infer, meta, port=server.port):  # the server is back: resume finishes the run
        ok(train(*args, "resume=true", run=run))
    rounds = [m for m in metrics(run) if "opd/entropy" in m]
    assert [m["round"] for m in rounds] == [0, 1]
    assert rounds[1]["dataset_size"] > rounds[0]["dataset_size"]  # replay=all: round 0's states were reloaded
    for m in rounds:
        assert 0.0 < m["opd/entropy"] <= math.log(64) + 1e-4  # per token, 64 bins
        assert m["opd/kl"] >= 0.0 and m["beta"] == 0.0 and "loss/rkl" in m and "collect/success_rate" in m
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        demo = f["data/demo_0"]
        assert demo["teacher/logits"].shape[1:] == (4, 64)
        assert not demo["teacher/acted"][()].any()  # the student drove every step
        assert (demo["student/log_probs"][()] < 0).all()  # sampled tokens, with their log-probabilities
    assert 0.0 <= json.loads((run / "eval.json").read_text())["success_rate"] <= 1.0
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["policy_config"]["vocab"] == load_policy(str(sft_run)).vocab  # the student started as the SFT one


def opd_learner(*overrides, base=OPD):
    """Build an OPD learner in-process from command-line overrides (what scripts/train.py does before fitting)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=["progress=false", *base, *overrides])
    comps = build(cfg)
    try:
        return OPDLearner(cfg, comps, Services(cfg, comps, RunDir(tempfile.mkdtemp())))  # checks before any training
    finally:
        comps.env.close()


def test_bad_opd_inputs_are_refused_before_training(sft_run):
    teacher = ["teacher=vla", f"teacher.path={sft_run}"]
    with pytest.raises(UserError, match="64 bins.*student.bins"):
        opd_learner(*teacher, "student.bins=32")
    with pytest.raises(UserError, match="token logits"):
        opd_learner("teacher=scripted")
    with pytest.raises(UserError, match="token policy"):
        opd_learner(*teacher, "task.kwargs.image_size=32", base=["task=reach", "algo=opd", "student=cnn"])
    with pytest.raises(UserError, match="opd.loss must be one of rkl, fkl, ce"):
        opd_learner(*teacher, "opd.loss=mse")
    with pytest.raises(UserError, match="teacher checkpoint was trained for"):
        opd_learner(*teacher, "task.kwargs.control_mode=pd_ee_delta_pose")
    with pytest.raises(UserError, match="cannot reach the remote teacher.*ws://127.0.0.1:9"):
        opd_learner("teacher=remote", "teacher.uri=ws://127.0.0.1:9", "teacher.retries=1", "teacher.backoff_s=0.01")
