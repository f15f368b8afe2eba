"""Shared helpers. The pyramid: unit tests call components; integration tests compose the Hydra config in-process
(`train_run`, as scripts/train.py composes it) and train; a handful of tests run the scripts themselves
(`run_script`) where the script's own behaviour (its `error:` line, exit code, signals) is what is tested."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

os.environ.setdefault("MUJOCO_GL", "egl")
# one torch thread, as training runs (conf: torch_threads=1): on a busy 2-core machine torch's default of one thread
# per core spins against the other processes (an OPD update test took 18 s instead of 2)
torch.set_num_threads(1)

from robodistill.config import compose_config  # noqa: E402  (after MUJOCO_GL is set)
from robodistill.errors import UserError  # noqa: E402
from robodistill.learners.components import make_student  # noqa: E402
from robodistill.observations import obs_mode_for  # noqa: E402
from robodistill.tasks import make_env, shape_meta, task_for_keys  # noqa: E402
from robodistill.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run a repo script in a fresh interpreter, as a user would; a PYTHONPATH in `env` goes before the inherited one
    (replacing it would drop a checkout that is not the installed one)."""
    full_env = {**os.environ, **(env or {})}
    if env and "PYTHONPATH" in env and os.environ.get("PYTHONPATH"):
        full_env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], os.environ["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, **kw
    )


def train_run(*overrides: str, run: Path) -> dict[str, Any]:
    """`scripts/train.py progress=false review=false <overrides> hydra.run.dir=<run>` in this process (the review page: test_review.py); the learner's summary."""
    return train(compose_config(["progress=false", "review=false", *overrides]), run)


def one_clear_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    """The script failed with one clear message (no traceback) that contains every needle."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for n in needles:
        assert n in p.stderr, p.stderr[-3000:]


@contextmanager
def user_error(*needles: str) -> Iterator[pytest.ExceptionInfo]:
    """The block raises an error the entry points print as one `error:` line (a UserError, or an error marked
    `user_facing`), and its message contains every needle: the in-process form of `one_clear_error`."""
    with pytest.raises(Exception) as info:  # noqa: B017  (the type is checked below: any user-facing error)
        yield info
    exc = info.value
    assert isinstance(exc, UserError) or getattr(exc, "user_facing", False), repr(exc)
    for n in needles:
        assert n in str(exc), str(exc)


@pytest.fixture(autouse=True)
def sb3_logs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB3 models a test builds without our run's logger write their (empty) log folder under the test's tmp_path
    instead of a new /tmp/SB3-<date> per test."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3_logs"))


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """write(name, source): a module a config can name (`teacher.target=<name>:<fn>`), importable in this test only."""
    names = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
        names.append(name)

    yield write
    for name in names:
        sys.modules.pop(name, None)  # the next test's module of the same name is imported afresh


def fresh_run(run: Path, task: dict[str, Any], student_cfg: dict[str, Any]) -> Path:
    """A run directory as scripts/train.py leaves it (config.yaml, checkpoints/best.pt) with a freshly initialised
    student of `student_cfg` for `task`, its normalisers fitted to random data so that the exported graphs'
    normalisation is not the identity."""
    keys = student_cfg["obs_keys"]
    env = make_env(task_for_keys(task, keys), obs_mode_for(keys))
    meta = shape_meta(env)
    env.close()
    torch.manual_seed(0)
    student = make_student(student_cfg, meta)
    rng = np.random.default_rng(0)
    lows = {k: rng.normal(size=(64, *v["shape"])) * 2 + 1 for k, v in meta["obs"].items() if v["type"] == "low_dim"}
    if student_cfg["kind"] in ("diffusion", "consistency"):
        student.fit_normalizers(lows, rng.uniform(-0.8, 0.6, (64, student.action_dim)))
    else:
        student.fit_normalizers(lows)
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"policy_config": student.config, "policy": student.state_dict()}, run / "checkpoints" / "best.pt")
    OmegaConf.save(
        OmegaConf.create({"task": task, "algo": {"name": "bc"}, "eval": {"seed": 100000}}), run / "config.yaml"
    )
    return run


def checkpoint_tensors(x: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a checkpoint's nested state, by path: what two runs' checkpoints are compared on."""
    if isinstance(x, torch.Tensor):
        yield prefix, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from checkpoint_tensors(v, f"{prefix}/{k}")
    elif isinstance(x, list | tuple):
        for i, v in enumerate(x):
            yield from checkpoint_tensors(v, f"{prefix}/{i}")
