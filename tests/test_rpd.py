"""RPD's algorithm on real MuJoCo envs: the distill term, labelling once per collected state, lambda schedules."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import envs  # noqa: F401  (registers the tasks)
from robodistill.config import compose_config
from robodistill.errors import UserError
from robodistill.learners.rpd import RPD, LabelledSamples
from robodistill.learners.sb3 import StudentView, check_sb3_run
from robodistill.learners.schedules import DistillWeight
from robodistill.teachers import CallableTeacher

TARGET = np.array([0.3, -0.2, 0.1, 0.5], np.float32)


def rpd_on_reach(teacher_fn, zero_reward=True, num_envs=2, **kwargs) -> RPD:
    def make():
        env = gym.make("robodistill/Reach-v0", control_mode="pd_ee_delta_pos")
        return gym.wrappers.TransformReward(env, lambda r: 0.0) if zero_reward else env

    view = StudentView(DummyVecEnv([make] * num_envs), ["state"], ["state"])
    kwargs = {
        "n_steps": 64,
        "batch_size": 64,
        "n_epochs": 4,
        "ent_coef": 0.0,
        "seed": 0,
        "device": "cpu",
        "distill_loss": "mse",
        "distill_weight": DistillWeight(kind="constant", value=1.0),
        "label_batch_size": 4096,
        **kwargs,
    }
    return RPD("MlpPolicy", VecMonitor(view), CallableTeacher(teacher_fn), view, **kwargs)


def mean_action(model: RPD, states: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.policy.get_distribution(torch.as_tensor(states)).distribution.mean.numpy()


def test_distill_term_alone_pulls_the_mean_onto_the_teacher():
    # zero reward: advantages and returns are zero, so PPO's terms give no gradient and only lambda * mse acts
    model = rpd_on_reach(lambda s: np.tile(TARGET, (len(s), 1)), learning_rate=1e-3)
    states = np.stack([gym.make("robodistill/Reach-v0").reset(seed=i)[0] for i in range(20)])
    before = np.abs(mean_action(model, states) - TARGET).mean()
    losses = []
    for _ in range(6):
        model.learn(128, reset_num_timesteps=False)
        losses.append(model.last_train_stats["distill/loss"])
    after = np.abs(mean_action(model, states) - TARGET).mean()
    assert after < 0.25 * before, (before, after)
    assert losses[-1] < 0.25 * losses[0], losses


def test_teacher_labels_each_collected_state_exactly_once_and_in_place():
    # a teacher that is a function of the state: the stored label of every buffer row must be f(that row's state)
    model = rpd_on_reach(lambda s: np.tanh(s[:, :4]), num_envs=3, n_steps=32, batch_size=32, n_epochs=3)
    model.learn(32 * 3 * 4)
    assert model.teacher.labels == {"distill": model.num_timesteps}
    assert model.teacher.calls == {"distill": 4}  # one batched call per rollout, none per epoch or minibatch
    buf = model.rollout_buffer  # flattened by training, labels in the same order as the states
    np.testing.assert_allclose(buf.teacher_action, np.tanh(buf.observations[:, :4]), atol=1e-6)


def test_no_teacher_calls_after_lambda_is_annealed():
    weight = DistillWeight(kind="cosine", value=1.0, anneal_steps=256)
    model = rpd_on_reach(lambda s: np.tile(TARGET, (len(s), 1)), zero_reward=False, distill_weight=weight)
    model.learn(128 * 6)
    assert model.steps == {"distill": 256, "annealed": 512}
    assert model.teacher.labels == {"distill": 256}  # labelled while lambda > 0 only
    assert model.last_train_stats["distill/lambda"] == 0.0 and "distill/loss" not in model.last_train_stats


def test_a_lambda_floor_keeps_the_teacher_labelling_after_annealing():
    weight = DistillWeight(kind="cosine", value=1.0, anneal_steps=256, floor=0.25)
    model = rpd_on_reach(lambda s: np.tile(TARGET, (len(s), 1)), zero_reward=False, distill_weight=weight)
    model.learn(128 * 6)
    assert model.steps == {"distill": 768, "annealed": 0}
    assert model.teacher.labels == {"distill": 768}
    assert model.last_train_stats["distill/lambda"] == 0.25 and "distill/loss" in model.last_train_stats


def test_lambda_schedules():
    cos = DistillWeight(kind="cosine", value=1.0, anneal_steps=1000)
    assert cos(0) == 1.0
    assert cos(500) == pytest.approx(0.5)
    assert cos(250) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cos(1000) == 0.0 and cos(10**9) == 0.0
    assert DistillWeight(kind="constant", value=0.3)(10**9) == 0.3
    floored = DistillWeight(kind="cosine", value=10.0, anneal_steps=1000, floor=1.0)
    assert floored(0) == 10.0
    assert floored(500) == pytest.approx(5.5)
    assert floored(1000) == 1.0 and floored(10**9) == 1.0
    with pytest.raises(ValueError, match="unknown lambda schedule"):
        DistillWeight(kind="step")
    with pytest.raises(ValueError, match="floor"):
        DistillWeight(kind="cosine", value=1.0, floor=2.0)


def test_distill_losses_against_hand_computed_values():
    model = rpd_on_reach(lambda s: np.zeros((len(s), 4), np.float32))
    student = torch.distributions.Normal(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.5]]))
    a_t, std_t = torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.5]])
    labels = LabelledSamples(None, a_t, a_t, std_t)
    model.distill_loss = "mse"
    assert model.distill(student, labels).item() == pytest.approx(0.25 + 1.0)
    model.distill_loss = "nll"
    nll = sum(
        0.5 * ((a - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)
        for a, m, s in [(0.5, 0.0, 1.0), (0.0, 1.0, 0.5)]
    )
    assert model.distill(student, labels).item() == pytest.approx(nll, rel=1e-5)
    model.distill_loss = "kl"  # KL(N(m1, s1) || N(m2, s2)) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    kl = sum(
        math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
        for m1, s1, m2, s2 in [(0.0, 1.0, 0.5, 2.0), (1.0, 0.5, 0.0, 0.5)]
    )
    assert model.distill(student, labels).item() == pytest.approx(kl, rel=1e-5)
    same = LabelledSamples(None, student.mean, student.mean, student.stddev)
    assert model.distill(student, same).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("algo", ["ppo", "sac", "rpd"])
def test_sb3_learners_refuse_a_sampler_or_a_student_they_cannot_train(algo):
    check_sb3_run(compose_config([f"algo={algo}", "student=cnn"]))  # SB3's Gaussian policy: mlp or cnn
    with pytest.raises(UserError, match=f"sampler=ddim needs a diffusion-family policy, but algo={algo}"):
        check_sb3_run(compose_config([f"algo={algo}", "sampler=ddim"]))
    with pytest.raises(UserError, match=f"algo={algo} trains an SB3 Gaussian policy, but student=diffusion"):
        check_sb3_run(compose_config([f"algo={algo}", "student=diffusion"]))
