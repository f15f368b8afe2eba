"""Device figures: a diffusion student's update throughput and a diffusion teacher's labels per second (DDIM-10, the
teacher's default sampler) at several batch sizes, on the CPU and on each CUDA GPU torch sees, in one process.

The networks are the configs' defaults (`student=diffusion` on PushCube's state shapes), fed random observations and
action chunks: the figures time the networks and the sampler, not a task. Where torch sees no GPU, only the CPU row
is printed and the JSON's `cuda` is null. The CPU runs with the config's `torch_threads` (1).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from policies.samplers import ChunkRunner, make_sampler
from robodistill.config import compose_config, to_dict
from robodistill.devices import resolve_device
from robodistill.learners.components import make_student
from robodistill.tasks import make_env, shape_meta


def diffusion_student(device: torch.device) -> Any:
    cfg = compose_config(["task=pushcube", "student=diffusion"])
    env = make_env(to_dict(cfg.task), "state")
    meta = shape_meta(env)
    env.close()
    torch.manual_seed(0)
    return make_student(cfg.student, meta).to(device)


def updates_per_s(device: torch.device, updates: int, batch: int) -> float:
    """AdamW updates of the epsilon-prediction loss per second on random windows (after 3 warm-up updates)."""
    policy = diffusion_student(device).train()
    dim = policy.shape_meta["obs"]["state"]["shape"][0]
    obs = {"state": torch.randn(batch, policy.obs_horizon, dim, device=device)}
    chunk = torch.rand(batch, policy.pred_horizon, policy.action_dim, device=device) * 2 - 1
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    for i in range(updates + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        loss, _ = policy.imitation_loss(obs, chunk)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return updates / (time.perf_counter() - t0)


def labels_per_s(device: torch.device, batch: int, calls: int) -> float:
    """Labels per second of a DDIM-10 diffusion teacher labelling `batch` envs per call (after one warm-up call)."""
    policy = diffusion_student(device).eval()
    runner = ChunkRunner(policy, make_sampler(policy, {"kind": "ddim", "num_inference_steps": 10}))
    dim = policy.shape_meta["obs"]["state"]["shape"][0]
    obs = {"state": np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)}
    runner.label(obs)
    t0 = time.perf_counter()
    for _ in range(calls):
        runner.label(obs)  # returns numpy: the GPU has finished
    return batch * calls / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(quick: bool, out_dir: Any) -> tuple[dict[str, Any], list[str]]:
    # the CPU as runs use it (torch_threads=1, the config's default): more threads on a shared machine oversubscribe
    # its cores (measured here: 0.3 updates/s with 2 threads beside two busy processes, 37 with 1)
    torch.set_num_threads(int(compose_config().torch_threads))
    batches = [1, 16] if quick else [1, 16, 64, 256]
    updates, calls, update_batch = (3, 2, 32) if quick else (30, 10, 256)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(resolve_device("cuda"))
    rows: dict[str, Any] = {}
    for device in devices:
        rows[str(device)] = {
            "updates_per_s": updates_per_s(device, updates, update_batch),
            "labels_per_s": {str(b): labels_per_s(device, b, calls) for b in batches},
        }
    cuda = rows.get("cuda:0")
    payload = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "update_batch": update_batch,
        "devices": rows,
        "cpu": rows["cpu"],
        "cuda": cuda,
        "cuda_over_cpu": None
        if cuda is None
        else {
            "updates": cuda["updates_per_s"] / rows["cpu"]["updates_per_s"],
            "labels": {b: cuda["labels_per_s"][b] / rows["cpu"]["labels_per_s"][b] for b in cuda["labels_per_s"]},
        },
    }
    head = f"{'device':<10}{'updates/s (batch ' + str(update_batch) + ')':>24}" + "".join(
        f"{'labels/s @' + b:>16}" for b in map(str, batches)
    )
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"{name:<10}{r['updates_per_s']:>24.1f}" + "".join(f"{r['labels_per_s'][str(b)]:>16.0f}" for b in batches)
        )
    if cuda is None:
        lines.append("cuda: torch sees no GPU here (only the CPU row)")
    else:
        ratio = payload["cuda_over_cpu"]
        lines.append(
            f"cuda / cpu: updates {ratio['updates']:.1f}x; labels "
            + ", ".join(f"{v:.1f}x @{b}" for b, v in ratio["labels"].items())
        )
    lines.append(
        f"(student=diffusion defaults on PushCube's state shapes; labels: DDIM-10 chunks per second; torch "
        f"{torch.__version__}, {torch.get_num_threads()} CPU threads)"
    )
    return payload, lines
