"""The run directory and the services every learner uses: metrics, TensorBoard, checkpoints, RNG state."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robodistill.errors import UserError


class Run:
    """One training run's directory: config.yaml, checkpoints/, metrics.jsonl, tb/, videos/, eval.json."""

    def __init__(self, cfg: DictConfig, directory: str | Path):
        self.cfg = cfg
        self.dir = Path(directory)
        self.checkpoint_dir = self.dir / "checkpoints"
        self.video_dir = self.dir / "videos"
        for d in (self.dir, self.checkpoint_dir, self.video_dir):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if not cfg.get("resume", False):  # a fresh run in a reused directory starts a fresh metrics file
            (self.dir / "metrics.jsonl").unlink(missing_ok=True)
        self._tb = None
        self.t0 = time.time()

    @property
    def dataset_path(self) -> Path:
        return self.dir / "data" / "dataset.hdf5"

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))
        return self._tb

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and the numeric values to TensorBoard."""
        record = {"step": int(step), "wall_s": round(time.time() - self.t0, 3), **metrics}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                self.tb.add_scalar(k, float(v), step)
        self.tb.flush()

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.dir / name
        path.write_text(json.dumps(obj, indent=2, default=float))
        return path

    def save_checkpoint(self, state: dict[str, Any], name: str = "last") -> Path:
        """Atomically write checkpoints/<name>.pt (write to a temp file, then rename: a kill never leaves half a file)."""
        path = self.checkpoint_dir / f"{name}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save({**state, "rng": rng_state()}, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, name: str = "last") -> dict[str, Any] | None:
        path = self.checkpoint_dir / f"{name}.pt"
        return load_checkpoint(path) if path.exists() else None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a state_dict-only checkpoint (no pickled objects), or raise one clear error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} cannot be read (truncated or corrupt?): {exc}") from exc


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
