"""Supervised updates shared by BC and DAgger: regress the student onto stored teacher labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import trange

from robodistill.buffer import LabelBuffer

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
