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
    assert set(obs) == {"front_rgb", "wrist_rgb", "proprio"}
    for camera in ("front_rgb", "wrist_rgb"):
        assert obs[camera].shape == (48, 48, 3) and obs[camera].dtype == np.uint8
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


def test_reward_modes():
    """The scripted expert's PushCube episode under each mode: sparse pays 1 only at success; dense shapes the way
    there and pays its maximum at success; normalized_dense is dense over that maximum."""
    rewards = {}
    for mode in ("sparse", "dense", "normalized_dense"):
        env = gym.make("robodistill/PushCube-v0", reward_mode=mode)
        expert = envs.make_expert(env)
        obs, _ = env.reset(seed=0)
        rewards[mode], done = [], False
        while not done:
            obs, r, terminated, truncated, info = env.step(expert(obs))
            rewards[mode].append(r)
            done = terminated or truncated
        assert terminated and info["success"]  # the same deterministic episode each time: it ends in success
    top = env.unwrapped.max_dense_reward
    sparse, dense = np.array(rewards["sparse"]), np.array(rewards["dense"])
    assert sparse[-1] == 1.0 and not sparse[:-1].any()
    assert dense[-1] == top and (dense[:-1] > 0).all() and (dense[:-1] < top).all()
    assert dense[-2] > dense[0]  # shaped: the reward grows as the cube is pushed toward the goal
    np.testing.assert_allclose(rewards["normalized_dense"], dense / top, rtol=1e-12)


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
