"""Teacher demonstrations for the offline learners (bc, diffusion, sft, offline consistency): collect them with
the teacher in control, read their samples into one buffer.

A source is a dataset path with the task to collect it on, or None for a dataset given by the user (read as it
is). A run's own demonstration set is collected at the start of a fresh run and never again: the learner's first
checkpoint is written after every set is complete, so a run resumed from a checkpoint reads its sets as they are.
A run killed before its first checkpoint (even mid-collection) has nothing to resume: it starts afresh and
collects its sets again from the start, overwriting what the killed run wrote. Collection is seeded, so the sets
equal the uninterrupted run's; completing a partial set instead could not be made equal (the episodes still
running at the kill are lost, and the envs would have to be replayed to where the killed run stopped).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robodistill.config import to_dict
from robodistill.data.buffer import LabelBuffer
from robodistill.data.dataset import BackgroundEpisodeWriter
from robodistill.data.labels import load_labels
from robodistill.errors import UserError
from robodistill.learners.components import make_collector
from robodistill.learners.fitting import label_buffer
from robodistill.learners.services import Services
from robodistill.tasks import env_meta, make_env
from robodistill.teachers import make_teacher

Source = tuple[Path, Mapping[str, Any] | None]  # a dataset, and the task it is collected on (None: given)


def demonstrations(
    services: Services,
    sources: list[Source],
    resumed: bool,
    obs_keys: list[str],
    horizons: tuple[int, int, int] | None = None,
) -> LabelBuffer:
    """Every source's (observation, teacher label) samples for a student reading `obs_keys` (windows of
    `horizons`, see `load_labels`), in order, in one buffer; a source with a task is collected first unless the run
    `resumed` from a checkpoint (see the module docstring)."""
    buffers = []
    for path, task in sources:
        if task is not None and not resumed:
            collect_demos(services, path, task)
        buffers.append(load_labels(path, obs_keys, services.comps.shape_meta, horizons, into=label_buffer(services)))
        if len(buffers[-1]) == 0:
            raise UserError(f"dataset {path} holds no samples")
    return merge(buffers, label_buffer(services))


def collect_demos(services: Services, path: Path, task: Mapping[str, Any]) -> None:
    """Teacher-driven demonstrations of `task` into a new file at `path`: `algo.num_demos` episodes, or episodes
    until `algo.labels` samples. The run's task uses the run's teacher; another task gets the same kind of teacher
    for its env. Logs the collection's stats as demos/* at step 0."""
    cfg, comps = services.cfg, services.comps
    a, seed = cfg.algo, int(cfg.seed)
    env = comps.env if task == comps.task else make_env(task, comps.obs_mode)
    teacher = comps.teacher if task == comps.task else make_teacher(to_dict(cfg.teacher), env, seed, comps.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a killed run's partial set (its writer may still hold the old file: a new inode)
    with BackgroundEpisodeWriter(path, env_meta(env, task, comps.obs_mode)) as writer:
        collector = make_collector(cfg, task, comps.obs_mode, teacher, None, seed, device=comps.device)
        collector.writer = writer
        stats = collector.collect(
            None if a.labels else int(a.num_demos),
            beta=1.0,
            seed=seed * 100_003,
            min_steps=int(a.labels) if a.labels else None,
            progress=services.progress,
            desc=f"teacher demos {path.stem}",
        )
    collector.close()
    if env is not comps.env:
        env.close()
    services.log(0, {f"demos/{k}": v for k, v in stats.as_dict().items()})


def merge(buffers: list[LabelBuffer], out: LabelBuffer, chunk: int = 4096) -> LabelBuffer:
    """The samples of all in the empty buffer `out`, copied `chunk` samples at a time; the merged buffers' temporary
    files are closed (one buffer is returned as it is, without a copy)."""
    if len(buffers) == 1:
        return buffers[0]
    for b in buffers:
        for start in range(0, len(b), chunk):
            out.add(b.rows(start, start + chunk))
        b.close()
    return out
