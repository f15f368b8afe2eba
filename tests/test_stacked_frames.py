"""Gaussian students on stacked frames (`student.obs_horizon` > 1): the runner hands the policy each env's last T_o
observations (a new episode repeating its first), DAgger and BC train on windows, the export carries the history
length and the torch-free runtime keeps the history as torch does; the SB3 learners and a checkpoint teacher refuse
such a student with one clear error."""

import json

import numpy as np
import pytest
import torch
from conftest import fresh_run, train_run, user_error

from policies import build_policy
from policies.samplers import HistoryRunner
from robodistill.config import compose_config
from robodistill.export.exporter import export_run
from robodistill.learners.components import make_student
from robodistill.learners.sb3 import check_sb3_run
from robodistill.runtime.artifact import ArtifactPolicy, load_artifact
from robodistill.tasks import make_env, shape_meta
from robodistill.teachers.checkpoint import PolicyTeacher

TASK = {"name": "reach", "env_id": "robodistill/Reach-v0", "kwargs": {"control_mode": "pd_ee_delta_pos"}}
STUDENT = {"kind": "gaussian", "obs_keys": ["state"], "hidden": [32], "obs_horizon": 3}


@pytest.fixture(scope="module")
def meta():
    env = make_env(TASK, "state")
    yield shape_meta(env)
    env.close()


def test_the_runner_hands_each_slot_its_last_frames_and_a_new_episode_repeats_its_first(meta):
    policy = build_policy({**STUDENT, "shape_meta": meta})
    seen = []
    policy.act = lambda obs, deterministic=True: (seen.append(obs["state"].copy()), (np.zeros((2, 3)), np.zeros(2)))[1]
    runner = HistoryRunner(policy)
    frames = [np.full((2, meta["obs"]["state"]["shape"][0]), float(t)) for t in range(4)]
    frames[0][1] = 10.0  # slot 1's first frame differs from slot 0's
    for t in range(3):
        runner({"state": frames[t]}, [0, 1])
    assert seen[0].shape == (2, 3, meta["obs"]["state"]["shape"][0])
    assert seen[0][0, :, 0].tolist() == [0, 0, 0] and seen[0][1, :, 0].tolist() == [10, 10, 10]
    assert seen[2][0, :, 0].tolist() == [0, 1, 2] and seen[2][1, :, 0].tolist() == [10, 1, 2]
    runner.reset(1)  # slot 1 starts a new episode: its history is its new first frame, repeated
    runner({"state": frames[3][:1]}, [1])
    assert seen[3][0, :, 0].tolist() == [3, 3, 3]


def test_the_policy_reads_the_older_frames(meta):
    torch.manual_seed(0)
    policy = build_policy({**STUDENT, "shape_meta": meta})
    rng = np.random.default_rng(0)
    old, now = rng.normal(size=(2, *meta["obs"]["state"]["shape"])).astype(np.float32)
    moving = np.stack([old, old, now])[None]  # (1, T_o, D)
    still = np.stack([now, now, now])[None]
    assert not np.allclose(policy.act({"state": moving})[0], policy.act({"state": still})[0])


@pytest.mark.parametrize("algo", ["dagger", "bc"])
def test_imitation_trains_on_windows_and_the_runtime_keeps_the_history_as_torch_does(tmp_path, algo):
    sizes = {
        "dagger": ["algo.rounds=2", "algo.episodes_per_round=2", "algo.updates_per_round=20", "algo.beta.horizon=2"],
        "bc": ["algo.num_demos=3", "algo.updates=20"],
    }[algo]
    run = tmp_path / "run"
    summary = train_run(
        "task=reach",
        f"algo={algo}",
        "student=mlp",
        "student.obs_horizon=3",
        "student.hidden=[32]",
        *sizes,
        "algo.batch_size=16",
        "collector.num_envs=2",
        "eval.episodes=2",
        "eval.num_envs=2",
        "eval.videos=0",
        run=run,
    )
    assert 0.0 <= summary["success_rate"] <= 1.0
    ckpt = torch.load(run / "checkpoints/best.pt", weights_only=False)
    assert ckpt["policy_config"]["obs_horizon"] == 3
    # exported: the contract says 3 observations per action, parity on recorded histories
    export_run(run, samples=30, progress=False)
    contract = json.loads((run / "export_onnx/contract.json").read_text())
    assert contract["chunk"]["obs_horizon"] == 3
    assert json.loads((run / "export_onnx/parity.json").read_text())["passed"]
    # one episode step by step: the runtime's own history gives torch's actions from its runner
    policy = build_policy(ckpt["policy_config"])
    policy.load_state_dict(ckpt["policy"])
    runner, runtime = HistoryRunner(policy.eval()), ArtifactPolicy(load_artifact(run / "export_onnx"))
    env = make_env(TASK, "state")
    obs, _ = env.reset(seed=3)
    for _ in range(12):  # a state task observes a plain vector
        expected = runner({"state": obs[None]}, [0])[0]
        action = runtime({"state": obs})[0]
        np.testing.assert_allclose(action, expected, atol=1e-4)
        obs, *_ = env.step(action)
    env.close()


def test_sb3_learners_and_a_checkpoint_teacher_refuse_stacked_frames(tmp_path, meta):
    for algo in ("ppo", "rpd"):
        with user_error(f"algo={algo} trains an SB3 policy on one observation", "student.obs_horizon=3"):
            check_sb3_run(compose_config([f"algo={algo}", "student=mlp", "student.obs_horizon=3"]))
    run = fresh_run(tmp_path / "run", TASK, STUDENT)
    with user_error("teacher=checkpoint labels from one observation", "reads the last 3"):
        PolicyTeacher.load(str(run))
    with user_error("student=mlp: obs_horizon must be a whole number of steps >= 1, got 0"):
        make_student(compose_config(["student=mlp", "student.obs_horizon=0"]).student, meta)
