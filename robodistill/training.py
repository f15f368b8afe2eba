"""Supervised updates shared by BC and DAgger: regress the student onto stored teacher labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import trange

from robodistill.buffer import LabelBuffer
from robodistill.dataset import dataset_summary, iter_demos, open_dataset
from robodistill.errors import UserError

LABEL = "teacher_action"


def regress(
    student: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    buffer: LabelBuffer,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
    progress: bool = True,
    desc: str = "fit",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """`steps` minibatch updates of `student.imitation_loss` on uniform samples of the buffer; mean losses."""
    totals: dict[str, float] = {}
    student.train()
    for _ in trange(steps, desc=desc, disable=not progress, leave=False):
        batch = buffer.sample(batch_size, rng)
        obs = {k: torch.as_tensor(batch[k]) for k in student.obs_keys}
        loss, parts = student.imitation_loss(obs, torch.as_tensor(batch[LABEL]))
        if not torch.isfinite(loss):
            raise FloatingPointError("imitation loss became NaN/inf: check the dataset's labels and the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
    student.eval()
    return {f"loss/{k}": v / max(steps, 1) for k, v in totals.items()}


def episode_labels(episode: dict[str, Any], obs_keys: list[str]) -> dict[str, np.ndarray]:
    """The (observation, teacher label) pairs of one collected episode, for a LabelBuffer."""
    return {**{k: episode["obs"][k] for k in obs_keys}, LABEL: episode["teacher"]["actions"]}


def load_labels(path: str | Path, obs_keys: list[str], meta: dict[str, Any]) -> LabelBuffer:
    """Read a dataset demo by demo into a LabelBuffer (teacher labels, else executed actions), checking shapes."""
    with open_dataset(path) as f:
        first = next(iter(f["data"].values()), None)
        if first is None:
            raise UserError(f"dataset {path} holds no demos")
        label = "teacher/actions" if "teacher/actions" in first else "actions"
    action_dim = int(meta["action"]["shape"][0])
    buffer = LabelBuffer()
    for demo in iter_demos(path, [f"obs/{k}" for k in obs_keys] + [label]):
        for k in obs_keys:
            if list(demo[f"obs/{k}"].shape[1:]) != list(meta["obs"][k]["shape"]):
                raise UserError(f"dataset {path} has obs/{k} of shape {demo[f'obs/{k}'].shape[1:]}, "
                                f"the task needs {tuple(meta['obs'][k]['shape'])}")  # fmt: skip
        if demo[label].shape[1:] != (action_dim,):
            raise UserError(f"dataset {path} has {label} of dim {demo[label].shape[1:]}, "
                            f"the task needs ({action_dim},)")  # fmt: skip
        buffer.add({**{k: demo[f"obs/{k}"] for k in obs_keys}, LABEL: demo[label]})
    summary = dataset_summary(path)
    if summary["samples"] != len(buffer):
        raise UserError(f"dataset {path} says it holds {summary['samples']} samples but {len(buffer)} were read")
    return buffer
