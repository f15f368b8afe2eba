"""Peak memory of a camera student's aggregated labels: does it stay flat as the labels grow?

A LabelBuffer is filled as DAgger fills it (episodes of 60 steps: two 64x64 RGB cameras, proprioception and a
teacher action per step) and minibatches of 64 are drawn from it. Each size runs in its own process, so the figure
is that process's peak resident memory (VmHWM); the ratio at `factor` times the labels against once them is
the headline (flat: near 1; every frame in memory: near `factor`). Also the milliseconds per minibatch, whose
images come from memory or, past the budget, from the buffer's temporary file.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from robodistill.data.buffer import MB, LabelBuffer

EPISODE = 60


def fill_and_sample(
    labels: int,
    image_memory_mb: float | None,
    size: int = 64,
    cameras: int = 2,
    batches: int = 200,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """In this process: fill a buffer with `labels` samples (random frames), time `batches` minibatches; the peak
    RSS so far (MB), the image bytes the buffer holds in memory and ms per minibatch."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as spill:
        buffer = LabelBuffer(image_memory_mb, spill)
        for start in range(0, labels, EPISODE):
            n = min(EPISODE, labels - start)
            buffer.add(
                {
                    **{f"cam{c}_rgb": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for c in range(cameras)},
                    "proprio": rng.normal(size=(n, 9)).astype(np.float32),
                    "teacher_action": rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                }
            )
        t0 = time.perf_counter()
        for _ in range(batches):
            buffer.sample(batch_size, rng)
        ms = (time.perf_counter() - t0) / batches * 1e3
        held = buffer.image_bytes / MB
        buffer.close()
    return {
        "labels": labels,
        "image_memory_mb": image_memory_mb,
        "peak_rss_mb": peak_rss_mb(),
        "held_image_mb": held,
        "ms_per_batch": ms,
    }


def peak_rss_mb() -> float:
    """This interpreter's peak resident memory (MB): Linux's VmHWM, which starts afresh at exec. `ru_maxrss` does
    not: a process started from a large parent (a benchmark that has trained students) inherits the parent's peak
    as its floor, which hid the growth in the pixels suite's first recorded run."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(labels: int, image_memory_mb: float | None, **kwargs: Any) -> dict[str, Any]:
    """`fill_and_sample` in a fresh interpreter (its own peak RSS)."""
    args = [
        sys.executable,
        "-m",
        "robodistill.benchmarks.pixels_memory",
        "--labels",
        str(labels),
        "--image-memory-mb",
        str(image_memory_mb),
    ]
    for k, v in kwargs.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def memory_growth(labels: int = 4000, factor: int = 4, image_memory_mb: float = 32.0) -> dict[str, Any]:
    """Peak RSS at `factor` x `labels` against `labels`, with the budget and without one (every frame in memory)."""
    out: dict[str, Any] = {}
    for name, budget in (("budget", image_memory_mb), ("unbounded", None)):
        small, large = measure(labels, budget), measure(factor * labels, budget)
        out[name] = {"1x": small, f"{factor}x": large, "rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=int, default=None, help="one size, in this process (else the growth table)")
    parser.add_argument("--image-memory-mb", default="32", help="the buffer's image budget; None: no limit")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    budget = None if args.image_memory_mb == "None" else float(args.image_memory_mb)
    if args.labels is None:
        print(json.dumps(memory_growth(image_memory_mb=budget or 32.0), indent=1))
    else:
        print(json.dumps(fill_and_sample(args.labels, budget, args.size, args.cameras, args.batches)))


if __name__ == "__main__":
    main()
