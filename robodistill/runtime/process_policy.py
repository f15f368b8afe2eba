"""An artifact's policy with its inference in a child process: the control loop's interpreter lock is never held by
onnxruntime's Python side or the sampler's numpy loop, so a long inference cannot stall a tick. Numpy and the
standard library only (and onnxruntime in the child).

    policy = ProcessPolicy(artifact_dir)        # observe() here, plan() in the child
    ControlLoop(policy, robot, rate_hz=100, safety=...).run(duration_s=60)
    policy.close()
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import numpy as np

from robodistill.runtime.artifact import ArtifactPolicy, load_artifact
from robodistill.runtime.control import inference_cpus, register_inference_process, run_below_loop
from robodistill.runtime.monitor import ArtifactScorer
from robodistill.runtime.spawning import main_script_hidden


class InferenceProcessError(RuntimeError):
    """The inference process failed to start or died."""

    user_facing = True


def _serve(path: str, seed: int, threads: int, cpus: set[int] | None, below: int, conn: Any) -> None:
    """The child: load the artifact, then answer ("plan" | "score", id, inputs) with (id, chunk or scores or error)
    until ("stop",)."""
    run_below_loop(cpus, below=below)
    try:
        artifact = load_artifact(path, threads)
        policy = ArtifactPolicy(artifact, seed=seed)
        scorer = ArtifactScorer(artifact, seed) if "monitor" in artifact.contract else None
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message[0] == "stop":
            return
        op, request, inputs = message
        try:
            if op == "score" and scorer is None:
                raise RuntimeError(f"{path} carries no failure monitor")
            conn.send((request, policy.plan(inputs) if op == "plan" else scorer(inputs)))
        except Exception as exc:  # the parent raises it as this request's error
            conn.send((request, f"{type(exc).__name__}: {exc}"))


class ProcessPolicy:
    """`ArtifactPolicy` with `plan` in a child process (spawned; it loads the artifact itself). `observe` (the
    observation history) stays in this process, so the loop calls it every tick at no IPC cost; `plan` sends the
    graph inputs through a pipe and waits for the chunk with the interpreter lock released. `score` asks the child
    for the artifact's failure-monitor scores the same way. The child runs `below` a real-time loop's priority (10
    for inference; a process that only scores runs 20 below), on the CPUs the loop is not pinned to
    (`claim_realtime`)."""

    def __init__(
        self, path: str | Path, seed: int = 0, threads: int = 1, start_timeout_s: float = 60.0, below: int = 10
    ):
        self.local = ArtifactPolicy(load_artifact(path, threads), seed=seed)  # its history and casts; no inference
        self.contract, self.kind, self.obs_keys = self.local.contract, self.local.kind, self.local.obs_keys
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        args = (str(path), seed, threads, inference_cpus(), below, child)
        self._proc = ctx.Process(target=_serve, args=args, daemon=True)
        with main_script_hidden():  # a script without a main guard is not re-run in the child
            self._proc.start()
        child.close()
        register_inference_process(self._proc.pid, below)
        self._lock = threading.Lock()  # one plan at a time; a plan abandoned by a loop is drained by the next
        self._request = 0
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise InferenceProcessError(f"the inference process did not load {path} within {start_timeout_s:g} s")
        status, detail = self._conn.recv()
        if status != "ready":
            self.close()
            raise InferenceProcessError(f"the inference process could not load {path}: {detail}")
        self.warm_up()

    def warm_up(self, calls: int = 5) -> None:
        """A few plans on zero observations of the contract's shapes: a session's first runs are slow, and a
        control loop's first ticks would miss their deadline waiting for them."""
        zeros = {
            k: np.zeros(spec["shape"], dtype=spec.get("dtype", "float32"))
            for k, spec in self.contract["observations"].items()
        }
        monitored = "monitor" in self.contract
        for _ in range(calls):
            inputs = self.local.observe(zeros)
            self.plan(inputs)
            if monitored:
                self.score(inputs)
        self.local.reset()

    def reset(self) -> None:
        """Forget the observation history (the child keeps none)."""
        self.local.reset()

    def observe(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.local.observe(obs)

    def plan(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The chunk (T, A) for graph inputs from `observe`, computed in the child."""
        return self._ask("plan", inputs)

    def score(self, inputs: dict[str, np.ndarray]) -> dict[str, float]:
        """The artifact's failure-monitor scores (`ArtifactScorer`) of graph inputs from `observe`, in the child."""
        return self._ask("score", inputs)

    def _ask(self, op: str, inputs: dict[str, np.ndarray]) -> Any:
        """Send one request to the child and wait for its answer, one request at a time."""
        with self._lock:
            self._request += 1
            request = self._request
            try:
                self._conn.send((op, request, inputs))
                while True:  # answers to requests a loop abandoned come first: skip them
                    answer, out = self._conn.recv()
                    if answer == request:
                        break
            except (EOFError, OSError, BrokenPipeError) as exc:
                raise InferenceProcessError(f"the inference process died (exit code {self._proc.exitcode})") from exc
        if isinstance(out, str):
            raise InferenceProcessError(f"{op} failed in the inference process: {out}")
        return out

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        return self.plan(self.observe(obs))

    def close(self) -> None:
        """Stop the child (it also ends with this process)."""
        try:
            self._conn.send(("stop",))
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()

    def __enter__(self) -> ProcessPolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
