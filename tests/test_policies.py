"""Policies carry their normalisers and config: rebuilt from a state_dict they act identically. One dataclass per
policy type is its config (Hydra's `student` options extend it, checkpoints store it, it validates), and a registry
lists every type with its exporter and runtime step."""

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import policies
from policies import (
    POLICY_TYPES,
    ConfigError,
    ConsistencyConfig,
    DiffusionConfig,
    Exporter,
    GaussianConfig,
    GaussianPolicy,
    VLAConfig,
)
from robodistill.config import CONF_DIR, compose_config, group_options
from robodistill.errors import UserError
from robodistill.learners.components import make_student
from robodistill.runtime.artifact import STEPS
from robodistill.students import student_config

META = {
    "obs": {
        "state": {"shape": [6], "type": "low_dim"},
        "front_rgb": {"shape": [24, 24, 3], "type": "rgb"},
        "wrist_rgb": {"shape": [24, 24, 3], "type": "rgb"},
        "proprio": {"shape": [3], "type": "low_dim"},
    },
    "action": {"shape": [2]},
}
CAMERAS = ["front_rgb", "wrist_rgb"]


def _obs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "state": rng.normal(3.0, 2.0, (n, 6)).astype(np.float32),
        **{k: rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8) for k in CAMERAS},
        "proprio": rng.normal(size=(n, 3)).astype(np.float32),
    }


@pytest.mark.parametrize("keys", [["state"], [*CAMERAS, "proprio"], ["wrist_rgb", "proprio"]])
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


# ---- typed configs and the registry -------------------------------------------------------------------------------
def test_every_registered_kind_has_a_config_an_exporter_and_a_runtime_step():
    for kind, entry in POLICY_TYPES.items():
        assert entry.policy.kind == entry.config.kind == kind and dataclasses.is_dataclass(entry.config)
        assert isinstance(entry.exporter, Exporter)
        assert kind in STEPS  # the torch-free runtime runs the kind's artifact
        assert entry.config.keys()[0] == "obs_keys"


def test_a_misspelt_student_key_is_one_line_listing_the_valid_keys():
    cfg = compose_config(["student=mlp", "student.hiden=[64,64]"])
    with pytest.raises(UserError) as err:
        make_student(cfg.student, META)
    assert str(err.value) == (
        "student=mlp: a gaussian policy has no key 'hiden'; valid keys: obs_keys, hidden, "
        "image_feature_dim, init_log_std, encoder, shift, encoder_options, obs_horizon"
    )
    with pytest.raises(UserError, match="student=diffusion: pred_horizon 15 must be divisible by 2"):
        make_student(compose_config(["student=diffusion", "student.pred_horizon=15"]).student, META)


def test_a_default_not_named_in_the_option_can_be_overridden():
    cfg = compose_config(["student=mlp", "student.hidden=[64,64]"])
    assert "hidden" not in OmegaConf.load(CONF_DIR / "student" / "mlp.yaml")  # the dataclass holds the default
    student = make_student(cfg.student, META)
    assert student.hidden == [64, 64] and student.config["hidden"] == [64, 64]
    assert student.config["image_feature_dim"] == GaussianConfig(obs_keys=["state"]).image_feature_dim


@pytest.mark.parametrize("option", group_options("student"))
def test_student_options_repeat_no_default_of_their_dataclass(option):
    """Defaults are written once: an option keeps its name, its inputs and what differs from its type's defaults."""
    config = student_config(compose_config([f"student={option}"]).student)
    written = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "student" / f"{option}.yaml"))
    defaults = dataclasses.asdict(type(config)(obs_keys=config.obs_keys))
    repeated = {k: v for k, v in written.items() if k in defaults and k != "obs_keys" and defaults[k] == v}
    assert not repeated, f"conf/student/{option}.yaml repeats defaults of {type(config).__name__}: {repeated}"


# `config` dicts as checkpoints written before the typed configs stored them (and before each camera had its own key:
# the image is found by its type in the shape schema, whatever its name)
OLD_META = {
    "obs": {
        "state": {"shape": [6], "type": "low_dim"},
        "rgb": {"shape": [24, 24, 3], "type": "rgb"},
        "proprio": {"shape": [3], "type": "low_dim"},
    },
    "action": {"shape": [2]},
}
OLD_CONFIGS = {
    "gaussian": {
        "kind": "gaussian",
        "shape_meta": OLD_META,
        "obs_keys": ["rgb", "proprio"],
        "hidden": [16],
        "image_feature_dim": 8,
    },
    "diffusion": {
        "kind": "diffusion",
        "shape_meta": OLD_META,
        "obs_keys": ["state"],
        "obs_horizon": 2,
        "pred_horizon": 8,
        "action_horizon": 4,
        "num_train_steps": 100,
        "down_dims": [8, 16],
        "step_embed_dim": 8,
        "kernel": 5,
        "image_feature_dim": 64,
        "noise_levels": "uniform",
        "constant_level_prob": 0.2,
        "gripper_scale": 1.0,
    },
    "vla": {
        "kind": "vla",
        "shape_meta": OLD_META,
        "obs_keys": ["rgb", "proprio", "instruction"],
        "vocab": ["<pad>", "<unk>", "push"],
        "bins": 16,
        "d_model": 16,
        "layers": 1,
        "heads": 2,
        "image_tokens": 4,
        "max_words": 4,
        "temperature": 1.0,
        "shift": 4,
        "label_sigma": 2.0,
    },
}
OLD_CONFIGS["consistency"] = {
    **OLD_CONFIGS["diffusion"],
    "kind": "consistency",
    "t_max": 90,
    "sigma_data": 0.05,
    "alpha_min": 0.5,
}


@pytest.mark.parametrize("kind", list(OLD_CONFIGS))
def test_configs_saved_by_earlier_checkpoints_still_build(kind):
    meta = {**OLD_META, "obs": {**OLD_META["obs"], "instruction": {"shape": [32], "type": "text"}}}
    policy = policies.build_policy({**OLD_CONFIGS[kind], "shape_meta": meta})
    assert policy.kind == kind and isinstance(policy, policies.Policy)
    assert {k: v for k, v in policy.config.items() if k in OLD_CONFIGS[kind]} == {
        **OLD_CONFIGS[kind],
        "shape_meta": meta,
    }
    clone = policies.build_policy(policy.config)  # and what it saves now rebuilds it
    assert clone.config == policy.config


def test_config_values_are_checked_by_the_dataclass():
    with pytest.raises(ConfigError, match="noise_levels must be one of"):
        DiffusionConfig(obs_keys=["state"], noise_levels="loud")
    with pytest.raises(ConfigError, match="a VLA observes camera images \\(e.g. 'front_rgb'\\) and 'instruction'"):
        VLAConfig(obs_keys=["state"])
    meta = {**META, "obs": {**META["obs"], "instruction": {"shape": [32], "type": "text"}}}
    # a privileged token teacher may read the state instead of images
    vla = policies.build_policy(
        {"kind": "vla", "shape_meta": meta, "obs_keys": ["state", "instruction"], "vocab": ["<pad>", "<unk>", "a"]}
    )
    assert vla.images == [] and vla.low_dim == ["state"]
    with pytest.raises(
        ConfigError,
        match="encoder must be stem \\(the keypoint-token stem\\) or one of cnn, keypoints, resnet18, got 'vit'",
    ):
        VLAConfig(obs_keys=["front_rgb", "instruction"], encoder="vit")
    with pytest.raises(ConfigError, match="the stem takes none"):
        VLAConfig(obs_keys=["front_rgb", "instruction"], encoder_options={"num_keypoints": 8})
    with pytest.raises(ConfigError, match="a consistency policy needs obs_keys"):
        ConsistencyConfig.from_dict({"t_max": 5})
    with pytest.raises(ConfigError, match="unknown policy kind 'gausian'; known: gaussian, diffusion"):
        policies.build_policy({"kind": "gausian", "shape_meta": META, "obs_keys": ["state"]})


# ---- camera encoders --------------------------------------------------------------------------------------------
def test_the_image_encoder_is_checked_by_the_config():
    with pytest.raises(ConfigError, match="encoder must be one of cnn, keypoints, resnet18, got 'vit'"):
        GaussianConfig(obs_keys=CAMERAS, encoder="vit")
    with pytest.raises(ConfigError, match="shift must be a whole number of pixels >= 0"):
        DiffusionConfig(obs_keys=CAMERAS, shift=-1)
    with pytest.raises(ConfigError, match="the keypoints image encoder has no option head; its options: channels"):
        GaussianConfig(obs_keys=CAMERAS, encoder="keypoints", encoder_options={"head": "avgpool"})
    with pytest.raises(ConfigError, match="no option shift"):  # the shift is the config's own key
        GaussianConfig(obs_keys=CAMERAS, encoder_options={"shift": 2})
    with pytest.raises(UserError, match="student=cnn: encoder must be one of cnn, keypoints, resnet18"):
        make_student(compose_config(["student=cnn", "student.encoder=vit"]).student, META)


@pytest.mark.parametrize("encoder", ["cnn", "keypoints", "resnet18"])
def test_each_camera_gets_the_chosen_encoder_and_its_options(encoder):
    options = {"width": 8} if encoder == "resnet18" else {}
    student = make_student(
        {
            "kind": "gaussian",
            "obs_keys": [*CAMERAS, "proprio"],
            "encoder": encoder,
            "shift": 2,
            "encoder_options": options,
            "image_feature_dim": 16,
        },
        {**META, "obs": {**META["obs"], **{k: {"shape": [48, 48, 3], "type": "rgb"} for k in CAMERAS}}},
    )
    images = student.encoder.images
    assert set(images) == set(CAMERAS) and images["front_rgb"] is not images["wrist_rgb"]
    assert all(e.name == encoder and e.shift.pad == 2 for e in images.values())
    assert not student.training  # built for acting: no shift until a fit trains it
    a, _ = student.act(_obs_at(48))
    assert a.shape == (5, 2)


def _obs_at(side: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        **{k: rng.integers(0, 255, (5, side, side, 3), dtype=np.uint8) for k in CAMERAS},
        "proprio": _obs()["proprio"],
    }


def test_a_too_small_image_names_the_smallest_size_and_the_task_key():
    with pytest.raises(UserError) as err:
        make_student({"name": "cnn", "kind": "gaussian", "obs_keys": CAMERAS, "encoder": "resnet18"}, META)
    assert "\n" not in str(err.value)
    assert "takes images of at least 33x33 pixels" in str(err.value) and "task.kwargs.image_size=33" in str(err.value)


# a camera encoder's parameters as the CNN of policies/encoders.py (ImageEncoder) named and shaped them, for 24x24
# images and 8 features: checkpoints of camera students trained before the encoders became selectable
OLD_CNN = {
    "conv.0.weight": (32, 3, 5, 5),
    "conv.0.bias": (32,),
    "conv.2.weight": (64, 32, 3, 3),
    "conv.2.bias": (64,),
    "conv.4.weight": (64, 64, 3, 3),
    "conv.4.bias": (64,),
    "head.1.weight": (8, 576),
    "head.1.bias": (8,),
    "head.2.weight": (8,),
    "head.2.bias": (8,),
}


def test_checkpoints_of_the_earlier_cnn_load():
    torch.manual_seed(0)
    old = {f"encoder.images.rgb.{k}": torch.randn(shape) for k, shape in OLD_CNN.items()}
    policy = policies.build_policy(OLD_CONFIGS["gaussian"]).eval()
    assert policy.cfg.encoder == "cnn"
    state = {**policy.state_dict(), **old}
    policy.load_state_dict(state)  # strict: the same names and shapes
    assert torch.equal(policy.encoder.images["rgb"].conv[0].weight, old["encoder.images.rgb.conv.0.weight"])


def test_token_policy_checkpoints_with_the_stem_s_own_softmax_scale_load():
    meta = {**OLD_META, "obs": {**OLD_META["obs"], "instruction": {"shape": [32], "type": "text"}}}
    policy = policies.build_policy({**OLD_CONFIGS["vla"], "shape_meta": meta})
    state = policy.state_dict()
    scale = state.pop("stems.rgb.keypoints.log_scale")
    state["stems.rgb.log_scale"] = torch.full_like(scale, 1.5)  # as KeypointStem stored it before SpatialSoftmax
    policy.load_state_dict(state)
    assert torch.equal(policy.stems["rgb"].keypoints.log_scale, torch.full_like(scale, 1.5))


def test_the_paper_size_image_diffusion_config_builds():
    cfg = compose_config(["student=diffusion_rgb_paper"])
    meta = {**META, "obs": {**META["obs"], **{k: {"shape": [96, 96, 3], "type": "rgb"} for k in CAMERAS}}}
    torch.manual_seed(0)
    student = make_student(cfg.student, meta)
    assert [type(e).__name__ for e in student.encoder.images.values()] == ["ResNet18Encoder"] * 2
    assert type(student.encoder.images["front_rgb"].head[0]).__name__ == "SpatialSoftmax"
    assert student.config["down_dims"] == [512, 1024, 2048]
    rng = np.random.default_rng(0)
    obs = {k: torch.as_tensor(rng.integers(0, 255, (1, 2, 96, 96, 3), dtype=np.uint8)) for k in CAMERAS}
    obs["proprio"] = torch.zeros(1, 2, 3)
    loss, _ = student.imitation_loss(obs, torch.zeros(1, 16, 2))
    assert torch.isfinite(loss)
