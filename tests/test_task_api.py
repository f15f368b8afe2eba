"""Every task: Gymnasium's and SB3's check_env, the three modes, info keys, instructions, determinism."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

TASK_IDS = list(envs.TASKS)


@pytest.mark.parametrize("task", TASK_IDS)
def test_check_env_state_and_rgb(task):
    env = gym.make(task)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    rgb = gym.make(task, obs_mode="rgb", image_size=48)
    gym_check_env(rgb.unwrapped, skip_render_check=True)
    obs, info = rgb.reset(seed=0)
    assert obs["rgb"].shape == (48, 48, 3) and obs["rgb"].dtype == np.uint8
    assert {"success", "fail", "instruction"} <= set(info)
    assert isinstance(env.unwrapped.instruction, str) and env.unwrapped.instruction


@pytest.mark.parametrize(
    "control_mode,dim", [("pd_joint_delta_pos", 8), ("pd_ee_delta_pos", 4), ("pd_ee_delta_pose", 7)]
)
def test_control_modes(control_mode, dim):
    env = gym.make("robodistill/PickCube-v0", control_mode=control_mode)
    assert env.action_space.shape == (dim,)
    assert env.action_space.low.min() == -1.0 and env.action_space.high.max() == 1.0
    env.reset(seed=0)
    _, r, *_ = env.step(env.action_space.sample())
    assert np.isfinite(r)


@pytest.mark.parametrize("reward_mode", ["sparse", "dense", "normalized_dense"])
def test_reward_modes(reward_mode):
    env = gym.make("robodistill/PushCube-v0", reward_mode=reward_mode)
    env.reset(seed=0)
    rewards = [env.step(env.action_space.sample())[1] for _ in range(5)]
    if reward_mode == "sparse":
        assert set(rewards) <= {0.0, 1.0}
    if reward_mode == "normalized_dense":
        assert all(0.0 <= r <= 1.0 for r in rewards)


@pytest.mark.parametrize("task", TASK_IDS)
def test_reset_with_seed_is_deterministic(task):
    def rollout(seed):
        env = gym.make(task)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(123)
        traj = [obs]
        for _ in range(15):
            traj.append(env.step(rng.uniform(-1, 1, env.action_space.shape))[0])
        return np.array(traj), env.unwrapped.instruction

    a, ia = rollout(7)
    b, ib = rollout(7)
    c, _ = rollout(8)
    np.testing.assert_array_equal(a, b)
    assert ia == ib
    assert not np.allclose(a[0], c[0])  # seeds randomise object and goal poses


def test_bad_modes_are_rejected():
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make("robodistill/Reach-v0", obs_mode="depth")
    with pytest.raises(ValueError, match="reward_mode"):
        gym.make("robodistill/Reach-v0", reward_mode="shaped")
    env = gym.make("robodistill/Reach-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0]))


def test_render_rgb_array():
    env = gym.make("robodistill/PushCube-v0", render_mode="rgb_array", render_size=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.std() > 5  # a real picture, not a blank buffer
