"""algo=diffusion / student=sdp / algo=consistency end to end, composed as scripts/train.py composes them: train,
evaluate with every sampler (in-process as scripts/evaluate.py does, and once through the script itself), film,
resume, serve as a teacher, and one clear error for each bad input."""

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import run_script, train_run, user_error

from robodistill.config import compose_config
from robodistill.evaluation.rerun import evaluate_run
from robodistill.rundir import RunDir
from robodistill.tasks import make_env
from robodistill.teachers import make_teacher

TINY = [
    "task=pickcube",
    "student.down_dims=[16,32]",
    "student.step_embed_dim=16",
    "eval.episodes=3",
    "eval.num_envs=3",
    "eval.videos=1",
    "collector.num_envs=2",
    "algo.num_demos=6",
    "algo.batch_size=32",
]
TINY_DP = [
    "algo=diffusion",
    "student=diffusion",
    *TINY,
    "algo.updates=30",
    "algo.log_every=15",
    "sampler=ddim",
    "sampler.num_inference_steps=4",
]
PICKCUBE = {"env_id": "robodistill/PickCube-v0", "kwargs": {"control_mode": "pd_ee_delta_pos"}}


def evaluate(run, *sampler, **keys):
    """`scripts/evaluate.py <run> --episodes 2 --videos 0 [sampler=<name> sampler.<key>=<value> ...]` in-process;
    `keys` change single keys of the run's own sampler."""
    cfg = RunDir(run).config()
    if sampler:
        cfg.sampler = compose_config(sampler).sampler
    for k, v in keys.items():
        cfg.sampler[k] = v
    return evaluate_run(cfg, run, episodes=2, videos=0)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """A tiny DP run, trained for 15 updates and then resumed to 30 (as a user continues a stopped run)."""
    run = tmp_path_factory.mktemp("dp") / "run"
    train_run(*TINY_DP, "algo.updates=15", run=run)
    (run / "first_last.pt").write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    train_run(*TINY_DP, "resume=true", run=run)
    return run


def test_diffusion_policy_trains_evaluates_films_and_samples_every_way(dp_run):
    result = json.loads((dp_run / "eval.json").read_text())
    assert result["episodes"] == 3 and result["success_rate"] == np.mean([e["success"] for e in result["per_episode"]])
    assert result["nfe_per_step"] == pytest.approx(4 / 8, abs=0.2)  # DDIM-4 per chunk of 8 executed actions
    assert list((dp_run / "videos").glob("*.mp4"))
    ckpt = torch.load(dp_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["policy_config"]["kind"] == "diffusion" and ckpt["policy_config"]["pred_horizon"] == 16
    last = torch.load(dp_run / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["ema"]["n_averaged"]) == 30  # the EMA copy saw every update
    assert not torch.equal(last["online_policy"]["net.final.1.weight"], last["policy"]["net.final.1.weight"])

    assert evaluate(dp_run, "sampler=ddpm")["nfe_per_step"] == pytest.approx(100 / 8, rel=0.2)
    # scripts/evaluate.py itself, composing a sampler from the command line
    p = run_script(
        "scripts/evaluate.py",
        str(dp_run),
        "--episodes",
        "2",
        "--videos",
        "0",
        "sampler=rti",
        "sampler.timesteps=[3,1,0]",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rti = json.loads(p.stdout)
    assert rti["episodes"] == 2 and 3 <= rti["nfe_per_step"] < 4  # 3 per step, plus a DDIM-10 first plan per episode
    assert json.loads((dp_run / "eval_best.json").read_text())["nfe_per_step"] == rti["nfe_per_step"]
    with user_error("sampler=sdp needs a policy trained with per-position noise levels"):
        evaluate(dp_run, "sampler=sdp")


def test_diffusion_policy_resumes_with_its_ema(dp_run):
    first = torch.load(dp_run / "first_last.pt", weights_only=True)
    last = torch.load(dp_run / "checkpoints" / "last.pt", weights_only=True)
    assert first["update"] == 15 and int(first["ema"]["n_averaged"]) == 15
    assert last["update"] == 30 and int(last["ema"]["n_averaged"]) == 30  # online and EMA weights both continued
    updates = [
        m["update"] for m in map(json.loads, (dp_run / "metrics.jsonl").read_text().splitlines()) if "update" in m
    ]
    assert updates == [15, 30]  # the resumed run appended to the first one's metrics, starting after update 15


def test_diffusion_policy_is_a_teacher_that_labels_chunks(dp_run, tmp_path):
    env = make_env(PICKCUBE, "state")
    teacher = make_teacher(
        {"kind": "diffusion", "path": str(dp_run), "sampler": {"kind": "ddim", "num_inference_steps": 2}}, env
    )
    obs = np.stack([env.reset(seed=i)[0] for i in range(3)])
    out = teacher.act({"state": obs})
    assert out.action.shape == (3, 4) and out.chunk.shape == (3, 16, 4)
    np.testing.assert_array_equal(out.action, out.chunk[:, 1])  # the window starts T_o - 1 = 1 step back
    # on-policy distillation of the diffusion teacher into an MLP student, with the chunks stored
    run = tmp_path / "dagger"
    train_run(
        "algo=dagger",
        "task=pickcube",
        "teacher=diffusion",
        f"teacher.path={dp_run}",
        "teacher.sampler.num_inference_steps=2",
        "algo.rounds=1",
        "algo.episodes_per_round=2",
        "algo.updates_per_round=5",
        "eval.episodes=2",
        "eval.videos=0",
        "collector.num_envs=2",
        run=run,
    )
    with h5py.File(run / "data" / "dataset.hdf5") as f:
        demo = f["data/demo_0"]
        assert demo["teacher/chunk"].shape == (len(demo["actions"]), 16, 4)


def test_streaming_diffusion_policy_trains_and_streams(tmp_path):
    run = tmp_path / "sdp"
    train_run("algo=diffusion", "student=sdp", *TINY, "algo.updates=20", "algo.log_every=20", run=run)
    result = json.loads((run / "eval.json").read_text())
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["policy_config"]["noise_levels"] == "sdp"
    # per episode: one full 100-step pass, then 50 per chunk of 8 executed actions
    assert 50 / 8 <= result["nfe_per_step"] <= 100 / 8 + 1


def test_consistency_head_offline_and_on_policy(dp_run, tmp_path):
    run = tmp_path / "cd"
    train_run(
        "algo=consistency",
        "task=pickcube",
        "teacher=diffusion",
        f"teacher.path={dp_run}",
        "algo.updates=20",
        "algo.log_every=10",
        "algo.batch_size=32",
        "eval.episodes=3",
        "eval.videos=0",
        run=run,
    )
    result = json.loads((run / "eval.json").read_text())
    assert result["nfe_per_step"] == pytest.approx(1 / 8, abs=0.1)  # one evaluation per chunk of 8 actions
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["policy_config"]["kind"] == "consistency" and ckpt["policy_config"]["t_max"] == 90
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/consistency" in m and "loss/denoising" in m for m in metrics)
    assert not (run / "data").exists()  # offline: the teacher run's demonstrations were reused
    assert evaluate(run, num_steps=2)["nfe_per_step"] == pytest.approx(2 / 8, abs=0.15)
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    train_run(
        "algo=consistency",
        "task=pickcube",
        "teacher=diffusion",
        f"teacher.path={dp_run}",
        "resume=true",
        "algo.updates=30",
        "algo.log_every=10",
        "algo.batch_size=32",
        "eval.episodes=1",
        "eval.videos=0",
        run=run,
    )
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert before["update"] == 20 and after["update"] == 30  # resumed, with the EMA target restored and moved on
    assert not torch.equal(before["target"]["net.final.1.weight"], after["target"]["net.final.1.weight"])

    on = tmp_path / "cd_on"
    train_run(
        "algo=consistency",
        "task=pickcube",
        "teacher=diffusion",
        f"teacher.path={dp_run}",
        "teacher.sampler.num_inference_steps=2",
        "algo.on_policy=true",
        "algo.rounds=1",
        "algo.episodes_per_round=2",
        "algo.updates_per_round=5",
        "algo.batch_size=32",
        "eval.episodes=2",
        "eval.videos=0",
        "collector.num_envs=2",
        run=on,
    )
    with h5py.File(on / "data" / "dataset.hdf5") as f:
        demo = f["data/demo_0"]
        assert not demo["teacher/acted"][()].any()  # the one-step student drove every step
        assert demo["teacher/chunk"].shape[1:] == (16, 4)


def test_pixel_diffusion_policy_trains(tmp_path):
    run = tmp_path / "rgb"
    train_run(
        "algo=diffusion",
        "student=diffusion_rgb",
        *TINY,
        "algo.num_demos=2",
        "algo.updates=4",
        "algo.log_every=4",
        "algo.batch_size=8",
        "eval.episodes=1",
        "eval.num_envs=1",
        "eval.videos=0",
        "student.image_feature_dim=16",
        "sampler=ddim",
        "sampler.num_inference_steps=2",
        run=run,
    )
    assert json.loads((run / "eval.json").read_text())["episodes"] == 1
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["update"] == 4 and ckpt["policy_config"]["obs_keys"] == ["front_rgb", "wrist_rgb", "proprio"]


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["algo=bc", "sampler=rti", "algo.num_demos=1"], ["sampler=rti needs a diffusion-family policy"]),
        (["algo=ppo", "sampler=ddim"], ["sampler=ddim needs a diffusion-family policy"]),
        (["algo=diffusion", "student=mlp"], ["algo=diffusion trains a diffusion policy"]),
        (
            [
                "algo=diffusion",
                "student=diffusion",
                "student.pred_horizon=64",
                "student.down_dims=[16,32]",
                "algo.num_demos=2",
            ],
            ["too short for the horizons", "pred_horizon is 64"],
        ),
        (["algo=diffusion", "student=diffusion", "sampler=sdp"], ["sampler=sdp needs a policy trained with"]),
        (["algo=consistency"], ["algo=consistency distils a diffusion policy"]),
    ],
)
def test_bad_input_gets_one_clear_error(overrides, needles, tmp_path):
    with user_error(*needles):
        train_run("task=pickcube", *overrides, "eval.episodes=1", run=tmp_path / "bad")


def test_a_checkpoint_for_other_shapes_is_refused(dp_run, tmp_path):
    with user_error("the teacher checkpoint was trained for observations {'state': [38]}", "{'state': [36]}"):
        train_run("task=pusht", "algo=consistency", "teacher=diffusion", f"teacher.path={dp_run}", run=tmp_path / "x")
