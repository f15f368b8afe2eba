"""Policies carry their normalisers and config: rebuilt from a state_dict they act identically."""

import numpy as np
import pytest
import torch

import policies
from policies import GaussianPolicy

META = {"obs": {"state": {"shape": [6], "type": "low_dim"}, "rgb": {"shape": [24, 24, 3], "type": "rgb"},
                "proprio": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}  # fmt: skip


def _obs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "state": rng.normal(3.0, 2.0, (n, 6)).astype(np.float32),
        "rgb": rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(n, 3)).astype(np.float32),
    }


@pytest.mark.parametrize("keys", [["state"], ["rgb", "proprio"]])
def test_rebuilt_from_config_and_state_dict_acts_the_same(keys):
    torch.manual_seed(0)
    pol = GaussianPolicy(META, keys, hidden=[32, 32])
    pol.fit_normalizers(_obs(100, seed=1))
    clone = policies.build_policy(pol.config)
    clone.load_state_dict(pol.state_dict())
    a, lp = pol.act(_obs())
    b, lq = clone.act(_obs())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lp, lq)
    assert a.shape == (5, 2) and np.all(np.abs(a) <= 1.0)


def test_normaliser_is_fitted_and_saved():
    pol = GaussianPolicy(META, ["state"], hidden=[8])
    data = _obs(500)
    pol.fit_normalizers(data)
    norm = pol.encoder.normalizers["state"]
    np.testing.assert_allclose(norm(torch.as_tensor(data["state"])).mean(0).numpy(), 0.0, atol=1e-5)
    assert "encoder.normalizers.state.shift" in pol.state_dict()


def test_log_prob_matches_torch_normal():
    torch.manual_seed(0)
    pol = GaussianPolicy(META, ["state"], hidden=[16])
    obs = _obs()
    torch.manual_seed(1)
    a, lp = pol.act(obs, deterministic=False)
    dist = pol.distribution({"state": torch.as_tensor(obs["state"])})
    inside = np.all(np.abs(a) < 1.0, axis=1)  # clipping changes the action, not the sampled log-prob
    ref = dist.log_prob(torch.as_tensor(a)).sum(-1).detach().numpy()
    np.testing.assert_allclose(lp[inside], ref[inside], atol=1e-4)
    mean, _ = pol.act(obs, deterministic=True)
    np.testing.assert_allclose(mean, dist.mean.clamp(-1, 1).detach().numpy(), atol=1e-6)


def test_imitation_loss_pulls_mean_onto_labels():
    torch.manual_seed(0)
    pol = GaussianPolicy(META, ["state"], hidden=[32])
    obs = {"state": torch.as_tensor(_obs(64)["state"])}
    target = torch.rand(64, 2) * 2 - 1
    opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        loss, parts = pol.imitation_loss(obs, target)
        first = first if first is not None else parts["mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["mse"] < 0.1 * first


def test_student_needing_missing_observation_is_rejected():
    with pytest.raises(ValueError, match="offers only"):
        GaussianPolicy(META, ["depth"])
