"""The `device` setting: resolved or refused in one line, and followed by every network, noise table and sampler.

The CPU path runs everywhere; tests marked `gpu` run where torch sees a CUDA GPU (`scripts/bench.py device` measures
that path)."""

import numpy as np
import pytest
import torch
from conftest import run_script, train_run, user_error

from policies.samplers import ChunkRunner, make_sampler
from robodistill.config import compose_config, to_dict
from robodistill.devices import resolve_device
from robodistill.learners.components import make_student
from robodistill.rundir import RunDir
from robodistill.tasks import make_env, shape_meta
from robodistill.teachers import load_policy

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU here")


def small_diffusion_policy() -> torch.nn.Module:
    cfg = compose_config(
        ["task=pushcube", "student=diffusion", "student.down_dims=[16,32]", "student.step_embed_dim=16"]
    )
    env = make_env(to_dict(cfg.task), "state")
    meta = shape_meta(env)
    env.close()
    return make_student(cfg.student, meta)


def test_devices_resolve_and_misspellings_are_refused():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda" if CUDA else "cpu")
    with user_error("device=gpu is not a device: use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with user_error("device=cuda:x is not a device"):
        resolve_device("cuda:x")


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is visible here")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    with user_error("device=cuda: torch", "sees no CUDA GPU", "use device=cpu or auto"):
        resolve_device("cuda")
    with user_error("device=cuda:1: torch"):
        train_run("task=reach", "device=cuda:1", run=tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before anything is trained
    p = run_script("scripts/train.py", "task=reach", "device=cuda", "progress=false", f"hydra.run.dir={tmp_path / 's'}")
    assert p.returncode == 2 and p.stderr.startswith("error: device=cuda: torch"), p.stderr[-2000:]
    assert len(p.stderr.strip().splitlines()) == 1


def test_noise_tables_are_buffers_that_move_with_the_policy_and_are_not_saved():
    policy = small_diffusion_policy()
    saved = set(policy.state_dict())
    assert not any(k.startswith("schedule.") for k in saved)  # checkpoints are unchanged: the tables are derived
    policy.to(torch.float64)  # a move of every buffer: the schedule's tables follow the module
    assert policy.schedule.alphas_cumprod.dtype == torch.float64 and policy.schedule.betas.dtype == torch.float64
    assert policy.device == torch.device("cpu")


def test_device_cpu_trains_evaluates_and_labels_on_the_cpu(tmp_path):
    out = train_run(
        "task=pushcube", "algo=bc", "algo.num_demos=2", "algo.updates=20", "student=diffusion",
        "student.down_dims=[16,32]", "student.step_embed_dim=16", "eval.episodes=2", "eval.videos=0",
        "device=cpu", run=tmp_path / "r",
    )  # fmt: skip
    assert 0.0 <= out["success_rate"] <= 1.0
    policy = load_policy(tmp_path / "r", device="cpu")
    assert policy.device == torch.device("cpu") and RunDir(tmp_path / "r").config().device == "cpu"


def run_on(policy, device: str, obs: dict[str, np.ndarray]) -> np.ndarray:
    torch.manual_seed(0)
    runner = ChunkRunner(policy.to(device), make_sampler(policy, {"kind": "ddim", "num_inference_steps": 10}))
    return runner.label(obs)


@gpu
@needs_cuda
def test_a_diffusion_policy_samples_on_the_gpu_as_on_the_cpu():
    policy = small_diffusion_policy()
    obs = {"state": np.random.default_rng(0).standard_normal((4, policy.shape_meta["obs"]["state"]["shape"][0]))}
    obs = {"state": obs["state"].astype(np.float32)}
    cond_cpu = policy.condition(policy.tensors({"state": obs["state"][:, None].repeat(2, 1)}))
    policy.to("cuda")
    cond_gpu = policy.condition(policy.tensors({"state": obs["state"][:, None].repeat(2, 1)}))
    torch.testing.assert_close(cond_gpu.cpu(), cond_cpu, atol=1e-4, rtol=1e-4)
    chunk = run_on(policy, "cuda", obs)  # noise drawn on the GPU: another stream, the same shapes and bounds
    assert chunk.shape == (4, policy.pred_horizon, policy.action_dim) and np.isfinite(chunk).all()


@gpu
@needs_cuda
@pytest.mark.parametrize("algo", ["bc", "ppo"])
def test_training_runs_on_the_gpu(tmp_path, algo):
    extra = ["algo.total_timesteps=2048", "algo.eval_every=0"] if algo == "ppo" else ["algo.updates=50"]
    out = train_run("task=reach", f"algo={algo}", "device=cuda", "eval.episodes=2", "eval.videos=0", *extra,
                    run=tmp_path / "r")  # fmt: skip
    assert 0.0 <= out["success_rate"] <= 1.0
