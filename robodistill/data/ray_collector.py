"""`collector.backend=ray`: env-runner actors step the envs, one teacher actor labels for all of them in batches, and
the driver writes every finished episode into the run's dataset as the sync collector does.

- An env runner (Ray actor) holds a vector env of some of the round's env slots and runs the sync collector's own
  loop (`Collector.episodes`) on them with the student's current weights, broadcast once per round through the
  object store; it streams each finished episode back as it finishes.
- The teacher actor builds the run's teacher from its config (on the GPU with `device=cuda`; a `teacher=remote`
  policy server works the same way) and answers the runners' label requests in one batched call: as soon as every
  runner still collecting waits, or `collector.teacher_batch` rows wait, or `collector.teacher_wait_ms` passed since
  the first (a wait longer than a runner's step: with a short one, two runners settle into alternating calls).
- Every episode is a function of its slot (reset seed, beta coin stream, quota; see `robodistill.data.collector`):
  with a deterministic teacher and student, `ray` writes the same episodes as `sync`, in another order.
- A runner that dies mid-round is replaced: its finished episodes are kept, its unfinished ones dropped, and its
  slots run their remaining episodes on the new runner (from fresh reset seeds). The teacher actor is restarted by
  Ray and the request retried (`max_restarts`); past that, one clear error, and `resume=true` continues the run.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from robodistill.data.collector import Collector, EpisodeSource, RoundPlan, make_vector_env
from robodistill.errors import UserError
from robodistill.tasks import env_fns, make_env
from robodistill.teachers import make_teacher
from robodistill.teachers.protocol import OPTIONAL_LABELS, TeacherError, TeacherOutput, query_teacher, reset_episode

RESTARTS = 2  # a dead actor is restarted this often (the teacher by Ray, a runner by the collector) before failing


def import_ray() -> Any:
    """The `ray` module, or one UserError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise UserError("collector.backend=ray needs Ray: pip install 'robodistill[ray]'") from exc
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at `address` (`auto`, `ray://host:port`), or start a local one with `num_cpus` (default:
    this machine's cores); nothing if this process already joined one. Returns the `ray` module."""
    ray = import_ray()
    if not ray.is_initialized():
        quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=int(num_cpus or os.cpu_count() or 1), **quiet)
        except ConnectionError as exc:
            raise UserError(f"cannot join the Ray cluster at ray.address={address}: {exc}") from exc
    return ray


def wait_for_cpus(ray: Any, runners: int, timeout_s: float = 30.0) -> None:
    """Return once the cluster has a free CPU per runner (actors stopped a moment ago free theirs late); a runner
    that could not be placed would wait for ever, so too few CPUs is one UserError."""
    deadline = time.monotonic() + timeout_s
    while (free := ray.available_resources().get("CPU", 0)) < runners:
        total = ray.cluster_resources().get("CPU", 0)
        if runners > total or time.monotonic() > deadline:
            raise UserError(
                f"collector.runners={runners}, but the Ray cluster has {free:g} of {total:g} CPUs free (a runner "
                "takes one): lower collector.runners, or start Ray with more (ray.num_cpus)"
            )
        time.sleep(0.1)


class BatchingTeacher:
    """The run's teacher as one actor: label requests from every runner answered in batched teacher calls."""

    def __init__(
        self,
        teacher_cfg: Mapping[str, Any],
        task: Mapping[str, Any],
        obs_mode: str,
        seed: int,
        device: str,
        max_batch: int,
        max_wait_ms: float,
    ):
        import torch

        torch.set_num_threads(1)
        env = make_env(task, obs_mode)
        try:
            self.teacher = make_teacher(teacher_cfg, env, seed=seed, device=device)
            self.action_dim = int(env.action_space.shape[0])
        finally:
            env.close()
        self.max_batch, self.max_wait_s = int(max_batch), float(max_wait_ms) / 1000.0
        self.active = 1  # runners still collecting this round: a batch with a request from each goes at once
        self.pending: list[tuple[dict[str, np.ndarray], list[int], asyncio.Future]] = []
        self.counts = {"calls": 0, "rows": 0, "requests": 0}

    def set_clients(self, n: int) -> None:
        """A round starts with `n` runners collecting."""
        self.active = int(n)

    def leave(self) -> None:
        """A runner finished its part of the round: the others no longer wait for its requests."""
        self.active -= 1
        if self.pending and len(self.pending) >= self.active:
            self.flush()

    def stats(self) -> dict[str, int]:
        """Teacher calls, rows labelled and requests answered so far."""
        return dict(self.counts)

    async def act(self, obs: dict[str, np.ndarray], slots: list[int], resets: list[int | None] = ()) -> TeacherOutput:
        """Labels for the rows of one runner's request, from a teacher call it may share with other runners; the
        episodes its slots `resets` started since its last request are reset first (no round trip of their own)."""
        for slot in resets:
            reset_episode(self.teacher, slot)
        done = asyncio.get_running_loop().create_future()
        self.pending.append((obs, list(slots), done))
        if len(self.pending) >= max(self.active, 1) or sum(len(s) for _, s, _ in self.pending) >= self.max_batch:
            self.flush()
        elif len(self.pending) == 1:  # the first of a batch: it goes after the wait at the latest
            asyncio.get_running_loop().call_later(self.max_wait_s, self.flush_if_pending, done)
        return await done

    def flush_if_pending(self, first: asyncio.Future) -> None:
        if any(f is first for _, _, f in self.pending):
            self.flush()

    def flush(self) -> None:
        """One teacher call on every waiting request; each gets its own rows (or the call's error)."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        batch = {k: np.concatenate([o[k] for o, _, _ in pending]) for k in pending[0][0]}
        slots = [s for _, ss, _ in pending for s in ss]
        try:
            out = query_teacher(self.teacher, batch, self.action_dim, slots)
        except Exception as exc:  # every waiting runner gets it: the driver raises it once
            for _, _, f in pending:
                f.set_exception(exc)
            return
        self.counts["calls"] += 1
        self.counts["rows"] += len(slots)
        self.counts["requests"] += len(pending)
        start = 0
        for _, ss, f in pending:
            rows = slice(start, start + len(ss))
            fields = {k: getattr(out, k)[rows] for k in OPTIONAL_LABELS if getattr(out, k) is not None}
            f.set_result(TeacherOutput(action=out.action[rows], **fields))
            start += len(ss)


class TeacherClient:
    """The teacher as an env runner sees it: requests to the teacher actor, told each row's env slot. Episode starts
    travel with the next request (an actor call costs ~1.5 ms here: one per episode start would double the calls)."""

    def __init__(self, actor: Any, obs_keys: list[str]):
        self.actor, self.obs_keys = actor, list(obs_keys)
        self.resets: list[int | None] = []

    def submit(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> Any:
        """Send a label request; the runner steps its student while the teacher answers (`result`)."""
        slots = list(range(len(next(iter(obs.values()))))) if slots is None else list(slots)
        resets, self.resets = self.resets, []
        return self.actor.act.remote(obs, slots, resets)

    def result(self, ticket: Any) -> TeacherOutput:
        import ray

        try:
            return ray.get(ticket)
        except ray.exceptions.ActorDiedError as exc:  # Ray restarted it RESTARTS times and retried the request
            why = str(exc).strip().splitlines()[0]
            raise TeacherError(
                f"collector.backend=ray: the teacher actor died and stayed dead after {RESTARTS} restarts ({why}); "
                "resume=true continues the run from its last checkpoint"
            ) from exc

    def act(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> TeacherOutput:
        return self.result(self.submit(obs, slots))

    def reset(self, slot: int | None = None) -> None:
        self.resets.append(slot)


class EnvRunner:
    """Env slots `first_slot`.. of a round in one vector env, stepped by the sync collector's loop."""

    def __init__(
        self,
        task: Mapping[str, Any],
        obs_mode: str,
        num_envs: int,
        first_slot: int,
        teacher: Any,
        teacher_keys: list[str],
        student_deterministic: bool,
    ):
        import torch

        torch.set_num_threads(1)
        self.first_slot = int(first_slot)
        venv = make_vector_env(env_fns(task, num_envs, obs_mode))
        self.collector = Collector(
            venv, TeacherClient(teacher, teacher_keys), None, None, student_deterministic=student_deterministic
        )

    def ready(self) -> bool:
        return True

    def run(self, plan: RoundPlan, student: Any, done: dict[int, int] | None = None):
        """Stream (slot, episode, reported) for each of the plan's episodes these slots run, as they finish."""
        import ray

        self.collector.student = student
        try:
            yield from self.collector.episodes(plan, self.first_slot, done)
        finally:  # the teacher stops waiting for this runner's requests (unless it is what failed)
            try:
                ray.get(self.collector.teacher.actor.leave.remote())
            except ray.exceptions.RayActorError:
                pass


class RayCollector(EpisodeSource):
    """The sync `Collector`'s interface (`collect`, `writer`, `state_dict`, `close`) over Ray actors: each round's
    episodes are the same per slot, streamed from the runners and written here as each arrives."""

    def __init__(
        self,
        task: Mapping[str, Any],
        obs_mode: str,
        teacher_cfg: Mapping[str, Any],
        teacher_keys: list[str],
        student: Any | None,
        num_envs: int,
        runners: int,
        seed: int = 0,
        student_deterministic: bool = True,
        device: str = "cpu",
        teacher_batch: int = 256,
        teacher_wait_ms: float = 50.0,
        address: str | None = None,
        num_cpus: int | None = None,
        shared_teacher: bool = True,
    ):
        if runners < 1 or num_envs < runners:
            raise UserError(f"collector.runners={runners} needs 1 <= runners <= collector.num_envs={num_envs}")
        self.ray = ray = start_ray(address, num_cpus)
        wait_for_cpus(ray, runners)
        self.writer: Any = None
        self.student, self.num_envs, self.student_deterministic = student, int(num_envs), student_deterministic
        self.task, self.obs_mode, self.teacher_keys = dict(task), obs_mode, list(teacher_keys)
        self.rng = np.random.default_rng(seed)
        gpu = 1 if str(device).startswith("cuda") else 0
        # one teacher actor for every runner (its calls batch their requests), or one per runner (for comparison)
        teacher = ray.remote(BatchingTeacher).options(
            num_cpus=0, num_gpus=gpu, max_restarts=RESTARTS, max_task_retries=RESTARTS
        )
        args = (dict(teacher_cfg), self.task, obs_mode, seed, str(device), teacher_batch, teacher_wait_ms)
        self.teachers = [teacher.remote(*args) for _ in range(1 if shared_teacher else runners)]
        sizes = [num_envs // runners + (r < num_envs % runners) for r in range(runners)]
        self.slots = [(sum(sizes[:r]), n) for r, n in enumerate(sizes)]  # (first slot, envs) per runner
        self.runners = [self._runner(r) for r in range(runners)]
        try:
            ray.get([r.ready.remote() for r in self.runners])
        except ray.exceptions.RayError as exc:
            self.close()
            raise unwrap(exc) from exc
        self.replaced = 0  # runners replaced after dying

    def _runner(self, r: int) -> Any:
        """Runner r: its env slots, labelled by the shared teacher actor (or its own)."""
        first, n = self.slots[r]
        teacher = self.teachers[r % len(self.teachers)]
        return (
            self.ray.remote(EnvRunner)
            .options(num_cpus=1)
            .remote(self.task, self.obs_mode, n, first, teacher, self.teacher_keys, self.student_deterministic)
        )

    def stream(self, plan: RoundPlan) -> Iterator[tuple[int, dict[str, Any], bool]]:
        """The runners' episodes as they arrive (a `min_steps` plan split over the runners by their share of the
        envs); a runner that dies is replaced and its slots finish their quotas on the new one."""
        ray = self.ray
        student = ray.put(self.student)  # the student's current weights, once per round for every runner
        per_teacher = len(self.runners) // len(self.teachers)
        ray.get([t.set_clients.remote(per_teacher) for t in self.teachers])
        done: dict[int, int] = {}  # episodes finished per slot
        results: queue.Queue = queue.Queue()

        def stream_runner(r: int, restart: bool) -> None:
            """Feed runner r's episodes into `results`; its death or error ends the stream with it."""
            first, n = self.slots[r]
            try:
                p = plan if plan.min_steps is None else replace(plan, min_steps=-(-plan.min_steps * n // plan.num_envs))
                if restart:  # fresh reset seeds: the dead runner's envs took the planned ones
                    p = replace(p, seed=p.seed + 7919 * (self.replaced + 1))
                call = self.runners[r].run.options(num_returns="streaming")
                for ref in call.remote(p, student, dict(done) if restart else None):
                    results.put(("episode", r, ray.get(ref)))
                results.put(("done", r, None))
            except Exception as exc:  # reported by the loop below
                results.put(("error", r, exc))

        for r in range(len(self.runners)):
            threading.Thread(target=stream_runner, args=(r, False), daemon=True).start()
        running = len(self.runners)
        while running:
            kind, r, item = results.get()
            if kind == "episode":
                done[item[0]] = done.get(item[0], 0) + 1
                yield item
            elif kind == "done":
                running -= 1
            elif isinstance(item, ray.exceptions.ActorDiedError) and self.replaced < RESTARTS * len(self.runners):
                self.replaced += 1  # a dead runner: a new one runs its slots' remaining episodes
                self.runners[r] = self._runner(r)
                threading.Thread(target=stream_runner, args=(r, True), daemon=True).start()
            else:
                raise unwrap(item) from item

    def teacher_stats(self) -> dict[str, int]:
        """The teacher actors' calls, rows and requests so far (summed)."""
        counts = self.ray.get([t.stats.remote() for t in self.teachers])
        return {k: sum(c[k] for c in counts) for k in counts[0]}

    def state_dict(self) -> dict[str, Any]:
        """The round-key stream (as the sync collector's); a teacher's own RNG lives in its actor and is not saved."""
        return {"coins": self.rng.bit_generator.state, "teacher": []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["coins"]

    def close(self) -> None:
        """Stop the actors (the Ray runtime stays up for the process's next collector)."""
        for actor in [*getattr(self, "runners", []), *getattr(self, "teachers", [])]:
            self.ray.kill(actor)
        self.runners, self.teachers = [], []


def unwrap(exc: BaseException) -> BaseException:
    """The error to report for a failed Ray call: the user-facing error raised inside an actor (a TeacherError, a
    UserError), else one line saying which actor failed and why."""
    cause = getattr(exc, "cause", None)
    while cause is not None and getattr(cause, "cause", None) is not None:  # a teacher error seen through a runner
        cause = cause.cause
    if isinstance(cause, UserError) or getattr(cause, "user_facing", False):
        return cause
    detail = " ".join(str(cause or exc).split())[-500:]
    return TeacherError(f"collector.backend=ray: a collection actor failed: {type(cause or exc).__name__}: {detail}")
