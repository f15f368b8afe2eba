"""Training runs for benchmarks: compose the Hydra config in-process, train, time it; optionally two at a time."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robodistill.config import compose_config
from robodistill.train import train

ROOT = Path(__file__).resolve().parents[2]


def train_once(overrides: Sequence[str], run_dir: Path) -> dict[str, Any]:
    """`scripts/train.py <overrides>` in this process, into `run_dir`; the learner's summary plus wall and CPU time."""
    cfg = compose_config(["progress=false", *overrides])
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = train(cfg, run_dir)
    return {**result, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}


def map_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1) -> list[Any]:
    """fn(*job) for each job, in order; `workers` > 1 runs them in that many spawned processes.

    Only for figures counted in env steps, episodes or network evaluations: wall times of runs sharing the
    machine are not comparable.
    """
    if workers <= 1:
        return [fn(*job) for job in jobs]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def call_job(fn: Callable[..., Any], args: tuple) -> Any:
    """fn(*args): a picklable trampoline, so map_jobs can run jobs that each name their own function."""
    return fn(*args)


def train_many(jobs: Sequence[tuple[Sequence[str], Path]], workers: int = 1) -> list[dict[str, Any]]:
    """Run `train_once` for each (overrides, run_dir), `workers` at a time."""
    return map_jobs(train_once, jobs, workers)


@contextmanager
def served(*overrides: str) -> Iterator[str]:
    """`scripts/serve.py <overrides>` on a free loopback port in a subprocess; yields its ws:// URL once it listens,
    stops it afterwards."""
    with tempfile.TemporaryFile("w+") as errors:
        cmd = [sys.executable, "scripts/serve.py", *overrides, "port=0"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            line = proc.stdout.readline()  # "serving ... on ws://host:port (health: ...)", or EOF if it died
            if " on ws://" not in line:
                proc.wait(30)
                errors.seek(0)
                raise RuntimeError(f"scripts/serve.py did not start: {errors.read()[-2000:]}")
            yield line.split(" on ")[1].split()[0]
        finally:
            proc.terminate()
            proc.wait(30)
