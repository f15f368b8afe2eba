"""trainer.workers: DDP on Ray Train workers (gloo on the CPU) makes the updates of one process with the whole batch."""

import copy

import numpy as np
import pytest
import torch
from conftest import train_run, user_error
from torch.optim.swa_utils import AveragedModel

from policies.gaussian import GaussianPolicy
from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import LABEL
from robodistill.learners.diffusion import ema_model
from robodistill.learners.fitting import FitState

pytest.importorskip("ray.train.torch")

META = {"obs": {"state": {"shape": [12], "type": "low_dim"}}, "action": {"shape": [4]}}


@pytest.fixture(scope="module", autouse=True)
def ray_down_after():
    """Ray (and Ray Train's controller actors) started by the fits stop with this module."""
    yield
    import ray

    ray.shutdown()


def fitted(
    student: GaussianPolicy, buffer: LabelBuffer, workers: int, tmp_path
) -> tuple[GaussianPolicy, FitState, AveragedModel]:
    student = copy.deepcopy(student)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    fit = FitState(optimizer, 30, "cosine", seed=7, workers=workers, storage=tmp_path / f"ddp{workers}")
    ema = ema_model(student, 0.9)  # as algo=diffusion keeps one
    losses = fit.regress(student, buffer, 30, 64, progress=False, ema=ema)
    assert losses["loss/mse"] > 0
    return student, fit, ema


def test_two_workers_with_half_batches_match_one_worker_with_the_whole(tmp_path):
    torch.manual_seed(0)
    student = GaussianPolicy(META, ["state"], hidden=[32, 32])
    rng = np.random.default_rng(0)
    states = rng.standard_normal((500, 12)).astype(np.float32)
    buffer = LabelBuffer()
    buffer.add({"state": states, LABEL: np.tanh(states[:, :4] - states[:, 4:8]).astype(np.float32)})
    student.fit_normalizers({"state": states})
    one, fit1, ema1 = fitted(student, buffer, 1, tmp_path)  # 1 worker x batch 64
    two, fit2, ema2 = fitted(student, buffer, 2, tmp_path)  # 2 workers x batch 32, gradients averaged
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4, msg=name)
    for (name, a), b in zip(ema1.state_dict().items(), ema2.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4, msg=f"ema {name}")  # the EMA moved the same way
    assert int(ema2.n_averaged) == int(ema1.n_averaged) == 30 and not torch.equal(
        ema2.module.mean.weight, two.mean.weight
    )
    assert not torch.equal(one.state_dict()["mean.weight"], student.state_dict()["mean.weight"])  # it learned
    # the driver's optimizer, schedule and minibatch RNG end where the one-process fit's do: checkpoints, resume
    assert fit2.scheduler.last_epoch == fit1.scheduler.last_epoch == 30
    assert fit2.rng.bit_generator.state == fit1.rng.bit_generator.state
    moments1, moments2 = fit1.optimizer.state_dict()["state"], fit2.optimizer.state_dict()["state"]
    for k in moments1:
        torch.testing.assert_close(moments2[k]["exp_avg"], moments1[k]["exp_avg"], atol=2e-5, rtol=1e-3)


def test_workers_must_split_the_batch_and_the_learner_must_be_data_parallel(tmp_path):
    with user_error(
        "trainer.workers=2: algo=consistency fits in one process; data-parallel: bc, dagger, diffusion, sft, opd"
    ):
        train_run("task=pushcube", "algo=consistency", "trainer.workers=2", run=tmp_path / "r")
    buffer = LabelBuffer()
    buffer.add({"state": np.zeros((10, 12), np.float32), LABEL: np.zeros((10, 4), np.float32)})
    fit = FitState(torch.optim.Adam(GaussianPolicy(META, ["state"]).parameters()), 1, "constant", 0, workers=3)
    with user_error("algo.batch_size=64 must divide evenly over trainer.workers=3"):
        fit.regress(GaussianPolicy(META, ["state"]), buffer, 1, 64)
