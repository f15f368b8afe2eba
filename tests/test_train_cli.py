"""scripts/train.py at a tiny budget: run directory contents, resume after a kill, generic Gymnasium tasks."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import torch
from conftest import ROOT, run_script

from robodistill.data.dataset import dataset_summary

TINY = ("algo.updates_per_round=50", "algo.episodes_per_round=4", "eval.episodes=3", "eval.num_envs=3",
        "collector.num_envs=2")  # fmt: skip


def test_dagger_run_writes_checkpoint_eval_metrics_and_video(train_cli, tmp_path):
    run = tmp_path / "run"
    p = train_cli("task=reach", "algo.rounds=2", *TINY, "eval.videos=1", f"hydra.run.dir={run}")
    assert p.returncode == 0, p.stderr[-2000:]
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)  # state_dicts only, no pickled objects
    assert ckpt["round"] == 1 and "policy" in ckpt and "optimizer" in ckpt
    result = json.loads((run / "eval.json").read_text())
    assert 0.0 <= result["success_rate"] <= 1.0 and len(result["per_episode"]) == 3
    videos = list((run / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines if "round" in x] == [0, 1]
    assert any(f.name.startswith("events.out.tfevents") for f in (run / "tb").iterdir())
    assert (run / "config.yaml").exists()
    # scripts/evaluate.py re-evaluates and films the finished run
    p = run_script("scripts/evaluate.py", str(run), "--episodes", "2", "--videos", "1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["episodes"] == 2
    assert list((run / "videos/eval_best").glob("*.mp4"))


def test_resume_continues_a_killed_run(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "scripts/train.py", "progress=false", "task=reach", *TINY, f"hydra.run.dir={run}"]
    proc = subprocess.Popen([*args, "algo.rounds=50"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_round = torch.load(run / "checkpoints/last.pt", weights_only=True)["round"]
    demos_before = dataset_summary(run / "data/dataset.hdf5")["demos"]  # waits for the killed run's writer to finish
    p = subprocess.run([*args, f"algo.rounds={done_round + 2}", "resume=true"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rounds = [json.loads(x).get("round") for x in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rounds if r is not None]
    # the resumed run picks up after the checkpointed round instead of starting over
    assert rounds[-1] == done_round + 1 and rounds.count(0) == 1
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["round"] == done_round + 1
    with h5py.File(run / "data/dataset.hdf5", "r") as f:
        assert len(f["data"]) >= demos_before + 4  # nothing already written is lost
    assert (run / "eval.json").exists()


TEACHER_MODULE = '''
import numpy as np

def pusher_teacher(obs):
    """Drive the Pusher's joints toward zero: a simple callable teacher for a generic Gymnasium task."""
    obs = np.atleast_2d(obs)
    return np.clip(-2.0 * obs[:, :7], -2.0, 2.0).astype(np.float32)
'''


def test_generic_gymnasium_task_with_callable_teacher(train_cli, tmp_path):
    (tmp_path / "my_teachers.py").write_text(TEACHER_MODULE)
    run = tmp_path / "run"
    p = train_cli("task=gym", "task.env_id=Pusher-v5", "teacher=callable", "teacher.target=my_teachers:pusher_teacher",
                  "algo.rounds=1", *TINY, "eval.videos=0", f"hydra.run.dir={run}",
                  env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert (run / "checkpoints/last.pt").exists()
    with h5py.File(run / "data/dataset.hdf5", "r") as f:
        assert f["data/demo_0/obs/state"].shape[1] == 23 and f["data/demo_0/actions"].shape[1] == 7


def test_pixel_student_with_state_teacher_bc(train_cli, tmp_path):
    run = tmp_path / "run"
    p = train_cli("task=reach", "algo=bc", "student=cnn", "task.kwargs.image_size=32", "algo.num_demos=4",
                  "algo.updates=20", "algo.log_every=10", "eval.episodes=2", "eval.videos=0",
                  "collector.num_envs=2", f"hydra.run.dir={run}")  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    with h5py.File(run / "data/dataset.hdf5", "r") as f:
        g = f["data/demo_0"]
        assert g["obs/rgb"].shape[1:] == (32, 32, 3) and "state" in g["obs"]
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["policy_config"]["obs_keys"] == ["rgb", "proprio"]
