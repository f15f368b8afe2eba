"""The supervised-fit helper: regress a student onto stored labels, and what such a fit carries between calls
and across checkpoints (optimizer, learning-rate schedule, minibatch RNG)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import LABEL
from robodistill.errors import UserError
from robodistill.learners.services import Services, load_policy_state
from robodistill.progress import progress_bar

LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


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
    loss_fn: LossFn | None = None,
    after_step: Callable[[], None] | None = None,
    label: str = LABEL,
    ema: AveragedModel | None = None,
) -> dict[str, float]:
    """`steps` minibatch updates of `loss_fn` (default `student.imitation_loss`) on uniform samples of the buffer,
    regressing onto the buffer's `label` array; after each optimizer step `ema` (an averaged copy of the student)
    moves toward it and `after_step` runs (e.g. a target network's update). Returns the mean losses."""
    totals: dict[str, float] = {}
    loss_fn = loss_fn or student.imitation_loss
    student.train()
    for _ in progress_bar(range(steps), enabled=progress, desc=desc, leave=False):
        batch = buffer.sample(batch_size, rng)
        obs = student.tensors(batch)  # on the student's device
        loss, parts = loss_fn(obs, torch.as_tensor(batch[label], device=student.device))
        if not torch.isfinite(loss):
            raise FloatingPointError("imitation loss became NaN/inf: check the dataset's labels and the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(student)
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


class FitState:
    """A supervised fit's state: the optimizer, its learning-rate schedule over `total_updates` (`algo.lr_schedule`)
    and the RNG that draws minibatches (seeded by the run's seed). `state_dict` is what a checkpoint stores of it.
    With `workers` > 1 (`trainer.workers`) each `regress` runs its updates as DDP on that many Ray Train workers
    (`robodistill.learners.ddp`; Ray Train's files under `storage`), ending in the same state."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_updates: int,
        lr_schedule: str,
        seed: int,
        workers: int = 1,
        storage: Path | None = None,
    ):
        if workers < 1:
            raise UserError(f"trainer.workers must be >= 1, got {workers}")
        self.optimizer = optimizer
        self.scheduler = lr_scheduler(optimizer, total_updates, lr_schedule, float(optimizer.defaults["lr"]))
        self.rng = np.random.default_rng(seed)
        self.workers, self.storage = int(workers), storage

    def regress(
        self, student: torch.nn.Module, buffer: LabelBuffer, steps: int, batch_size: int, **kwargs: Any
    ) -> dict[str, float]:
        """`regress` with this fit's optimizer, schedule and minibatch RNG; `kwargs` as `regress` takes them."""
        if self.workers > 1:
            from robodistill.learners.ddp import ddp_regress

            if kwargs.get("after_step") is not None:
                raise UserError(
                    "trainer.workers > 1 cannot run a per-update hook (a target network): use trainer.workers=1"
                )
            ddp = {k: kwargs[k] for k in ("loss_fn", "label", "ema") if k in kwargs}
            return ddp_regress(
                student, self.optimizer, buffer, steps, batch_size, self.rng, self.workers, self.scheduler,
                storage=self.storage, **ddp,
            )  # fmt: skip
        return regress(student, self.optimizer, buffer, steps, batch_size, self.rng, scheduler=self.scheduler, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "sample_rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = state["sample_rng"]


def adam_fit(student: torch.nn.Module, services: Services, total_updates: int) -> FitState:
    """The usual fit: Adam at `algo.lr` with `algo.lr_schedule` over `total_updates`, minibatches drawn with the run's
    seed, on `trainer.workers` DDP workers (Ray Train's files in the run directory)."""
    cfg = services.cfg
    optimizer = torch.optim.Adam(student.parameters(), lr=float(cfg.algo.lr))
    workers = trainer_workers(cfg)
    return FitState(optimizer, total_updates, cfg.algo.lr_schedule, int(cfg.seed), workers, services.run.dir / "ddp")


def trainer_workers(cfg: Any) -> int:
    """`trainer.workers` (1 for a config written before it existed)."""
    return int(cfg.get("trainer", {}).get("workers", 1))


def fit_updates(
    services: Services,
    fit: FitState,
    student: torch.nn.Module,
    buffer: LabelBuffer,
    start: int,
    state: Callable[[], dict[str, Any]],
    desc: str,
    **regress_kwargs: Any,
) -> None:
    """Updates `start`..`algo.updates` of an offline fit, `algo.batch_size` samples each, in chunks of
    `algo.log_every`: after each chunk, log its mean losses and checkpoint last.pt with the learner's `state()` (its
    policy, EMA copies, ...), the fit's state and the update count, so a killed run resumes from the chunk's end.
    `regress_kwargs` as `regress` takes them (loss_fn, ema, after_step)."""
    a = services.cfg.algo
    updates, log_every, batch_size = int(a.updates), int(a.log_every), int(a.batch_size)
    for done in progress_bar(range(start, updates, log_every), enabled=services.progress, desc=desc):
        steps = min(log_every, updates - done)
        losses = fit.regress(student, buffer, steps, batch_size, progress=False, **regress_kwargs)
        services.log(done + steps, {"update": done + steps, **losses})
        services.checkpoint("last", {**state(), **fit.state_dict(), "update": done + steps})


def label_buffer(services: Services) -> LabelBuffer:
    """An empty buffer for a run's labels: its images hold at most `collector.image_memory_mb` in memory (null: no
    limit), the rest in an unnamed temporary file in the run's directory."""
    return LabelBuffer(services.cfg.collector.get("image_memory_mb"), services.run.dir)


def resume_or_normalize(
    student: torch.nn.Module, fit: FitState, ckpt: dict[str, Any] | None, buffer: LabelBuffer
) -> int:
    """A resumed fit restores the student and the fit from `ckpt` and returns its update count; a fresh one fits
    the student's observation normalisers on the demonstrations and starts at update 0."""
    if ckpt is None:
        student.fit_normalizers({k: buffer.view(k) for k in student.obs_keys})
        return 0
    load_policy_state(student, ckpt)
    fit.load_state_dict(ckpt)
    return int(ckpt["update"])
