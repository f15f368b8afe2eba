"""Training runs at a tiny budget, composed as scripts/train.py composes them: run directory contents, generic
Gymnasium tasks, pixel students, re-evaluation. Runs killed and resumed: test_resume.py."""

import json

import h5py
import numpy as np
import torch
from conftest import train_run

from robodistill.evaluation.rerun import evaluate_run
from robodistill.rundir import RunDir

TINY = (
    "algo.updates_per_round=10",
    "algo.episodes_per_round=4",
    "eval.episodes=3",
    "eval.num_envs=3",
    "collector.num_envs=2",
)


def test_dagger_run_writes_checkpoint_eval_metrics_and_video(tmp_path):
    run = tmp_path / "run"
    summary = train_run("task=reach", "algo.rounds=2", *TINY, "eval.videos=1", run=run)
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)  # state_dicts only, no pickled objects
    assert ckpt["round"] == 1 and "policy" in ckpt and "optimizer" in ckpt
    result = json.loads((run / "eval.json").read_text())
    successes = [e["success"] for e in result["per_episode"]]
    assert [e["episode"] for e in result["per_episode"]] == [0, 1, 2]
    assert all(e["length"] > 0 for e in result["per_episode"])
    assert result["success_rate"] == np.mean(successes) == summary["success_rate"]
    videos = list((run / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines if "round" in x] == [0, 1]
    assert any(f.name.startswith("events.out.tfevents") for f in (run / "tb").iterdir())
    assert "algo:" in (run / "config.yaml").read_text()
    # re-evaluated and filmed as scripts/evaluate.py <run> --episodes 2 --videos 1 does (the script itself, with a
    # sampler override: test_diffusion_cli.py)
    printed = evaluate_run(RunDir(run).config(), run, episodes=2, videos=1)
    again = json.loads((run / "eval_best.json").read_text())
    assert printed["episodes"] == 2 and printed["per_episode"] == again["per_episode"]
    assert len(again["per_episode"]) == 2 and list((run / "videos/eval_best").glob("*.mp4"))


TEACHER_MODULE = '''
import numpy as np

def pusher_teacher(obs):
    """Drive the Pusher's joints toward zero: a simple callable teacher for a generic Gymnasium task."""
    obs = np.atleast_2d(obs)
    return np.clip(-2.0 * obs[:, :7], -2.0, 2.0).astype(np.float32)
'''


def test_generic_gymnasium_task_with_callable_teacher(user_module, tmp_path):
    user_module("my_teachers", TEACHER_MODULE)
    run = tmp_path / "run"
    train_run(
        "task=gym",
        "task.env_id=Pusher-v5",
        "teacher=callable",
        "teacher.target=my_teachers:pusher_teacher",
        "algo.rounds=1",
        *TINY,
        "eval.videos=0",
        run=run,
    )
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["round"] == 0
    with h5py.File(run / "data/dataset.hdf5", "r") as f:
        demo = f["data/demo_0"]
        assert demo["obs/state"].shape[1] == 23 and demo["actions"].shape[1] == 7
        # every stored state carries the callable teacher's label for it
        expected = np.clip(-2.0 * demo["obs/state"][:, :7], -2.0, 2.0)
        np.testing.assert_allclose(demo["teacher/actions"][()], expected, atol=1e-6)


def test_pixel_student_with_state_teacher_bc(tmp_path):
    run = tmp_path / "run"
    train_run(
        "task=reach",
        "algo=bc",
        "student=cnn",
        "task.kwargs.image_size=32",
        "algo.num_demos=4",
        "algo.updates=20",
        "algo.log_every=10",
        "eval.episodes=2",
        "eval.videos=0",
        "collector.num_envs=2",
        run=run,
    )
    with h5py.File(run / "data/dataset.hdf5", "r") as f:
        g = f["data/demo_0"]
        for key in ("obs/front_rgb", "obs/wrist_rgb"):
            assert g[key].shape[1:] == (32, 32, 3) and "state" in g["obs"]
            assert g[key][()].std() > 5  # rendered frames, not a blank buffer
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["policy_config"]["obs_keys"] == ["front_rgb", "wrist_rgb", "proprio"]
