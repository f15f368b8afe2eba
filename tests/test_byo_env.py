"""Bring your own env: a package that registers its ids on import, used through `task.imports` (or `pkg:Env-id`)
by training and by every script that rebuilds the task; its own success key, no success at all, a reset that
ignores the seed, ids gymnasium can only make as vector envs."""

import json
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from conftest import run_script, train_run, user_error

from robodistill.evaluation.rollouts import evaluate, teacher_policy
from robodistill.evaluation.video import Filming
from robodistill.rundir import RunDir
from robodistill.tasks import make_env
from robodistill.teachers import CallableTeacher

# A point that moves toward a goal: obs = (position, goal), action = velocity. Success is reported under
# `is_success` (SB3's and RL Zoo's key); `variant` changes what the env reports.
PACKAGE = textwrap.dedent(
    """
    import gymnasium as gym
    import numpy as np
    from gymnasium import spaces


    class PointGoal(gym.Env):
        def __init__(self, variant="is_success", speed=0.2):
            self.variant, self.speed = variant, speed
            self.observation_space = spaces.Box(-2.0, 2.0, (4,), np.float32)
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.rng = np.random.default_rng()  # only the seed-ignoring variant draws from this one

        def reset(self, *, seed=None, options=None):
            if self.variant == "ignores_seed":  # never seeds: draws from np_random, left as it is
                self.pos, self.goal = self.np_random.uniform(-1, 1, 2), self.np_random.uniform(-1, 1, 2)
            else:
                super().reset(seed=seed)
                self.pos, self.goal = self.np_random.uniform(-1, 1, 2), self.np_random.uniform(-1, 1, 2)
            return self._obs(), {}

        def _obs(self):
            return np.concatenate([self.pos, self.goal]).astype(np.float32)

        def step(self, action):
            self.pos = np.clip(self.pos + self.speed * np.clip(action, -1, 1), -2, 2)
            dist = float(np.linalg.norm(self.pos - self.goal))
            info = {} if self.variant == "no_success" else {"is_success": dist < 0.1}
            return self._obs(), -dist, False, False, info


    def expert(obs):  # batched
        return np.clip((obs[:, 2:] - obs[:, :2]) / 0.2, -1, 1)


    def expert_one(obs):  # one observation at a time
        return np.clip((obs[2:] - obs[:2]) / 0.2, -1, 1)


    gym.register("PointGoal-v0", entry_point=PointGoal, max_episode_steps=30)
    gym.register("PointGoalNoSuccess-v0", entry_point=PointGoal, kwargs={"variant": "no_success"}, max_episode_steps=30)
    gym.register("PointGoalIgnoresSeed-v0", entry_point=PointGoal, kwargs={"variant": "ignores_seed"}, max_episode_steps=30)
    gym.register("PointGoalVectorOnly-v0", vector_entry_point="point_envs:PointGoal")
    """
)

TINY = (
    "algo.rounds=2",
    "algo.updates_per_round=30",
    "algo.episodes_per_round=4",
    "algo.eval_every=1",
    "eval.episodes=4",
    "eval.num_envs=2",
    "eval.videos=0",
    "collector.num_envs=2",
    "teacher=callable",
    "teacher.target=point_envs:expert",
)


@pytest.fixture
def point_envs(user_module, tmp_path):
    """The package `point_envs`, importable in this test and by scripts run with PYTHONPATH=<its folder>; its ids
    are not registered until something imports it (and are unregistered after the test)."""
    before = set(gym.registry)
    user_module("point_envs", PACKAGE)
    yield {"PYTHONPATH": str(tmp_path)}
    for env_id in set(gym.registry) - before:
        del gym.registry[env_id]


def test_an_env_package_named_in_task_imports_is_imported_before_the_env_is_made(point_envs, tmp_path):
    run = tmp_path / "run"
    overrides = ("task=gym", "task.imports=[point_envs]", "task.env_id=PointGoal-v0", "task.success_key=is_success")
    summary = train_run(*overrides, *TINY, run=run)
    assert isinstance(summary["success_rate"], float)  # the task reports success under is_success
    saved = RunDir(run).config().task
    assert list(saved.imports) == ["point_envs"]
    # every script that rebuilds the task honours it: scripts/evaluate.py in a fresh interpreter, which has not
    # imported point_envs (its teacher module is not on the command line)
    p = run_script("scripts/evaluate.py", str(run), "--episodes", "2", "--videos", "0", env=point_envs)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["episodes"] == 2


def test_module_colon_id_and_new_kwargs_without_plus(point_envs, tmp_path):
    run = tmp_path / "run"
    train_run("task=gym", "task.env_id=point_envs:PointGoal-v0", "task.kwargs.speed=0.3", *TINY, run=run)
    env = make_env(RunDir(run).config().task)
    assert env.unwrapped.speed == 0.3
    with user_error("cannot make PointGoal-v0", "colour"):
        make_env({"env_id": "point_envs:PointGoal-v0", "kwargs": {"colour": "red"}})


def test_success_is_any_step_of_the_episode_from_the_configured_key(point_envs):
    task = {"env_id": "PointGoal-v0", "imports": ["point_envs"], "success_key": "is_success"}
    env = make_env(task)
    env.reset(seed=0)
    goal = env.unwrapped.goal
    env.unwrapped.pos = goal.copy()
    assert env.step(np.zeros(2))[4]["success"] is True
    assert env.step(np.ones(2))[4]["success"] is True  # moved away: the episode has still succeeded
    assert "success" not in env.reset(seed=1)[1]  # a new episode has not succeeded yet
    result = evaluate(teacher_policy(CallableTeacher(_expert())), task, "state", episodes=4, seed=0, num_envs=2)
    assert result["success_rate"] == 1.0
    # the env's "is_success" is not "success": under the default key the task reports no success
    result = evaluate(teacher_policy(CallableTeacher(_expert())), task | {"success_key": "success"}, "state", 2, 0)
    assert result["success_rate"] is None and all(e["success"] is None for e in result["per_episode"])


def _expert():
    import point_envs  # noqa: PLC0415  (the fixture puts it on the path)

    return point_envs.expert


def test_a_task_without_success_is_summarised_and_checkpointed_by_its_return(point_envs, tmp_path):
    run = tmp_path / "run"
    summary = train_run("task=gym", "task.imports=[point_envs]", "task.env_id=PointGoalNoSuccess-v0", *TINY, run=run)
    assert "success_rate" not in summary and summary["return_mean"] < 0
    result = json.loads((run / "eval.json").read_text())
    assert result["success_rate"] is None and result["return_mean"] == summary["return_mean"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval/return_mean" in x]
    assert evals and not any("eval/success_rate" in x for x in lines)
    assert (run / "checkpoints" / "best.pt").exists()


def test_an_env_that_ignores_the_seed_is_reported_and_reseeded(point_envs, capsys):
    task = {"env_id": "PointGoalIgnoresSeed-v0", "imports": ["point_envs"], "success_key": "is_success"}
    policy = teacher_policy(CallableTeacher(_expert()))
    first = evaluate(policy, task, "state", episodes=3, seed=5, num_envs=2, progress=False)
    assert "ignores reset(seed=...)" in capsys.readouterr().err
    again = evaluate(policy, task, "state", episodes=3, seed=5, num_envs=2, progress=False)
    assert first["seed_reproducible"] is False
    # reseeding its np_random per episode made the episodes repeatable after all
    assert [e["return"] for e in first["per_episode"]] == [e["return"] for e in again["per_episode"]]
    seeded = evaluate(policy, {**task, "env_id": "PointGoal-v0"}, "state", episodes=2, seed=5, progress=False)
    assert seeded["seed_reproducible"] is True


def test_bad_env_ids_get_one_clear_error(point_envs, tmp_path):
    with user_error("unknown task 'PointGoal-v0'", "task.imports=[<package>]"):
        make_env({"env_id": "PointGoal-v0"})  # registered only once point_envs is imported
    with user_error("registered only as a vector env"):
        make_env({"env_id": "PointGoalVectorOnly-v0", "imports": ["point_envs"]})
    with user_error("cannot import env package 'no_such_envs'", "ModuleNotFoundError"):
        make_env({"env_id": "Foo-v0", "imports": ["no_such_envs"]})
    with user_error("task=gym needs task.env_id"):
        make_env({"env_id": "???"})
    p = run_script("scripts/train.py", "task=gym", f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "???" not in p.stderr, p.stderr[-2000:]
    assert "task.env_id=<Pusher-v5" in p.stderr


def test_an_env_that_cannot_render_is_evaluated_without_videos(point_envs, tmp_path, capsys):
    task = {"env_id": "PointGoal-v0", "imports": ["point_envs"], "success_key": "is_success"}
    policy = teacher_policy(CallableTeacher(_expert()))
    result = evaluate(
        policy, task, "state", 2, 0, video_dir=tmp_path / "videos", filming=Filming(videos=1), progress=False
    )
    assert "warning: cannot film PointGoal-v0" in capsys.readouterr().err  # it takes no render_mode
    assert result["videos"] == [] and result["success_rate"] == 1.0


def test_export_and_deploy_rebuild_the_task_from_the_saved_imports(point_envs, tmp_path):
    run = tmp_path / "run"
    train_run("task=gym", "task.imports=[point_envs]", "task.env_id=PointGoal-v0", *TINY, run=run)
    out = tmp_path / "artifact"
    # each script in a fresh interpreter that has imported nothing of point_envs: only the run's config names it
    args = ("scripts/export.py", f"run={run}", f"out={out}", "samples=50", "progress=false")
    p = run_script(*args, env=point_envs)  # the env states no rate (no render_fps, no dt): asked for, nothing written
    assert p.returncode == 2 and "rate_hz=<Hz>" in p.stderr and "Traceback" not in p.stderr and not out.exists()
    p = run_script(*args, "rate_hz=20", env=point_envs)
    assert p.returncode == 0, p.stderr[-2000:]
    contract = json.loads((out / "contract.json").read_text())
    assert contract["task"]["imports"] == ["point_envs"] and contract["control_rate_hz"] == 20.0
    p = run_script(
        "scripts/deploy.py", f"artifact={out}", "episodes=1", "rate_hz=200", "progress=false", env=point_envs
    )
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout)
    assert result["task"] == "PointGoal-v0" and result["episodes"] == 1 and result["ticks"] >= 30
