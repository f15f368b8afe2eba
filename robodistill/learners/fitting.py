"""Supervised updates shared by the learners: regress a student onto stored labels, with an optional schedule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import trange

from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import LABEL
from robodistill.errors import UserError


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
    loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, float]]] | None = None,
    after_step: Callable[[], None] | None = None,
    label: str = LABEL,
) -> dict[str, float]:
    """`steps` minibatch updates of `loss_fn` (default `student.imitation_loss`) on uniform samples of the buffer,
    regressing onto the buffer's `label` array; `after_step` runs after each optimizer step (e.g. an EMA update).
    Returns the mean losses."""
    totals: dict[str, float] = {}
    loss_fn = loss_fn or student.imitation_loss
    student.train()
    for _ in trange(steps, desc=desc, disable=not progress, leave=False):
        batch = buffer.sample(batch_size, rng)
        obs = {k: torch.as_tensor(batch[k]) for k in student.obs_keys}
        loss, parts = loss_fn(obs, torch.as_tensor(batch[label]))
        if not torch.isfinite(loss):
            raise FloatingPointError("imitation loss became NaN/inf: check the dataset's labels and the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
    student.eval()
    return {f"loss/{k}": v / max(steps, 1) for k, v in totals.items()}



def lr_scheduler(
    optimizer: torch.optim.Optimizer, total_updates: int, kind: str, lr: float
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """`cosine` decays the learning rate to 5 % over the run (the last updates settle instead of chasing
    minibatches); `constant` keeps it."""
    if kind == "constant":
        return None
    if kind != "cosine":
        raise UserError(f"algo.lr_schedule must be constant or cosine, got {kind!r}")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_updates, 1), eta_min=0.05 * lr)
