"""algo=ppo/sac/rpd composed as scripts/train.py composes them: runs that become teachers, pixel students, resume,
bad teachers, and exports of their policies."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import train_run, user_error

from robodistill.errors import UserError
from robodistill.evaluation.rerun import evaluate_run
from robodistill.export.exporter import export_run
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import ArtifactPolicy, load_artifact
from robodistill.tasks import make_env
from robodistill.teachers import make_teacher
from robodistill.teachers.sb3 import load_sb3_model

TINY = [
    "task=reach",
    "algo.num_envs=2",
    "algo.eval_every=0",
    "algo.eval_episodes=2",
    "eval.episodes=2",
    "eval.num_envs=2",
    "eval.videos=0",
]
TINY_PPO = [*TINY, "algo.sb3.n_steps=64", "algo.sb3.batch_size=64", "algo.sb3.n_epochs=2"]


def metrics(run):
    return RunDir(run).metrics()


def last_ckpt(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ppo") / "run"
    train_run("algo=ppo", *TINY_PPO, "algo.total_timesteps=256", "algo.eval_every=128", run=run)
    return run


def test_ppo_run_writes_curves_and_models_and_is_a_teacher(ppo_run):
    assert (ppo_run / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    evals = {m["step"]: m["eval/success_rate"] for m in metrics(ppo_run) if "eval/success_rate" in m}
    assert list(evals) == [128, 256]
    assert last_ckpt(ppo_run)["train_state"]["num_timesteps"] == 256
    # best.pt and sb3/best_model.zip hold the same model, one that scored the best evaluation
    best_step = torch.load(ppo_run / "checkpoints" / "best.pt", weights_only=True)["train_state"]["num_timesteps"]
    assert evals[best_step] == max(evals.values())
    assert load_sb3_model(ppo_run / "sb3" / "best_model.zip").num_timesteps == best_step
    result = json.loads((ppo_run / "eval.json").read_text())
    assert result["success_rate"] == np.mean([e["success"] for e in result["per_episode"]])

    env = make_env({"env_id": "robodistill/Reach-v0", "kwargs": {"control_mode": "pd_ee_delta_pos"}}, "state")
    obs = np.stack([env.reset(seed=i)[0] for i in range(5)])
    model = load_sb3_model(ppo_run / "sb3" / "final_model.zip")
    expected = model.predict(obs, deterministic=True)[0]
    for path in (ppo_run / "sb3" / "final_model.zip", ppo_run):
        teacher = make_teacher({"kind": "sb3", "path": str(path)}, env)
        out = teacher.act({"state": obs})
        assert out.std is not None and out.std.shape == (5, 4)
        if path.suffix == ".zip":
            np.testing.assert_allclose(out.action, expected, atol=1e-6)
    result = evaluate_run(RunDir(ppo_run).config(), ppo_run, episodes=2, videos=1)
    assert json.loads((ppo_run / "eval_best.json").read_text())["per_episode"] == result["per_episode"]
    assert len(result["per_episode"]) == 2 and list((ppo_run / "videos" / "eval_best").glob("*.mp4"))
    with pytest.raises(UserError, match="holds no SB3 model"):
        make_teacher({"kind": "sb3", "path": str(ppo_run / "checkpoints")}, env)
    bad = ppo_run / "not_a_model.zip"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a Stable-Baselines3 model zip"):
        make_teacher({"kind": "sb3", "path": str(bad)}, env)


def test_rpd_with_an_sb3_teacher_and_reverse_kl(ppo_run, tmp_path):
    run = tmp_path / "rpd"
    result = train_run(
        "algo=rpd",
        *TINY_PPO,
        "algo.total_timesteps=128",
        "algo.distill_loss=kl",
        "teacher=sb3",
        f"teacher.path={ppo_run}",
        run=run,
    )
    assert result["teacher_labels_per_step"] == 1.0
    assert any("distill/loss" in m for m in metrics(run))


def test_kl_needs_a_teacher_with_a_std(tmp_path):
    with user_error("distill_loss=kl needs a teacher that gives a std"):
        train_run("algo=rpd", *TINY_PPO, "algo.distill_loss=kl", run=tmp_path / "r")


def test_sac_trains_and_its_model_loads_as_a_sac_teacher(tmp_path):
    run = tmp_path / "sac"
    train_run(
        "algo=sac",
        *TINY,
        "algo.num_envs=1",
        "algo.total_timesteps=200",
        "algo.sb3.learning_starts=100",
        "algo.checkpoint_every=100",
        run=run,
    )
    state = last_ckpt(run)["train_state"]
    assert state["num_timesteps"] == 200 and "log_ent_coef" in state
    assert type(load_sb3_model(run)).__name__ == "SAC"
    # its tanh-squashed policy exports: the graph maps [-1, 1] onto the action bounds as SB3's predict does
    assert export_run(run, samples=100, progress=False)["parity"]["passed"]


def test_ppo_run_exports_with_its_observation_normalisation(ppo_run):
    contract = export_run(ppo_run, samples=200, progress=False)
    assert contract["kind"] == "gaussian" and list(contract["observations"]) == ["state"]
    assert contract["parity"]["passed"] and contract["parity"]["max_abs_diff"] <= 1e-4
    model = load_sb3_model(ppo_run)
    assert float(model.policy.features_extractor.count) > 0  # running statistics, now inside the graph
    artifact = load_artifact(ppo_run / "export_onnx")
    states = np.load(ppo_run / "export_onnx" / "selftest.npz")["obs/state"]
    expected, _ = model.predict(states, deterministic=True)
    np.testing.assert_allclose(ArtifactPolicy(artifact).infer({"state": states})[:, 0], expected, atol=1e-4)


def test_rpd_pixel_student_with_a_privileged_state_teacher(tmp_path):
    run = tmp_path / "rgb"
    result = train_run(
        "algo=rpd",
        "student=cnn",
        *TINY_PPO,
        "algo.sb3.n_steps=32",
        "algo.sb3.batch_size=32",
        "algo.total_timesteps=64",
        "task.kwargs.image_size=48",
        run=run,
    )
    assert result["teacher_labels_per_step"] == 1.0
    model = load_sb3_model(run)
    # the student never sees the state
    assert sorted(model.observation_space.spaces) == ["front_rgb", "proprio", "wrist_rgb"]


def test_rpd_with_an_undertrained_bc_teacher(tmp_path):
    bc = tmp_path / "bc"
    train_run(
        "task=reach", "algo=bc", "algo.num_demos=3", "algo.updates=50", "eval.episodes=2", "eval.videos=0", run=bc
    )
    run = tmp_path / "rpd"
    result = train_run(
        "algo=rpd",
        *TINY_PPO,
        "algo.total_timesteps=128",
        "teacher=checkpoint",
        f"teacher.path={bc}",
        "teacher.wrong_action_rate=0.2",
        "algo.distill_loss=kl",
        run=run,
    )
    # the imperfect teacher was itself evaluated first: its success rate is logged and is the curve's line to cross
    logged = [m["eval/teacher_success_rate"] for m in metrics(run) if "eval/teacher_success_rate" in m]
    assert logged and set(logged) == {result["teacher_success"]}


def test_rpd_resume_continues_optimizer_lambda_and_counters(tmp_path):
    run = tmp_path / "r"
    args = ["algo=rpd", *TINY_PPO, "algo.distill_weight.kind=cosine", "algo.distill_weight.anneal_steps=512"]
    train_run(*args, "algo.total_timesteps=256", run=run)
    first = last_ckpt(run)
    assert first["train_state"]["num_timesteps"] == 256
    assert first["train_state"]["sb3"]["policy.optimizer"]["state"][0]["step"].item() == 8  # 2 rollouts x 2 x 2
    train_run(*args, "algo.total_timesteps=512", "resume=true", run=run)
    second = last_ckpt(run)
    assert second["train_state"]["num_timesteps"] == 512
    assert second["train_state"]["n_updates"] == 8
    assert second["train_state"]["sb3"]["policy.optimizer"]["state"][0]["step"].item() == 16
    assert second["counters"]["labels"] == {"distill": 512}
    lam = {m["step"]: m["distill/lambda"] for m in metrics(run) if "distill/lambda" in m}
    # lambda of the rollout collected from step t is cosine(t / 512): the resumed half continues the schedule
    assert lam[384] == pytest.approx(0.5) and lam[512] == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.75)))


def test_rpd_teacher_with_the_wrong_action_dim_is_refused_before_training(user_module, tmp_path):
    user_module("wrong_teacher", "import numpy as np\ndef act(obs):\n    return np.zeros((len(obs), 7), np.float32)\n")
    run = tmp_path / "r"
    with user_error("do not match", "(1, 4)"):
        train_run("algo=rpd", *TINY_PPO, "teacher=callable", "teacher.target=wrong_teacher:act", run=run)
    assert not (run / "checkpoints" / "last.pt").exists()


def test_teacher_nan_mid_run_stops_clearly_and_the_run_resumes(user_module, tmp_path):
    # labels the first rollout (128 states in one call), then returns NaN for the second
    user_module(
        "flaky_teacher",
        "import numpy as np\nbig_calls = 0\n"
        "def act(obs):\n    global big_calls\n    a = np.zeros((len(obs), 4), np.float32)\n"
        "    if len(obs) >= 100:\n        big_calls += 1\n        if big_calls >= 2:\n            a[:] = np.nan\n"
        "    return a\n",
    )
    run = tmp_path / "r"
    args = ["algo=rpd", *TINY_PPO, "algo.total_timesteps=384"]
    with user_error("teacher returned NaN or inf actions"):
        train_run(*args, "teacher=callable", "teacher.target=flaky_teacher:act", run=run)
    assert last_ckpt(run)["train_state"]["num_timesteps"] == 128  # the checkpoint before the failure, readable
    train_run(*args, "resume=true", run=run)
    assert last_ckpt(run)["train_state"]["num_timesteps"] == 384


def test_training_stops_at_the_first_evaluation_reaching_stop_at_success(tmp_path):
    run = tmp_path / "sac"
    args = ["algo=sac", *TINY, "algo.num_envs=1", "algo.sb3.learning_starts=50", "algo.eval_every=100"]
    # every evaluation reaches a success rate of 0: the first one (at 100 env steps) ends the 10,000-step budget
    summary = train_run(*args, "algo.total_timesteps=10000", "algo.stop_at_success=0.0", run=run)
    assert summary["env_steps"] == 101  # SB3 takes the step whose callback says stop
    curve = [m["step"] for m in metrics(run) if "eval/success_rate" in m]
    assert curve == [100, 101]  # the stopping evaluation, then the final one
    with user_error("algo.stop_at_success must be a success rate in [0, 1]"):
        train_run(*args, "algo.stop_at_success=80", run=tmp_path / "bad")


def test_an_sb3_argument_the_algorithm_does_not_take(tmp_path):
    with user_error("algo.sb3 has an argument PPO does not take", "no_such_arg"):
        train_run("algo=ppo", *TINY_PPO, "+algo.sb3.no_such_arg=1", run=tmp_path / "r")


def test_ppo_on_any_gymnasium_task(tmp_path):
    run = tmp_path / "pusher"
    train_run("algo=ppo", *TINY_PPO[1:], "task=gym", "task.env_id=Pusher-v5", "algo.total_timesteps=128", run=run)
    assert last_ckpt(run)["train_state"]["num_timesteps"] == 128
    assert load_sb3_model(run).observation_space.shape == (23,)


def test_a_fresh_run_in_a_reused_directory_starts_fresh_metrics(tmp_path):
    run = tmp_path / "r"
    for _ in range(2):
        train_run("algo=ppo", *TINY_PPO, "algo.total_timesteps=128", run=run)
    assert [m["step"] for m in metrics(run) if "eval/success_rate" in m] == [128]


def test_export_of_an_sb3_run_takes_the_checkpoint_asked_for(ppo_run, tmp_path):
    """checkpoint=last exports sb3/final_model.zip, checkpoint=best sb3/best_model.zip (made different here)."""
    run = tmp_path / "run"
    shutil.copytree(ppo_run, run, ignore=shutil.ignore_patterns("export_*"))
    best = load_sb3_model(run, which="best")
    with torch.no_grad():
        for p in best.policy.action_net.parameters():
            p.add_(0.5)
    best.save(run / "sb3" / "best_model.zip")
    for which in ("last", "best"):
        out = tmp_path / f"export_{which}"
        export_run(run, out=out, samples=50, checkpoint=which, progress=False)
        states = np.load(out / "selftest.npz")["obs/state"]
        expected, _ = load_sb3_model(run, which=which).predict(states, deterministic=True)
        got = ArtifactPolicy(load_artifact(out)).infer({"state": states})[:, 0]
        np.testing.assert_allclose(got, expected, atol=1e-4)
    final, _ = load_sb3_model(run, which="last").predict(states, deterministic=True)
    assert np.abs(final - expected).max() > 1e-2  # the two checkpoints really act differently
