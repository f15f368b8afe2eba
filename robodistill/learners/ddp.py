"""`trainer.workers=N`: a fit's updates as torch DDP on N Ray Train workers (gloo on the CPU, NCCL on GPUs).

One `regress` call becomes one Ray Train run. The driver draws every minibatch of the call exactly as a one-process
fit would (the fit's RNG, `batch_size` rows per update), and worker r takes rows r*b..(r+1)*b-1 of each (b =
batch_size / N): DDP averages the workers' gradients, so N workers x batch b make the update of 1 worker x batch
N*b (up to float summation order). The learning rate of each update comes from the driver's schedule. Rank 0 sends
back the network and optimizer state, which the driver loads: checkpoints, resume and the run directory are those of
a one-process run. A call's minibatches travel through Ray's object store; each Ray Train run costs seconds to start
(the workers import torch and join the process group), so DDP pays off on long fits.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from robodistill.data.buffer import LabelBuffer
from robodistill.data.labels import LABEL
from robodistill.errors import UserError


class LossModule(nn.Module):
    """The student and its loss as one module, so that DDP's forward (which arms the gradient all-reduce) runs it."""

    def __init__(self, student: nn.Module, loss_fn: Callable[..., Any] | None):
        super().__init__()
        self.student, self.loss_fn = student, loss_fn

    def forward(self, obs: dict[str, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return (self.loss_fn or self.student.imitation_loss)(obs, target)


def ddp_regress(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    buffer: LabelBuffer,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
    workers: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    loss_fn: Callable[..., Any] | None = None,
    label: str = LABEL,
    storage: Path | None = None,
    ema: AveragedModel | None = None,
) -> dict[str, float]:
    """`regress`'s updates on `workers` DDP workers; the student, optimizer and `ema` (an averaged copy of the
    student, moved after every update by rank 0: every rank holds the same weights) end as a one-process fit leaves
    them. Returns rank 0's mean losses and its updates per second (`ddp/updates_per_s`, without the start-up)."""
    from robodistill.data.ray_collector import start_ray

    if batch_size % workers:
        raise UserError(f"algo.batch_size={batch_size} must divide evenly over trainer.workers={workers}")
    ray = start_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    keys = list(student.obs_keys)
    batches = [buffer.sample(batch_size, rng) for _ in range(steps)]
    lrs = []
    with warnings.catch_warnings():  # stepped ahead of its optimizer on purpose: the workers take the steps
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        for _ in range(steps):  # the driver's schedule advances as the one-process fit's would
            lrs.append([g["lr"] for g in optimizer.param_groups])
            if scheduler is not None:
                scheduler.step()
    b = batch_size // workers
    shards = [
        ray.put([{k: batch[k][r * b : (r + 1) * b] for k in [*keys, label]} for batch in batches])
        for r in range(workers)
    ]
    config = {  # the student and a loss that calls it travel in one payload: the loss calls the worker's copy
        "payload": ray.put((student, loss_fn, optimizer.state_dict(), type(optimizer), optimizer.defaults, ema)),
        "shards": shards,
        "lrs": lrs,
        "label": label,
    }
    use_gpu = student.device.type == "cuda"
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(storage or tempfile.gettempdir()), name="ddp"),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        raise UserError(f"trainer.workers={workers}: the DDP fit failed: {type(exc).__name__}: {exc}") from exc
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    return {k: float(v) for k, v in result.metrics.items() if k.startswith(("loss/", "ddp/"))}


def _worker_loop(config: dict[str, Any]) -> None:
    """One DDP worker: its rows of every minibatch, the driver's learning rates; rank 0 reports the final state."""
    import ray
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    student, loss_fn, opt_state, opt_class, defaults, ema = ray.get(config["payload"])
    rank = ray.train.get_context().get_world_rank()
    shard = ray.get(config["shards"][rank])
    device = ray.train.torch.get_device()
    student.to(device).train()
    if ema is not None:
        ema.to(device)
    model = ray.train.torch.prepare_model(
        LossModule(student, loss_fn), parallel_strategy_kwargs={"find_unused_parameters": True}
    )
    accepted = inspect.signature(opt_class).parameters  # defaults may hold keys __init__ does not take (AdamW's)
    optimizer = opt_class(student.parameters(), **{k: v for k, v in defaults.items() if k in accepted})
    optimizer.load_state_dict(opt_state)  # every group setting as the driver's optimizer has it
    totals: dict[str, float] = {}
    start = time.perf_counter()
    for batch, lrs in zip(shard, config["lrs"], strict=True):
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        obs = student.tensors(batch)
        loss, parts = model(obs, torch.as_tensor(batch[config["label"]], device=device))
        if not torch.isfinite(loss):
            raise FloatingPointError("imitation loss became NaN/inf: check the dataset's labels and the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None and rank == 0:  # the all-reduced update left every rank with the same weights
            ema.update_parameters(student)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
    student.eval()
    metrics = {f"loss/{k}": v / max(len(shard), 1) for k, v in totals.items()}
    metrics["ddp/updates_per_s"] = len(shard) / (time.perf_counter() - start)  # the update loop, not the start-up
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            state = {
                "student": {k: v.cpu() for k, v in student.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "ema": None if ema is None else {k: v.cpu() for k, v in ema.state_dict().items()},
            }
            torch.save(state, os.path.join(d, "state.pt"))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)
