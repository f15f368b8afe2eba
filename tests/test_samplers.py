"""Diffusion-family policies and their samplers: SDP noise levels and rolling buffer, RTI warm starts, the
consistency head's boundary and distance, DDIM determinism, and the chunk runner's per-episode state."""

import numpy as np
import pytest
import torch

from policies.consistency import ConsistencyPolicy, pseudo_huber
from policies.diffusion_policy import DiffusionPolicy
from policies.samplers import ChunkRunner, DDIMSampler, RTISampler, SDPSampler, make_sampler
from robodistill.data.labels import sequence_labels, windows

META = {"obs": {"state": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [3], "gripper_dims": [2]}}
SMALL = {"down_dims": [16, 32], "step_embed_dim": 16}


def policy(cls=DiffusionPolicy, **kw):
    torch.manual_seed(0)
    p = cls(META, ["state"], **SMALL, **kw)
    p.fit_normalizers(
        {"state": np.random.default_rng(0).normal(size=(50, 5))}, np.random.default_rng(1).uniform(-1, 1, size=(50, 3))
    )
    return p.eval()


def obs(n, seed=0):
    return {"state": np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)}


def test_per_sample_ddim_step_matches_the_scalar_one_and_sampling_is_seeded():
    p = policy()
    x, eps = torch.randn(4, 16, 3), torch.randn(4, 16, 3)
    vec = p.schedule.ddim_step(eps, torch.tensor([50, 50, 50, 50]), torch.tensor([40, 40, 40, 40]), x)
    torch.testing.assert_close(vec, p.schedule.ddim_step(eps, 50, 40, x))
    cond = p.condition({"state": torch.randn(2, 2, 5)})
    torch.manual_seed(3)
    a = DDIMSampler(p, 5).plan(cond, [0, 1])
    torch.manual_seed(3)
    b = DDIMSampler(p, 5).plan(cond, [0, 1])
    torch.testing.assert_close(a, b)  # DDIM is deterministic given the starting noise


def test_sdp_training_levels_mix_constant_and_chunkwise():
    p = policy(noise_levels="sdp")
    torch.manual_seed(0)
    levels = p.training_levels(4000)
    assert levels.shape == (4000, 16) and int(levels.min()) >= 0 and int(levels.max()) <= 99
    constant = (levels == levels[:, :1]).all(1)
    assert 0.15 < constant.float().mean().item() < 0.25  # one level for the whole horizon w.p. 0.2
    chunked = levels[~constant]
    first, second = chunked[:, :8], chunked[:, 8:]
    assert bool((first == first[:, :1]).all()) and bool((second == second[:, :1]).all())  # one level per chunk
    assert bool((second[:, 0] - first[:, 0] == 50).all())  # later chunks noisier by N / h
    assert int(first.max()) <= 49


def test_renoise_raises_the_level_with_the_right_marginal():
    sched = policy().schedule
    x0 = torch.full((20000, 1, 1), 0.5)
    x = sched.renoise(x0, torch.full((20000, 1), -1), torch.full((20000, 1), 40))
    bar = sched.alphas_cumprod[40]
    assert x.mean().item() == pytest.approx(0.5 * bar.sqrt().item(), abs=0.02)
    assert x.var().item() == pytest.approx(1 - bar.item(), abs=0.02)


def test_sdp_buffer_denoises_the_first_chunk_shifts_and_renoises_every_shifted_position():
    p = policy(noise_levels="sdp")
    sampler = SDPSampler(p)
    cond = p.condition({"state": torch.randn(2, 2, 5)})
    torch.manual_seed(0)
    chunk = sampler.plan(cond, [0, 1])
    assert sampler.nfe == 2 * 100  # a new episode starts from pure noise: one full pass
    x, levels = sampler.buffers[0]
    assert levels.tolist() == [49] * 8 + [99] * 8  # the steady state: chunk c at (c + 1) * 50 - 1
    # the old second chunk was clean after the full pass; shifted to the front it was re-noised to level 49
    assert not torch.allclose(x[:8], chunk[0, 8:])
    sampler.plan(cond[:1], [0])
    assert sampler.nfe == 200 + 50  # steady state: N / h evaluations per plan
    assert sampler.buffers[0][1].tolist() == [49] * 8 + [99] * 8
    sampler.reset(0)
    assert 0 not in sampler.buffers and 1 in sampler.buffers
    with pytest.raises(ValueError, match="student=sdp"):
        SDPSampler(policy())


def test_sdp_steady_state_moves_the_denoised_second_chunk_to_the_front_without_renoising():
    p = policy(noise_levels="sdp")
    sampler = SDPSampler(p)
    cond = p.condition({"state": torch.randn(1, 2, 5)})
    sampler.plan(cond, [0])
    torch.manual_seed(1)
    chunk = sampler.plan(cond, [0])  # chunk 0: 49 -> clean; chunk 1: 99 -> 49, then shifted to the front
    x, levels = sampler.buffers[0]
    torch.testing.assert_close(x[:8], chunk[0, 8:])  # its level already fits its new place: kept as it is
    assert levels.tolist() == [49] * 8 + [99] * 8 and torch.isfinite(x).all()


def test_rti_warm_start_shifts_clips_the_gripper_and_resets_per_episode():
    p = policy()
    rti = RTISampler(p, timesteps=[3, 1, 0], num_inference_steps=10, gripper="clip", gripper_clip_factor=2.0)
    prev = torch.linspace(-1, 1, 16 * 3).reshape(16, 3)
    warm = rti.warm_start(prev)
    torch.testing.assert_close(warm[:-1, :2], prev[1:, :2])  # shifted by the one executed step
    torch.testing.assert_close(warm[-1, :2], prev[-1, :2])  # padded with the last action
    assert float(warm[:, 2].abs().max()) <= 0.5 + 1e-6  # gripper clipped to +-1/f

    runner = ChunkRunner(p, rti)
    runner(obs(2), [0, 1])
    assert rti.nfe == 2 * 10  # first call of each episode: a full DDIM-10 plan
    runner(obs(2, 1), [0, 1])
    assert rti.nfe == 20 + 2 * 3  # then a warm start and three steps, re-planning every control step
    runner.reset(1)
    runner(obs(2, 2), [0, 1])
    assert rti.nfe == 26 + 3 + 10  # slot 1 began a new episode: cold again; slot 0 stays warm
    actions = runner(obs(2, 3), [0, 1])
    lo, hi = p.action_normalizer.inverse(torch.full((3,), -1.0)), p.action_normalizer.inverse(torch.full((3,), 1.0))
    assert all(np.isclose(a, lo[2].item(), atol=1e-5) or np.isclose(a, hi[2].item(), atol=1e-5) for a in actions[:, 2])
    with pytest.raises(ValueError, match="gripper_scale"):
        RTISampler(p, gripper="scale")
    RTISampler(policy(gripper_scale=0.1), gripper="scale")  # a policy trained with the scaled gripper


def test_consistency_boundary_and_pseudo_huber():
    p = policy(ConsistencyPolicy, t_max=90)
    x = torch.randn(3, 16, 3)
    cond = p.condition({"state": torch.randn(3, 2, 5)})
    torch.testing.assert_close(p.consistency(x, torch.zeros(3, dtype=torch.long), cond), x)  # f(x, t_min) = x
    c_skip, c_out = p.scalings(torch.tensor([0, 10, 90]))
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0 and c_skip[2].item() < 1e-3
    d = torch.tensor([[3.0, 4.0]])
    assert pseudo_huber(d, c=1.0).item() == pytest.approx(np.sqrt(25 + 1) - 1)  # on |d|, not |d|^2
    assert pseudo_huber(d).item() == pytest.approx(np.sqrt(25 + (0.00054 * np.sqrt(2)) ** 2) - 0.00054 * np.sqrt(2))
    assert p.chain_timesteps(1) == [90] and p.chain_timesteps(3) == [90, 60, 30]
    sampler = make_sampler(p, {"kind": "consistency", "num_steps": 2})
    sampler.plan(cond, [0, 1, 2])
    assert sampler.nfe == 3 * 2


def test_runner_executes_chunks_and_keeps_per_slot_history():
    p = policy()
    runner = ChunkRunner(p, make_sampler(p, {"kind": "ddim", "num_inference_steps": 2}))
    for step in range(8):
        runner(obs(3, step), [0, 1, 2])
    assert runner.sampler.nfe == 3 * 2  # one plan per slot covers the 8 executed actions
    runner(obs(3, 9), [0, 1, 2])
    assert runner.sampler.nfe == 3 * 2 * 2
    assert runner.nfe_per_step == pytest.approx(12 / 27)
    assert len(runner.history.frames[0]) == 2 and len(runner.queue[0]) == 7


def test_windows_pad_at_the_episode_edges():
    x = np.arange(5)
    assert windows(x, -1, 2).tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]
    assert windows(x, -1, 4)[-1].tolist() == [3, 4, 4, 4]
    samples = sequence_labels({"state": np.arange(10).reshape(5, 2)}, np.arange(5)[:, None] * 1.0, ["state"], (2, 4, 1))
    assert samples["state"].shape == (5, 2, 2) and samples["teacher_action"].shape == (5, 4, 1)
    assert samples["teacher_action"][0, :, 0].tolist() == [0, 0, 1, 2]  # the window starts T_o - 1 steps back
