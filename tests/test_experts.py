"""Scripted experts solve their tasks (fast subset; scripts/bench.py foundation runs 100 episodes per task)."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from robodistill.benchmarks.foundation import expert_success

EPISODES = 10


@pytest.mark.parametrize("task", list(envs.TASKS))
def test_expert_solves_task(task):
    assert expert_success(task, EPISODES) >= 0.9


@pytest.mark.parametrize("task", list(envs.TASKS))
@pytest.mark.parametrize("control_mode", ["pd_joint_delta_pos", "pd_ee_delta_pose"])
def test_expert_drives_every_control_mode(task, control_mode):
    assert expert_success(task, 3, control_mode) >= 2 / 3


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
