"""Camera students with each image encoder: random shift on in training only (an eval-mode student acts
deterministically, its export matches torch), the SB3 learners' refusal of encoders SB3 cannot build, and a tiny
DAgger run of a keypoint camera student taught by the scripted state teacher."""

import json

import numpy as np
import pytest
import torch
from conftest import fresh_run, train_run, user_error

from robodistill.config import compose_config
from robodistill.export.exporter import export_run
from robodistill.learners.components import build
from robodistill.learners.sb3 import check_sb3_run

TASK = {
    "name": "reach",
    "env_id": "robodistill/Reach-v0",
    "kwargs": {"control_mode": "pd_ee_delta_pos", "image_size": 32},
}
CAMERA_STUDENT = {"kind": "gaussian", "obs_keys": ["front_rgb", "wrist_rgb", "proprio"], "hidden": [32], "shift": 4}


@pytest.mark.parametrize("encoder", ["cnn", "keypoints"])
def test_shift_is_on_in_training_and_off_when_acting_and_in_the_export(tmp_path, encoder):
    run = fresh_run(tmp_path / encoder, TASK, {**CAMERA_STUDENT, "encoder": encoder, "image_feature_dim": 16})
    comps = build(
        compose_config(["task=reach", "student=cnn", f"student.encoder={encoder}", "task.kwargs.image_size=32"])
    )
    student, env = comps.student, comps.env
    obs, _ = env.reset(seed=0)
    batch = {k: np.repeat(obs[k][None], 8, 0) for k in student.obs_keys}
    # eval mode (as built, evaluated and exported): the same observation gives the same action every time
    first, _ = student.act(batch)
    assert np.array_equal(first, student.act(batch)[0]) and np.allclose(first, first[:1])
    # training mode: each image of the batch is shifted on its own, so identical observations get other features
    student.train()
    torch.manual_seed(0)
    with torch.no_grad():
        features = student.encoder({k: torch.as_tensor(v) for k, v in batch.items()})
    assert not torch.allclose(features[0], features[1:])
    student.eval()
    # exported with shift=4: torch's eval-mode actions and onnxruntime's agree
    export_run(run, samples=40, progress=False)
    report = json.loads((run / "export_onnx/parity.json").read_text())
    assert report["passed"] and report["max_abs_diff"] <= 1e-4, report


def test_sb3_learners_refuse_an_encoder_sb3_cannot_build():
    check_sb3_run(compose_config(["algo=ppo", "student=cnn"]))
    for algo in ("ppo", "sac", "rpd"):
        with user_error(f"algo={algo} trains SB3's own CNN", "student.encoder=keypoints", "use student.encoder=cnn"):
            check_sb3_run(compose_config([f"algo={algo}", "student=cnn", "student.encoder=keypoints"]))


def test_a_too_small_image_for_the_encoder_is_one_error_naming_the_size():
    with user_error("the keypoints image encoder takes images of at least 5x5", "task.kwargs.image_size=5"):
        build(compose_config(["task=reach", "student=cnn", "student.encoder=keypoints", "task.kwargs.image_size=4"]))


def test_dagger_trains_a_keypoint_camera_student_from_a_state_teacher(tmp_path):
    summary = train_run(
        "task=reach",
        "algo=dagger",
        "student=cnn",
        "student.encoder=keypoints",
        "student.hidden=[64]",
        "task.kwargs.image_size=48",
        "algo.rounds=2",
        "algo.episodes_per_round=2",
        "algo.updates_per_round=20",
        "algo.batch_size=32",
        "algo.beta.horizon=2",
        "collector.num_envs=2",
        "eval.episodes=2",
        "eval.num_envs=2",
        "eval.videos=0",
        run=tmp_path / "run",
    )
    assert isinstance(summary["success_rate"], float) and 0.0 <= summary["success_rate"] <= 1.0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)
    config = ckpt["policy_config"]
    assert config["encoder"] == "keypoints" and config["shift"] == 4
    assert config["obs_keys"] == ["front_rgb", "wrist_rgb", "proprio"]
    assert config["shape_meta"]["obs"]["front_rgb"]["shape"] == [48, 48, 3]
