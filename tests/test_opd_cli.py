"""algo=sft and algo=opd end to end, composed as scripts/train.py composes them: a multi-task token policy trained on
scripted demos, served as a teacher in-process and over the websocket protocol, on-policy distillation with each loss,
resume, a remote teacher that goes down mid-run, and one clear error for each bad input."""

import json
import math
import re
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import train_run, user_error

from robodistill.config import compose_config, to_dict
from robodistill.rundir import RunDir
from robodistill.runtime.server import PolicyServer
from robodistill.tasks import make_env
from robodistill.teachers import CallableTeacher, VLATeacher, load_policy, make_teacher

SMALL = [
    "student.d_model=32",
    "student.layers=1",
    "student.bins=64",
    "task.kwargs.image_size=32",
    "eval.episodes=2",
    "eval.num_envs=2",
    "eval.videos=0",
    "collector.num_envs=2",
]
OPD = [
    "task=reach",
    "algo=opd",
    "student=vla",
    *SMALL,
    "algo.rounds=2",
    "algo.episodes_per_round=2",
    "algo.updates_per_round=4",
    "algo.batch_size=16",
]


def metrics(run):
    return RunDir(run).metrics()


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A tiny multi-task token policy trained on scripted demos of Reach and PushCube."""
    run = tmp_path_factory.mktemp("sft") / "run"
    train_run(
        "task=reach",
        "algo=sft",
        "student=vla",
        *SMALL,
        "algo.tasks=[robodistill/PushCube-v0]",
        "algo.num_demos=4",
        "algo.updates=20",
        "algo.log_every=10",
        "algo.batch_size=16",
        run=run,
    )
    return run


def test_sft_trains_one_token_policy_on_demos_of_several_tasks(sft_run):
    result = json.loads((sft_run / "eval.json").read_text())
    assert set(result["tasks"]) == {"robodistill/Reach-v0", "robodistill/PushCube-v0"}
    for name in ("Reach-v0", "PushCube-v0"):
        with h5py.File(sft_run / "demos" / f"{name}.hdf5") as f:
            demo = f["data/demo_0"]
            assert demo["obs/front_rgb"].shape[1:] == demo["obs/wrist_rgb"].shape[1:] == (32, 32, 3)
            assert demo["obs/instruction"].dtype == "uint8"
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
    args = [
        *OPD,
        "teacher=remote",
        f"teacher.uri={server.url}",
        "teacher.obs_keys=[front_rgb,wrist_rgb,proprio,instruction]",
        "teacher.retries=2",
        "teacher.backoff_s=0.05",
        f"algo.init={sft_run}",
        "algo.replay=all",
    ]

    ended = threading.Event()

    def stop_after_first_round():
        while not (run / "checkpoints" / "last.pt").exists() and not ended.is_set():
            time.sleep(0.05)
        server.stop()

    watcher = threading.Thread(target=stop_after_first_round, daemon=True)
    watcher.start()
    try:
        with user_error("remote teacher", server.url, "3 tries"):
            train_run(*args, run=run)
    finally:
        ended.set()  # a run that failed otherwise: the watcher stops the server all the same
        watcher.join()
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["round"] == 0
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        assert len(f["data"]) >= 2  # round 0's episodes are intact

    with PolicyServer(infer, meta, port=server.port):  # the server is back: resume finishes the run
        train_run(*args, "resume=true", run=run)
    rounds = [m for m in metrics(run) if "opd/entropy" in m]
    assert [m["round"] for m in rounds] == [0, 1]
    assert rounds[1]["dataset_size"] > rounds[0]["dataset_size"]  # replay=all: round 0's states were reloaded
    for m in rounds:
        assert 0.0 < m["opd/entropy"] <= math.log(64) + 1e-4  # per token, 64 bins
        assert m["opd/kl"] >= -1e-6  # a KL, up to float round-off (-4.9e-9 seen with MuJoCo 3.3.0)
        assert m["beta"] == 0.0 and "loss/rkl" in m and "collect/success_rate" in m
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        demo = f["data/demo_0"]
        assert demo["teacher/logits"].shape[1:] == (4, 64)
        assert not demo["teacher/acted"][()].any()  # the student drove every step
        assert (demo["student/log_probs"][()] < 0).all()  # sampled tokens, with their log-probabilities
    result = json.loads((run / "eval.json").read_text())
    assert result["success_rate"] == np.mean([e["success"] for e in result["per_episode"]])
    assert len(result["per_episode"]) == 2
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["policy_config"]["vocab"] == load_policy(str(sft_run)).vocab  # the student started as the SFT one


def test_bad_opd_inputs_are_refused_before_training(sft_run, tmp_path):
    teacher = ["teacher=vla", f"teacher.path={sft_run}"]
    cases = [
        ((*OPD, *teacher, "student.bins=32"), "64 bins.*student.bins"),
        (
            (*OPD, "teacher=router", "teacher.routes=[{task: robodistill/PushCube-v0, teacher: {kind: scripted}}]"),
            r"teacher=router has no teacher for task robodistill/Reach-v0: its routes are for \['robodistill/PushCube-v0'\]",
        ),
        (("task=reach", "algo=opd", "student=cnn", *teacher, "task.kwargs.image_size=32"), "token policy"),
        ((*OPD, *teacher, "opd.loss=mse"), "opd.loss must be one of rkl, fkl, ce"),
        ((*OPD, *teacher, "task.kwargs.control_mode=pd_ee_delta_pose"), "teacher checkpoint was trained for"),
        (
            (*OPD, "teacher=remote", "teacher.uri=ws://127.0.0.1:9", "teacher.retries=1", "teacher.backoff_s=0.01"),
            "cannot reach the remote teacher.*ws://127.0.0.1:9",
        ),
    ]
    for i, (overrides, message) in enumerate(cases):
        run = tmp_path / str(i)
        with user_error() as info:
            train_run(*overrides, run=run)
        assert re.search(message, str(info.value)), str(info.value)
        assert not (run / "checkpoints" / "last.pt").exists()


def test_a_cached_teacher_run_replays_the_live_runs_rounds_without_any_teacher(sft_run, tmp_path):
    """A live OPD run's dataset is the cache (each episode tagged with its round): the cached run builds no teacher
    (the configured one is an unreachable server), trains on each round's cached states, and a live run continues
    from it; a cache of another task, bin count or too few rounds is one error before training."""
    live = tmp_path / "live"
    train_run(*OPD, "teacher=vla", f"teacher.path={sft_run}", f"algo.init={sft_run}", run=live)
    cache = live / "data" / "dataset.hdf5"
    with h5py.File(cache) as f:
        rounds = sorted(int(f["data"][d].attrs["round"]) for d in f["data"])
    assert rounds == [0, 0, 1, 1]  # 2 episodes per round
    down = ["teacher=remote", "teacher.uri=ws://127.0.0.1:9", "teacher.retries=1", "teacher.backoff_s=0.01"]
    cached = tmp_path / "cached"
    summary = train_run(*OPD, *down, f"algo.init={sft_run}", f"algo.teacher_cache={cache}", run=cached)
    assert 0.0 <= summary["success_rate"] <= 1.0
    done = [m for m in metrics(cached) if "opd/entropy" in m]
    live_rounds = [m for m in metrics(live) if "opd/entropy" in m]
    assert [m["round"] for m in done] == [0, 1]
    assert all(m["collect/teacher_calls"] == 0 for m in done)  # no teacher was asked
    # each round trained on exactly the live round's states, and the same number of labels in all
    assert [m["cache/states"] for m in done] == [m["collect/steps"] for m in live_rounds]
    assert done[-1]["teacher_labels"] == live_rounds[-1]["teacher_labels"]
    assert not (cached / "data" / "dataset.hdf5").exists()  # nothing collected
    # live OPD continues from the cached start
    train_run(
        *OPD, "teacher=vla", f"teacher.path={sft_run}", f"algo.init={cached}", "algo.rounds=1", run=tmp_path / "on"
    )
    cases = [
        (("algo.rounds=3",), r"holds the states of rounds \[0, 1\], but algo.rounds=3 .*missing \[2\]"),
        (("student.bins=32",), "logits of 4 action dimensions x 64 bins, the student has 4 x 32"),
        (("task=pushcube",), "was recorded on robodistill/Reach-v0, this run's task is robodistill/PushCube-v0"),
    ]
    for i, (overrides, message) in enumerate(cases):
        with user_error() as info:
            train_run(*OPD, *down, f"algo.teacher_cache={cache}", *overrides, run=tmp_path / f"bad{i}")
        assert re.search(message, str(info.value)), str(info.value)
    with user_error("teacher cache", "holds no teacher logits"):
        train_run(*OPD, *down, f"algo.teacher_cache={sft_run / 'demos' / 'Reach-v0.hdf5'}", run=tmp_path / "bad")


def test_specialists_merge_into_one_multi_task_student_each_task_labelled_by_its_own_teacher(sft_run, tmp_path):
    """teacher=router: Reach labelled by the token teacher (logits), PushCube by the scripted expert (no logits:
    soft targets around its actions); one student distilled on its own rollouts of both, evaluated on both."""
    routes = (
        f"teacher.routes=[{{task: robodistill/Reach-v0, teacher: {{kind: vla, path: {sft_run}}}}}, "
        "{task: robodistill/PushCube-v0, teacher: {kind: scripted}}]"
    )
    reach, push = (make_env({"env_id": f"robodistill/{t}-v0"}, "state") for t in ("Reach", "PushCube"))
    cfg = to_dict(compose_config(["teacher=router", routes]).teacher)
    assert isinstance(make_teacher(cfg, push), CallableTeacher)  # each env gets its own task's teacher
    with user_error("teacher=router has no teacher for task robodistill/PickCube-v0"):
        make_teacher(cfg, make_env({"env_id": "robodistill/PickCube-v0"}, "state"))
    reach.close()
    push.close()
    run = tmp_path / "merged"
    args = [*OPD, "teacher=router", routes, f"algo.init={sft_run}", "algo.tasks=[robodistill/PushCube-v0]"]
    train_run(*args, run=run)
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        episodes = [f["data"][d] for d in f["data"]]
        by_task = {
            t: [e for e in episodes if e.attrs["task"] == t]
            for t in ("robodistill/Reach-v0", "robodistill/PushCube-v0")
        }
        assert [len(v) for v in by_task.values()] == [4, 4]  # 2 episodes of each task per round, 2 rounds
        assert all("teacher/logits" in e for e in by_task["robodistill/Reach-v0"])  # the token teacher's logits
        assert not any("teacher/logits" in e for e in by_task["robodistill/PushCube-v0"])  # the scripted expert's
        assert all(e["obs/front_rgb"].shape[1:] == (32, 32, 3) for e in episodes)
    rounds = [m for m in metrics(run) if "opd/entropy" in m]
    assert [m["round"] for m in rounds] == [0, 1]
    assert all("collect/PushCube-v0/success_rate" in m and m["collect/teacher_calls_per_label"] == 1.0 for m in rounds)
    result = json.loads((run / "eval.json").read_text())
    assert set(result["tasks"]) == {"robodistill/Reach-v0", "robodistill/PushCube-v0"}
