"""The rounds-of-collection helper for learners that refit on the states their student visits (dagger, opd,
on-policy consistency): the vector envs, the collector and the run's dataset, the per-round seeds, evaluation
every `algo.eval_every` rounds with best.pt, the round's checkpoint, and resuming all of it exactly.

A round's checkpoint (checkpoints/last.pt) is written after its update. It stores the number of demos on disk
then (the writer is synced first: all of them are complete) and the collector's RNG streams; the run's global RNG
states (torch: student sampling, diffusion noise) are saved by every checkpoint. A resumed run marks the demos a
killed run wrote after that checkpoint orphaned (kept on disk, out of training) before anything reads the
dataset, and restores the collector, so it collects and trains on the same episodes as the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from robodistill.config import to_dict
from robodistill.data.collector import CollectStats
from robodistill.data.dataset import BackgroundEpisodeWriter, mark_orphans
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import headline, score
from robodistill.learners.components import make_collector
from robodistill.learners.schedules import StudentHorizon
from robodistill.learners.services import Services, policy_state
from robodistill.observations import obs_mode_for
from robodistill.tasks import env_meta, make_env, shape_meta, task_for_keys
from robodistill.teachers import check_teacher, make_teacher, teacher_obs_keys


class Rounds:
    """`for r in rounds:` runs rounds `algo.rounds` times (from the one after the checkpoint's, when resuming);
    `collect` a round's episodes, `end` it (evaluate, log, checkpoint), `finish` the run. A context manager: the
    envs and the episode writer close on exit."""

    def __init__(
        self,
        services: Services,
        ckpt: dict[str, Any] | None,
        driver: Any,
        student_deterministic: bool,
        tasks: Sequence[Mapping[str, Any]] = (),
    ):
        """`driver` acts as the student in the collector (a policy, or a runner of one); `ckpt` is the checkpoint
        the run resumes from (None: a fresh run, whose dataset is started anew). `tasks`: other tasks whose
        episodes each round also collects, `algo.episodes_per_round` each, every task labelled by its own teacher
        (the run's teacher config made for that task's env: a router's route) in its own vector env."""
        if ckpt is not None and "dataset_demos" not in ckpt:
            raise UserError(
                f"{services.run.checkpoint_path('last')} was written before runs resumed exactly (it does not count "
                "its dataset's demos): start a fresh run in a new directory"
            )
        cfg, comps = services.cfg, services.comps
        a = cfg.algo
        self.services, self.resumed = services, ckpt is not None
        self.num_rounds, self.episodes, self.eval_every = int(a.rounds), int(a.episodes_per_round), int(a.eval_every)
        try:
            self.horizon = StudentHorizon(**cfg.collector.student_horizon)
            self.horizon(0, self.num_rounds, comps.env.spec.max_episode_steps if comps.env.spec else None)
        except (TypeError, ValueError) as exc:
            raise UserError(f"collector.student_horizon: {exc}") from exc
        self.seed, self.dataset = int(cfg.seed), services.run.dataset_path
        if ckpt is not None and self.dataset.exists():  # first, before anything reads the dataset: what was
            mark_orphans(self.dataset, keep=ckpt["dataset_demos"])  # written after the checkpoint
        self.env_args = env_meta(comps.env, comps.task, comps.obs_mode)
        self.collector = make_collector(
            cfg, comps.task, comps.obs_mode, comps.teacher, driver, self.seed, student_deterministic, comps.device
        )
        self.collectors = [(str(comps.task["env_id"]), self.collector)]  # the run's task first
        for k, task in enumerate(tasks, start=1):
            task, obs_mode, teacher = task_collection(services, task, driver)
            seed = self.seed + 7919 * k
            collector = make_collector(cfg, task, obs_mode, teacher, driver, seed, student_deterministic, comps.device)
            self.collectors.append((str(task["env_id"]), collector))
        self.writer: BackgroundEpisodeWriter | None = None
        self.start, self.labels, self.best = 0, 0, -float("inf")  # first round, labels so far, best eval score
        self.collected: dict[str, Any] = {}  # the last round's beta, label count and collection stats
        if ckpt is not None:
            self.start, self.labels, self.best = ckpt["round"] + 1, ckpt["labels"], ckpt["best_success"]
            try:
                self.collector.load_state_dict(ckpt["collector_rng"])
                for (_, c), state in zip(self.collectors[1:], ckpt.get("task_collector_rngs", []), strict=True):
                    c.load_state_dict(state)
            except ValueError as exc:
                self.close()
                raise UserError(
                    f"cannot resume with this teacher: {exc} (resume with the run's teacher config)"
                ) from exc

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.num_rounds))

    def collect(self, r: int, beta: float, on_episode: Callable[[dict[str, Any]], None]) -> CollectStats:
        """Round `r`'s `algo.episodes_per_round` episodes (of each task) with the teacher acting with probability
        `beta` (per env, per step; always past the round's `collector.student_horizon`), each written to the dataset
        (tagged with its round and task) and handed to `on_episode` as it finishes."""
        if self.writer is None:  # opened now, not before: the learner may first read the checkpointed episodes
            self.writer = BackgroundEpisodeWriter(self.dataset, self.env_args, append=self.resumed)
        spec = self.services.comps.env.spec
        horizon = self.horizon(r, self.num_rounds, spec.max_episode_steps if spec else None)
        parts = []
        for k, (env_id, collector) in enumerate(self.collectors):
            collector.writer = self.writer
            name = "" if len(self.collectors) == 1 else f"{env_id.split('/')[-1]} "
            stats = collector.collect(
                self.episodes,
                beta,
                seed=self.seed * 100_003 + r * 1_000 + 100 * k,  # the run's task: the seeds of a one-task run
                on_episode=on_episode,
                progress=self.services.progress,
                desc=f"round {r} {name}collect (beta={beta:.2f}{'' if horizon is None else f', horizon {horizon}'})",
                student_horizon=horizon,
                episode_attrs={"round": r, "task": env_id},
            )
            parts.append((env_id, stats))
        stats = CollectStats.combined([p for _, p in parts])
        self.labels += stats.steps
        per_task = (
            {} if len(parts) == 1 else {f"collect/{e.split('/')[-1]}/success_rate": p.success_rate for e, p in parts}
        )
        self.collected = {
            "beta": beta,
            **({} if horizon is None else {"student_horizon": horizon}),
            "teacher_labels": self.labels,
            **{f"collect/{k}": v for k, v in stats.as_dict().items()},
            **per_task,
        }
        return stats

    def replayed(self, r: int, states: int) -> None:
        """Round `r` trained on `states` new cached states (a teacher cache) instead of collecting: no episode is
        collected and no teacher is asked; the label count grows by them."""
        self.labels += states
        self.collected = {"teacher_labels": self.labels, "cache/states": states, "collect/teacher_calls": 0}

    def end(self, r: int, policy: torch.nn.Module, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        """After round `r`'s update: every `algo.eval_every` rounds (not the last: `finish` evaluates it) evaluate
        `policy`, keeping best.pt at a new best score (success rate; mean return for a task without success); log the learner's `metrics` with the round's beta, label count and
        collection stats (collect/*) at the label count; checkpoint last.pt with the learner's `state` (policy,
        optimizer, ...) and the rounds' own."""
        metrics = {"round": r, **self.collected, **metrics}
        if self.eval_every > 0 and (r + 1) % self.eval_every == 0 and r + 1 < self.num_rounds:
            result = self.services.evaluate(policy, self.labels)
            metrics.update({f"eval/{k}": v for k, v in headline(result).items()})
            if score(result) > self.best:
                self.best = score(result)
                self.services.checkpoint("best", {**policy_state(policy), "round": r})
        self.services.log(self.labels, metrics)
        self.services.checkpoint(
            "last",
            {
                **state,
                "round": r,
                "labels": self.labels,
                "best_success": self.best,
                "collector_rng": self.collector.state_dict(),
                "task_collector_rngs": [c.state_dict() for _, c in self.collectors[1:]],
                # every episode so far is on disk: the ones a resume keeps (none written: a replayed cache)
                "dataset_demos": self.writer.sync() if self.writer is not None else 0,
            },
        )

    def finish(self, policy: torch.nn.Module, updates: int, tasks: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The final evaluation (videos, eval.json; then each other task of a multi-task run, eval.json `tasks`);
        best.pt unless an earlier round evaluated better. Returns the run's summary (its headline on the run's task:
        success rate, or mean return for a task without success)."""
        result = self.services.evaluate(policy, self.labels, final=True)
        if tasks:
            self.services.evaluate_tasks(policy, self.labels, result, list(tasks))
        if score(result) >= self.best:
            self.services.checkpoint("best", {**policy_state(policy), "round": self.num_rounds - 1})
        return {**headline(result), "teacher_labels": self.labels, "updates": updates}

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            for _, c in self.collectors:
                c.close()

    def __enter__(self) -> Rounds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_collection(services: Services, task: Mapping[str, Any], driver: Any) -> tuple[dict[str, Any], str, Any]:
    """Another task's config and observation mode, and its teacher, for a multi-task round: the run's teacher config
    made for that task's env (a router: its route), rendering what the student and that teacher read. UserError, before training, for a
    task without a teacher or whose student observations or actions differ in shape from the run's task's."""
    cfg, comps = services.cfg, services.comps
    student_keys = list(driver.obs_keys)
    keys = [*student_keys, *teacher_obs_keys(to_dict(cfg.teacher), str(task["env_id"]))]
    task, obs_mode = task_for_keys(task, keys), obs_mode_for(keys)
    env = make_env(task, obs_mode)
    try:
        meta = shape_meta(env)
        differ = [k for k in student_keys if meta["obs"].get(k, {}).get("shape") != comps.shape_meta["obs"][k]["shape"]]
        if differ or meta["action"]["shape"] != comps.shape_meta["action"]["shape"]:
            raise UserError(
                f"algo.tasks: {task['env_id']} cannot share the student of {comps.task['env_id']}: "
                f"{', '.join(differ) or 'the action'} differ in shape; a multi-task student needs the same "
                "observation and action shapes on every task"
            )
        teacher = make_teacher(to_dict(cfg.teacher), env, seed=int(cfg.seed), device=comps.device)
        check_teacher(teacher, env)
    finally:
        env.close()
    return task, obs_mode, teacher
