"""Cameras like a real setup: a fixed scene camera `front` and a `wrist` camera on the hand, each its own image key
`<camera>_rgb`; a run renders only the cameras its student and teacher read; two cameras through the collector, an
export and the torch-free runtime, which refuses a missing camera, a wrong image size or dtype, naming each."""

from pathlib import Path

import gymnasium as gym
import h5py
import mujoco
import numpy as np
import pytest
from conftest import fresh_run, user_error

from robodistill.config import compose_config
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter
from robodistill.deploy.deployment import SimRobot, deploy_sim
from robodistill.export.exporter import export_run
from robodistill.learners.components import build
from robodistill.runtime.artifact import ArtifactError, ArtifactPolicy, load_artifact
from robodistill.tasks import env_fns, env_meta, make_env, shape_meta, task_for_keys

ENV_ID = "robodistill/PushCube-v0"
TASK = {"name": "pushcube", "env_id": ENV_ID, "kwargs": {"control_mode": "pd_ee_delta_pos", "image_size": 32}}


def arm_pixels(env: gym.Env, camera: str, size: int) -> np.ndarray:
    """(size, size) True where `camera` sees the arm (any geom of the robot's body tree), by MuJoCo's segmentation
    rendering of the env's current state."""
    base = env.unwrapped
    renderer = mujoco.Renderer(base.model, size, size)
    renderer.enable_segmentation_rendering()
    renderer.update_scene(base.data, camera=camera)
    seg = renderer.render()  # (H, W, 2): object id, object type
    renderer.close()
    geom = seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
    bodies = base.model.geom_bodyid[np.where(geom, seg[..., 0], 0)]
    return geom & (base.model.body_rootid[bodies] == base.model.body("link0").id)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) True where two uint8 images differ by more than 10 in some channel."""
    return np.abs(a.astype(int) - b.astype(int)).max(-1) > 10


def grow(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (anti-aliased edges blend the arm into its neighbours)."""
    out = mask.copy()
    for axis in (0, 1):
        for shift in (-1, 1):
            out |= np.roll(mask, shift, axis)
    return out


def test_the_wrist_camera_moves_with_the_hand():
    """Only the arm moves (up and sideways, over an unmoved cube): the front image changes only where the arm is,
    the wrist image changes all over except where it sees the hand's own fingers, which stay in place."""
    env = gym.make(ENV_ID, obs_mode="rgb", image_size=64)
    before, _ = env.reset(seed=0)
    arm_front, arm_wrist = arm_pixels(env, "front", 64), arm_pixels(env, "wrist", 64)
    for _ in range(4):
        after, *_ = env.step(np.array([0.3, 0.6, 0.8, 1.0], np.float32))
    arm_front |= arm_pixels(env, "front", 64)
    front = changed(before["front_rgb"], after["front_rgb"])
    assert front[~grow(arm_front)].mean() < 0.005 and front.mean() > 0.03  # the arm moved, nothing else
    wrist = changed(before["wrist_rgb"], after["wrist_rgb"])
    assert 0.05 < arm_wrist.mean() < 0.5  # the fingertips are in view...
    assert (arm_wrist == arm_pixels(env, "wrist", 64)).mean() > 0.98  # ...where they were: the camera moved with them
    assert wrist[~grow(arm_wrist)].mean() > max(0.3, 3 * front.mean())  # and the scene beneath them moved a lot
    env.close()


@pytest.mark.parametrize("cameras", [["front"], ["wrist"], ["wrist", "front"], []])
def test_cameras_choose_the_image_keys(cameras):
    env = make_env({"env_id": ENV_ID, "kwargs": {"image_size": 24, "cameras": cameras}}, "rgb")
    obs, _ = env.reset(seed=0)
    images = {f"{c}_rgb" for c in cameras}
    assert set(obs) == images | {"proprio"}
    for k in images:
        assert obs[k].shape == (24, 24, 3) and obs[k].dtype == np.uint8 and obs[k].std() > 5
    meta = shape_meta(env)["obs"]
    assert {k for k, v in meta.items() if v["type"] == "rgb"} == images and meta["proprio"]["type"] == "low_dim"
    assert (env.unwrapped._obs_renderer is None) == (not cameras)  # no camera read: no GL context even
    env.close()


def test_both_cameras_by_default_and_none_rendered_in_state_mode():
    env = gym.make(ENV_ID, obs_mode="rgb+language", image_size=24)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"front_rgb", "wrist_rgb", "proprio", "instruction"}
    assert not np.array_equal(obs["front_rgb"], obs["wrist_rgb"])
    state = gym.make(ENV_ID, obs_mode="state", cameras=["front", "wrist"])
    state.reset(seed=0)
    state.step(state.action_space.sample())
    assert state.unwrapped._obs_renderer is None


def test_an_unknown_camera_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown cameras \['side'\]; this task's cameras: front, wrist"):
        gym.make(ENV_ID, obs_mode="rgb", cameras=["front", "side"])
    with pytest.raises(ValueError, match="a list of camera names"):
        gym.make(ENV_ID, obs_mode="rgb", cameras="front")
    with user_error("unknown cameras ['side']", "this task's cameras: front, wrist"):
        make_env({"env_id": ENV_ID, "kwargs": {"cameras": ["side"]}}, "rgb")
    with user_error("read side_rgb", "has no camera 'side'; its cameras: front, wrist (observation keys front_rgb"):
        task_for_keys(TASK, ["side_rgb", "proprio"])
    with user_error("read wrist_rgb, but task.kwargs.cameras=['front']: add the camera there"):
        task_for_keys({**TASK, "kwargs": {"cameras": ["front"]}}, ["front_rgb", "wrist_rgb"])
    with user_error("task.kwargs.cameras=['side'] names cameras", "its cameras: front, wrist"):
        task_for_keys({**TASK, "kwargs": {"cameras": ["side"]}}, ["state"])
    with user_error("task.kwargs.cameras='front': give a list of cameras"):
        task_for_keys({**TASK, "kwargs": {"cameras": "front"}}, ["front_rgb"])
    # a run whose student reads a camera the task lacks stops before anything is built
    with user_error("read side_rgb", "its cameras: front, wrist"):
        build(compose_config(["student=cnn", "student.obs_keys=[side_rgb,proprio]"]))
    # generic Gymnasium tasks have no cameras of ours: their config is left alone
    assert task_for_keys({"env_id": "Pendulum-v1"}, ["state"]) == {"env_id": "Pendulum-v1"}


def test_a_camera_student_with_a_state_teacher_renders_only_its_cameras(tmp_path):
    cfg = compose_config(["student=cnn", "student.obs_keys=[wrist_rgb,proprio]", "task.kwargs.image_size=24"])
    comps = build(cfg)
    assert comps.task["kwargs"]["cameras"] == ["wrist"] and comps.obs_mode == "state+rgb"
    assert comps.env.unwrapped.cameras == ("wrist",)
    # the collector's envs come from the run's task: the teacher labels from the state, the student drives from the
    # wrist image, and nothing else is rendered or stored
    venv = make_vector_env(env_fns(comps.task, 2, comps.obs_mode))
    assert [e.unwrapped.cameras for e in venv.envs] == [("wrist",)] * 2
    with EpisodeWriter(tmp_path / "d.hdf5", env_meta(comps.env, comps.task, comps.obs_mode)) as writer:
        Collector(venv, comps.teacher, comps.student, writer, seed=0).collect(1, beta=0.0, seed=0, progress=False)
    venv.close()
    with h5py.File(tmp_path / "d.hdf5") as f:
        assert set(f["data/demo_0/obs"]) == {"state", "wrist_rgb", "proprio"}
        assert f["data/demo_0/obs/wrist_rgb"].shape[1:] == (24, 24, 3)
    # a state-only run renders nothing
    comps = build(compose_config(["student=mlp"]))
    assert comps.task["kwargs"]["cameras"] == [] and comps.obs_mode == "state"


@pytest.fixture(scope="module")
def two_camera_artifact(tmp_path_factory) -> Path:
    """A CNN student reading both cameras + proprioception, exported."""
    student = {"kind": "gaussian", "obs_keys": ["front_rgb", "wrist_rgb", "proprio"], "hidden": [32]}
    run = fresh_run(tmp_path_factory.mktemp("runs") / "cnn", TASK, {**student, "image_feature_dim": 16})
    export_run(run, samples=60, progress=False)
    return run / "export_onnx"


def test_two_camera_export_parity_and_deploy(two_camera_artifact, tmp_path):
    artifact = load_artifact(two_camera_artifact)
    contract = artifact.contract
    image = {"shape": [32, 32, 3], "dtype": "uint8", "type": "rgb"}
    assert contract["observations"]["front_rgb"] == contract["observations"]["wrist_rgb"] == image
    assert contract["task"]["kwargs"]["cameras"] == ["front", "wrist"]
    assert contract["parity"]["passed"] and contract["parity"]["max_abs_diff"] <= 1e-4
    robot = SimRobot(contract["task"], list(artifact.observations))  # deploy's stand-in robot renders both
    obs = robot.start_episode(0)
    robot.close()
    artifact.check_robot(obs, 4)
    assert ArtifactPolicy(artifact)(obs).shape == (1, 4)
    # deployed on it through the torch-free runtime at the contract's 20 Hz, both cameras read every tick
    result = deploy_sim(artifact, episodes=1, seed=0, log_dir=tmp_path / "deploy", progress=False)
    assert result["rate_hz"] == 20.0 and result["ticks"] == result["per_episode"][0]["steps"] > 0
    assert result["errors"] == 0
    # a front-only policy's stand-in robot renders the front camera only
    front_only = SimRobot(TASK, ["front_rgb", "proprio"])
    assert front_only.env.unwrapped.cameras == ("front",)
    front_only.close()


def test_the_runtime_refuses_a_missing_camera_a_wrong_size_or_dtype(two_camera_artifact):
    artifact = load_artifact(two_camera_artifact)
    robot = SimRobot(artifact.contract["task"], list(artifact.observations))
    obs = robot.start_episode(0)
    robot.close()
    with pytest.raises(ArtifactError) as info:  # every mismatch named in one message
        artifact.check_robot(
            {"front_rgb": obs["front_rgb"][:16, :16], "wrist_rgb": obs["wrist_rgb"] / 255.0, "proprio": obs["proprio"]},
            4,
        )
    message = str(info.value)
    assert "camera image 'front_rgb' has shape [16, 16, 3], the contract says [32, 32, 3]" in message
    assert "camera image 'wrist_rgb' is float64, the contract says uint8" in message
    with pytest.raises(ArtifactError, match="camera image 'wrist_rgb' is uint16"):  # same kind, still refused
        artifact.check_robot({**obs, "wrist_rgb": obs["wrist_rgb"].astype(np.uint16)}, 4)
    with pytest.raises(ArtifactError) as info:
        artifact.check_robot({"front_rgb": obs["front_rgb"], "proprio": obs["proprio"]}, 4)
    assert (
        "no camera image 'wrist_rgb' (the policy reads the cameras ['front_rgb', 'wrist_rgb'], the robot gives "
        "['front_rgb'])" in str(info.value)
    )
    # the policy server's path refuses a float image instead of casting it to black
    with pytest.raises(ValueError, match="camera image 'front_rgb' is float32, the contract says uint8"):
        ArtifactPolicy(artifact).answer({**obs, "front_rgb": obs["front_rgb"].astype(np.float32)})
