"""Diffusion building blocks: squared-cosine schedule, forward noising, DDPM/DDIM steps, the conditional 1-D UNet."""

import pytest
import torch

from policies.diffusion import ConditionalUnet1D, NoiseSchedule, squared_cosine_betas


def test_squared_cosine_schedule():
    betas = squared_cosine_betas(100)
    assert betas.shape == (100,) and bool((betas > 0).all()) and bool((betas <= 0.999).all())
    bars = NoiseSchedule(100).alphas_cumprod
    assert bool((bars[1:] < bars[:-1]).all())  # strictly more noise at every step
    assert bars[0] > 0.99 and bars[-1] < 1e-3


def test_forward_noising_matches_its_marginal():
    sched, g = NoiseSchedule(100), torch.Generator().manual_seed(0)
    x0 = torch.full((20_000, 1, 1), 0.5)
    for t in (0, 30, 99):
        noise = torch.randn(x0.shape, generator=g)
        xt = sched.add_noise(x0, noise, torch.full((len(x0),), t))
        bar = sched.alphas_cumprod[t]
        assert xt.mean().item() == pytest.approx(0.5 * bar.sqrt().item(), abs=0.02)
        assert xt.var().item() == pytest.approx(1 - bar.item(), abs=0.02)


def test_ddim_is_deterministic_and_exact_with_the_true_noise():
    sched = NoiseSchedule(100)
    x0 = torch.rand(4, 16, 3) * 2 - 1
    noise = torch.randn(4, 16, 3)
    steps = sched.ddim_timesteps(10)
    assert steps[0] > steps[-1] == 0 and len(steps) == 10
    x = sched.add_noise(x0, noise, torch.full((4,), steps[0]))
    for t, t_prev in zip(steps, [*steps[1:], -1]):
        x = sched.ddim_step(noise, t, t_prev, x)  # an oracle that knows the noise: every step lands on the path
    torch.testing.assert_close(x, x0, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.ddim_timesteps(0)


def test_ddpm_step_with_the_true_noise_ends_at_x0():
    sched = NoiseSchedule(100)
    x0 = torch.rand(2, 8, 2) * 2 - 1
    noise = torch.randn(2, 8, 2)
    x1 = sched.add_noise(x0, noise, torch.full((2,), 0))
    torch.testing.assert_close(sched.ddpm_step(noise, 0, x1), x0, atol=1e-4, rtol=0)
    a = sched.ddpm_step(noise, 50, x1, torch.Generator().manual_seed(1))
    b = sched.ddpm_step(noise, 50, x1, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)  # seeded: reproducible


def test_unet_shapes_conditioning_and_gradients():
    torch.manual_seed(0)
    net = ConditionalUnet1D(action_dim=4, cond_dim=10, down_dims=(32, 64, 128), step_embed_dim=32)
    x, t = torch.randn(3, 16, 4), torch.tensor([0, 50, 99])
    cond = torch.randn(3, 10)
    out = net(x, t, cond)
    assert out.shape == (3, 16, 4)
    assert not torch.allclose(out, net(x, t, cond + 1.0))  # the observation features condition the output
    assert not torch.allclose(out, net(x, t + 1, cond))  # so does the diffusion step
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
