"""The run directory: the one reader and writer of what a run leaves behind.

`runs/<date>/<time>_<task>_<algo>/` holds `config.yaml`, `checkpoints/{last,best}.pt` (state_dicts only),
`metrics.jsonl` and `tb/`, `eval*.json`, `videos/`, `data/dataset.hdf5` and, for SB3 runs, `sb3/*.zip`. Training,
evaluation, teachers, export, deploy and the benchmarks all go through `RunDir`, so the rules (which checkpoint
`best` falls back to, where an SB3 model lives, what makes a directory a run) are written once.
"""

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

CHECKPOINTS = ("best", "last")
SB3_MODELS = {"best": "best_model.zip", "last": "final_model.zip"}


class RunDir:
    """One run's directory. `RunDir.create(cfg, path)` starts (or resumes) a training run in it; `RunDir(path)`
    opens an existing one for reading."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.checkpoint_dir = self.dir / "checkpoints"
        self.video_dir = self.dir / "videos"
        self._tb = None
        self.t0 = time.time()

    # ---- writing ------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: DictConfig, directory: str | Path, resume: bool = False) -> RunDir:
        """Write the resolved config; a fresh run in a reused directory starts a fresh metrics.jsonl."""
        run = cls(directory)
        for d in (run.dir, run.checkpoint_dir, run.video_dir):
            d.mkdir(parents=True, exist_ok=True)
        (run.dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if not resume:
            run.metrics_path.unlink(missing_ok=True)
        return run

    @property
    def tb(self):
        """The run's TensorBoard writer (created on first use)."""
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is only needed when logging

            self._tb = SummaryWriter(str(self.dir / "tb"))
        return self._tb

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and the numeric values to TensorBoard."""
        record = {"step": int(step), "wall_s": round(time.time() - self.t0, 3), **metrics}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                self.tb.add_scalar(k, float(v), step)
        self.tb.flush()

    def write_json(self, name: str, obj: Any) -> Path:
        """Write `name` (e.g. eval.json) atomically."""
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=float))
        os.replace(tmp, path)
        return path

    def save_checkpoint(self, state: dict[str, Any], name: str = "last") -> Path:
        """Atomically write checkpoints/<name>.pt with the global RNG states (a kill never leaves half a file)."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"{name}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save({**state, "rng": rng_state()}, tmp)
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    # ---- reading ------------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def dataset_path(self) -> Path:
        return self.dir / "data" / "dataset.hdf5"

    def is_run(self) -> bool:
        return self.config_path.exists()

    def require(self) -> RunDir:
        """This directory, or one clear error if it is not a run directory."""
        if not self.dir.is_dir():
            raise UserError(f"run directory {self.dir} does not exist")
        if not self.is_run():
            raise UserError(f"{self.dir} is not a run directory (no config.yaml)")
        return self

    def config(self) -> DictConfig:
        """The run's resolved config."""
        self.require()
        return OmegaConf.load(self.config_path)

    def checkpoint_path(self, which: str = "best") -> Path:
        """checkpoints/<which>.pt; `best` falls back to `last` (a run stopped before its final evaluation)."""
        if which not in CHECKPOINTS:
            raise UserError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        for name in (which, "last"):
            path = self.checkpoint_dir / f"{name}.pt"
            if path.exists():
                return path
        raise UserError(f"{self.dir} has no checkpoint ({self.checkpoint_dir}/{which}.pt): did the run start?")

    def load_checkpoint(self, which: str = "last", missing_ok: bool = False) -> dict[str, Any] | None:
        """checkpoints/<which>.pt exactly (no fallback); None if absent and `missing_ok`."""
        path = self.checkpoint_dir / f"{which}.pt"
        if missing_ok and not path.exists():
            return None
        return load_checkpoint(path)

    def is_sb3(self) -> bool:
        """Whether this is an SB3 run (ppo, sac, rpd): its policy lives in sb3/*.zip."""
        return (self.dir / "sb3").is_dir()

    def sb3_model(self, which: str = "best") -> Path:
        """The SB3 model zip for `which` checkpoint: sb3/best_model.zip (else final) or sb3/final_model.zip."""
        if which not in SB3_MODELS:
            raise UserError(f"checkpoint must be one of {', '.join(SB3_MODELS)}, got {which!r}")
        names = [SB3_MODELS[which]] + ([SB3_MODELS["last"]] if which == "best" else [])
        for name in names:
            if (self.dir / "sb3" / name).exists():
                return self.dir / "sb3" / name
        raise UserError(f"{self.dir} holds no SB3 model (sb3/{names[0]}): is it a finished ppo/sac/rpd run?")

    def sb3_model_path(self, name: str) -> Path:
        """Where an SB3 model zip of this run is written (best_model.zip, final_model.zip)."""
        return self.dir / "sb3" / name

    def read_json(self, name: str = "eval.json") -> dict[str, Any]:
        path = self.dir / name
        if not path.exists():
            raise UserError(f"{path} does not exist: the run has not finished its evaluation")
        return json.loads(path.read_text())

    def metrics(self) -> list[dict[str, Any]]:
        """Every line of metrics.jsonl."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a state_dict-only checkpoint file (no pickled objects), or raise one clear error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} cannot be read (truncated or corrupt?): {exc}") from exc


def policy_checkpoint(path: str | Path, which: str = "best") -> dict[str, Any]:
    """A checkpoint from a run directory (`which`, best falling back to last) or a checkpoint file."""
    p = Path(path)
    return load_checkpoint(RunDir(p).checkpoint_path(which) if p.is_dir() else p)


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
