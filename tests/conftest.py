import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run a repo script in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, **kw
    )


@pytest.fixture
def train_cli():
    def _run(*overrides: str, env: dict | None = None, timeout: float = 300):
        return run_script("scripts/train.py", "progress=false", *overrides, env=env, timeout=timeout)

    return _run


def one_clear_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    """The run failed with one clear message (no traceback) that contains every needle."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for n in needles:
        assert n in p.stderr, p.stderr[-3000:]
