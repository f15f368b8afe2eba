"""Scripted experts solve their tasks (fast subset; scripts/bench.py foundation runs 100 episodes per task)."""

import gymnasium as gym
import numpy as np
import pytest

import envs

EPISODES = 10


def success_rate(task, episodes, control_mode="pd_ee_delta_pos"):
    env = gym.make(task, control_mode=control_mode)
    expert = envs.make_expert(env)
    wins = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        while True:
            obs, _, term, trunc, info = env.step(expert(obs))
            if term or trunc:
                break
        wins += bool(info["success"])
    return wins / episodes


@pytest.mark.parametrize("task", list(envs.TASKS))
def test_expert_solves_task(task):
    assert success_rate(task, EPISODES) >= 0.9


@pytest.mark.parametrize("control_mode", ["pd_joint_delta_pos", "pd_ee_delta_pose"])
def test_expert_drives_every_control_mode(control_mode):
    assert success_rate("robodistill/PushCube-v0", 5, control_mode) >= 0.8


def test_expert_is_batched_and_stateless():
    env = gym.make("robodistill/PickCube-v0")
    expert = envs.make_expert(env)
    obs = [env.reset(seed=s)[0] for s in range(3)]
    batch = expert(np.stack(obs))
    np.testing.assert_allclose(batch, np.stack([expert(o) for o in obs]), atol=1e-6)
    np.testing.assert_allclose(expert(obs[0]), expert(obs[0]))


def test_generic_envs_have_no_scripted_expert():
    with pytest.raises(TypeError, match="no scripted expert"):
        envs.make_expert(gym.make("Pendulum-v1"))
