"""Teachers users bring: an SB3 / RL Zoo expert trained inside VecNormalize (its statistics found and applied), a
teacher for other spaces refused before collection, and a function that takes one observation at a time."""

import logging
import pickle
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import user_error
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from robodistill.config import compose_config, to_dict
from robodistill.tasks import make_env
from robodistill.teachers import CallableTeacher, ImperfectTeacher, check_teacher, make_teacher
from robodistill.teachers.sb3 import find_vecnormalize

PENDULUM = {"env_id": "Pendulum-v1"}  # observations (3,), actions (1,)


def train_tiny(env_id: str, steps: int, folder: Path, name: str) -> tuple[PPO, VecNormalize]:
    """A PPO model trained `steps` steps inside VecNormalize, saved as folder/name."""
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(env_id)]))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    model.learn(steps)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / name)
    return model, venv


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """An RL Zoo run folder, logs/ppo/Pendulum-v1_1/: best_model.zip (earlier), Pendulum-v1.zip (final),
    Pendulum-v1/vecnormalize.pkl; and beside it other/ (a MountainCarContinuous model, (2,) observations)."""
    logs = tmp_path_factory.mktemp("logs")
    run = logs / "ppo" / "Pendulum-v1_1"
    model, venv = train_tiny("Pendulum-v1", 128, run, "best_model.zip")
    model.learn(128, reset_num_timesteps=False)
    model.save(run / "Pendulum-v1.zip")
    (run / "Pendulum-v1").mkdir()
    venv.save(run / "Pendulum-v1" / "vecnormalize.pkl")
    _, other = train_tiny("MountainCarContinuous-v0", 64, logs / "other", "model.zip")
    other.save(logs / "other" / "vecnormalize.pkl")
    return run


@pytest.fixture(scope="module")
def env():
    return make_env(PENDULUM, "state")


@pytest.fixture(scope="module")
def obs(env) -> np.ndarray:
    return np.stack([env.reset(seed=i)[0] for i in range(6)])  # (6, 3)


def normalised_predictions(model_zip: Path, stats_file: Path, obs: np.ndarray) -> np.ndarray:
    """What the model does in training: SB3's own VecNormalize.load + normalize_obs, then a deterministic predict."""
    stats = VecNormalize.load(str(stats_file), DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    stats.training = False
    return PPO.load(model_zip, device="cpu").predict(stats.normalize_obs(obs), deterministic=True)[0]


def test_rl_zoo_folder_finds_and_applies_its_vecnormalize(zoo, env, obs, caplog):
    stats = zoo / "Pendulum-v1" / "vecnormalize.pkl"
    for path, which, model_zip in [
        (zoo, "best", zoo / "best_model.zip"),
        (zoo, "last", zoo / "Pendulum-v1.zip"),
        (zoo / "Pendulum-v1.zip", "best", zoo / "Pendulum-v1.zip"),  # the zip itself: its run folder's statistics
    ]:
        with caplog.at_level(logging.INFO, logger="robodistill.teachers.sb3"):
            teacher = make_teacher({"kind": "sb3", "path": str(path), "checkpoint": which}, env)
        assert teacher.name == str(model_zip) and f"observations normalised by {stats}" in repr(teacher)
        assert str(stats) in caplog.text  # the log line says which statistics were applied
        out = teacher.act({"state": obs})
        np.testing.assert_allclose(out.action, normalised_predictions(model_zip, stats, obs), atol=1e-6)
        assert out.std is not None and out.mean.shape == (6, 1)
    check_teacher(teacher, env)


def test_vecnormalize_explicit_file_or_off(zoo, env, obs):
    stats, final = zoo / "Pendulum-v1" / "vecnormalize.pkl", zoo / "Pendulum-v1.zip"
    expected = normalised_predictions(final, stats, obs)
    moved = zoo.parent / "elsewhere.pkl"
    shutil.copy(stats, moved)
    teacher = make_teacher({"kind": "sb3", "path": str(final), "vecnormalize": str(moved)}, env)
    assert str(moved) in repr(teacher)
    np.testing.assert_allclose(teacher.act({"state": obs}).action, expected, atol=1e-6)

    raw = PPO.load(final, device="cpu").predict(obs, deterministic=True)[0]
    assert not np.allclose(raw, expected, atol=1e-3)  # the statistics matter for this model
    cfg = compose_config(["teacher=sb3", f"teacher.path={final}", "teacher.vecnormalize=null"])
    for off in (to_dict(cfg.teacher), {"kind": "sb3", "path": str(final), "vecnormalize": "none"}):
        teacher = make_teacher(off, env)
        assert "no observation normalisation" in repr(teacher)
        np.testing.assert_allclose(teacher.act({"state": obs}).action, raw, atol=1e-6)


def test_bad_vecnormalize_files_are_one_clear_error(zoo, env, tmp_path):
    final = zoo / "Pendulum-v1.zip"
    real = (zoo / "Pendulum-v1" / "vecnormalize.pkl").read_bytes()
    for name, content, needle in [
        ("garbage.pkl", b"garbage", "cannot read observation statistics"),
        ("truncated.pkl", real[: len(real) // 2], "cannot read observation statistics"),
        ("a_dict.pkl", pickle.dumps({"obs_rms": None}), "holds a dict, not the statistics VecNormalize.save writes"),
    ]:
        (tmp_path / name).write_bytes(content)
        with user_error(str(tmp_path / name), needle) as info:
            make_teacher({"kind": "sb3", "path": str(final), "vecnormalize": str(tmp_path / name)}, env)
        assert "\n" not in str(info.value)
    with user_error("teacher.vecnormalize file", "does not exist"):
        make_teacher({"kind": "sb3", "path": str(final), "vecnormalize": str(tmp_path / "missing.pkl")}, env)
    # statistics of another run: both shapes named
    with user_error("observations of shape (2,)", "the SB3 model expects (3,)"):
        make_teacher(
            {"kind": "sb3", "path": str(final), "vecnormalize": str(zoo.parents[1] / "other" / "vecnormalize.pkl")}, env
        )


def test_a_teacher_for_other_spaces_is_refused_before_collection(zoo, env):
    other = zoo.parents[1] / "other" / "model.zip"  # its own vecnormalize.pkl beside it fits it: the task does not
    with user_error(
        "teacher=sb3 model expects observations of shape (2,) and actions (1,)",
        "task Pendulum-v1 gives (3,) and takes (1,)",
    ):
        make_teacher({"kind": "sb3", "path": str(other)}, env)


def test_where_auto_looks_for_vecnormalize(tmp_path):
    def found(zip_path: Path, *files: str) -> Path | None:
        shutil.rmtree(tmp_path / "f", ignore_errors=True)
        for f in (zip_path.name, *files):
            (tmp_path / "f" / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "f" / f).touch()
        got = find_vecnormalize(tmp_path / "f" / zip_path.name)
        return got and got.relative_to(tmp_path / "f")

    # a CheckpointCallback checkpoint: its own statistics first
    ckpt = Path("rl_model_500_steps.zip")
    assert found(ckpt, "rl_model_vecnormalize_500_steps.pkl", "vecnormalize.pkl") == Path(
        "rl_model_vecnormalize_500_steps.pkl"
    )
    assert found(Path("Hopper-v5.zip"), "vec_normalize.pkl") == Path("vec_normalize.pkl")  # the Hugging Face hub's
    assert found(Path("Hopper-v5.zip"), "Hopper-v5/vecnormalize.pkl") == Path("Hopper-v5/vecnormalize.pkl")
    assert found(Path("model.zip"), "other/vecnormalize.pkl") is None  # not a folder named for the model: not ours
    assert found(Path("model.zip")) is None


def per_observation_module(user_module) -> None:
    user_module(
        "my_expert",
        "import numpy as np\n"
        "def act(obs):  # one observation (3,) -> one action (1,)\n"
        "    return -obs[2:3]\n"
        "def act_dict(obs):\n"
        "    return np.array([obs['state'][2] + obs['goal'][0]])\n",
    )


def test_an_unbatched_callable_teacher(user_module, env, obs):
    per_observation_module(user_module)
    import my_expert

    out = CallableTeacher(my_expert.act, ["state"], batched=False).act({"state": obs})
    np.testing.assert_array_equal(out.action, -obs[:, 2:3])
    goal = np.arange(6, dtype=np.float32)[:, None]
    out = CallableTeacher(my_expert.act_dict, ["state", "goal"], batched=False).act({"state": obs, "goal": goal})
    np.testing.assert_allclose(out.action, obs[:, 2:3] + goal)

    cfg = compose_config(["teacher=callable", "teacher.target=my_expert:act", "teacher.batched=false"])
    teacher = make_teacher(to_dict(cfg.teacher), env)
    assert check_teacher(teacher, env).action.shape == (1, 1)
    with user_error("teacher.batched must be true or false"):
        make_teacher({"kind": "callable", "target": "my_expert:act", "batched": "no"}, env)


def test_a_per_observation_function_used_batched_hints_at_batched_false(user_module, env):
    per_observation_module(user_module)
    teacher = make_teacher({"kind": "callable", "target": "my_expert:act"}, env)  # batched: true by default
    with user_error("teacher returned actions of shape (0, 3)", "set teacher.batched=false"):
        check_teacher(teacher, env)
    with user_error("set teacher.batched=false"):  # through a wrapper as well
        check_teacher(ImperfectTeacher(teacher, noise_std=0.1), env)
