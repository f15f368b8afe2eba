"""Datasets in robomimic's HDF5 layout, written one episode at a time and read one demo at a time.

data/ (attrs total, env_args) -> data/demo_<i>/ (attr num_samples; actions, rewards, dones, states, obs/<key>,
next_obs/<key>, teacher/<label>, student/<field>) and mask/train, mask/valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from robodistill.errors import UserError

VALID_EVERY = 10  # every 10th demo goes to mask/valid


class DatasetError(UserError):
    """A dataset file that is missing, unreadable or not in the expected layout."""


def _demo_names(data: h5py.Group) -> list[str]:
    return sorted(data.keys(), key=lambda k: int(k.split("_")[-1]))


def open_dataset(path: str | Path, mode: str = "r") -> h5py.File:
    """Open a robodistill/robomimic HDF5 dataset, or raise one DatasetError that says what is wrong."""
    path = Path(path)
    if mode == "r" and not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise DatasetError(f"dataset file {path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    if "data" not in f:
        f.close()
        raise DatasetError(f"{path} has no 'data' group: not a robomimic-layout dataset")
    return f


class EpisodeWriter:
    """Appends finished episodes to an HDF5 file and flushes after each, so a crash loses only running episodes."""

    def __init__(self, path: str | Path, env_args: dict[str, Any], append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists():
            self.file = open_dataset(self.path, "a")
            self.data = self.file["data"]
        else:
            self.file = h5py.File(self.path, "w")
            self.data = self.file.create_group("data")
            self.data.attrs["total"] = 0
            self.data.attrs["env_args"] = json.dumps(env_args)
        self.num_demos = len(self.data)

    def write(self, episode: dict[str, Any]) -> int:
        """Write one episode (nested dict of arrays (T, ...); `attrs` for scalars); returns its demo index."""
        i = self.num_demos
        g = self.data.create_group(f"demo_{i}")
        attrs = episode.get("attrs", {})
        for k, v in attrs.items():
            g.attrs[k] = v
        n = len(episode["actions"])
        g.attrs["num_samples"] = n
        self._write_arrays(g, {k: v for k, v in episode.items() if k != "attrs"})
        self.data.attrs["total"] = int(self.data.attrs["total"]) + n
        self.num_demos += 1
        self._write_masks()
        self.file.flush()
        return i

    def _write_arrays(self, g: h5py.Group, arrays: dict[str, Any]) -> None:
        for k, v in arrays.items():
            if isinstance(v, dict):
                self._write_arrays(g.require_group(k), v)
            else:
                v = np.asarray(v)
                if v.dtype == np.uint8 and v.ndim >= 3:  # images: chunk per frame, compress
                    g.create_dataset(k, data=v, chunks=(1, *v.shape[1:]), compression="gzip", compression_opts=4)
                else:
                    g.create_dataset(k, data=v)

    def _write_masks(self) -> None:
        names = [f"demo_{i}" for i in range(self.num_demos)]
        valid = [n for i, n in enumerate(names) if i % VALID_EVERY == VALID_EVERY - 1]
        train = [n for n in names if n not in set(valid)]
        mask = self.file.require_group("mask")
        for key, vals in (("train", train), ("valid", valid)):
            if key in mask:
                del mask[key]
            mask.create_dataset(key, data=np.array(vals, dtype="S"))

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_env_args(path: str | Path) -> dict[str, Any]:
    with open_dataset(path) as f:
        return json.loads(f["data"].attrs["env_args"])


def iter_demos(path: str | Path, fields: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Yield each demo's requested fields (paths inside the demo group, e.g. 'obs/state', 'teacher/actions')."""
    with open_dataset(path) as f:
        data = f["data"]
        for name in _demo_names(data):
            g = data[name]
            missing = [k for k in fields if k not in g]
            if missing:
                raise DatasetError(f"{path}:{name} lacks {missing}; it has {sorted(_all_paths(g))}")
            try:
                yield {k: g[k][()] for k in fields}
            except OSError as exc:
                raise DatasetError(f"{path}:{name} cannot be read (corrupt?): {exc}") from exc


def _all_paths(g: h5py.Group) -> list[str]:
    out: list[str] = []
    g.visit(lambda n: out.append(n) if isinstance(g[n], h5py.Dataset) else None)
    return out


def dataset_summary(path: str | Path) -> dict[str, Any]:
    """Number of demos, samples, successes in a dataset."""
    with open_dataset(path) as f:
        data = f["data"]
        names = _demo_names(data)
        return {
            "demos": len(names),
            "samples": int(data.attrs["total"]),
            "successes": int(sum(bool(data[n].attrs.get("success", False)) for n in names)),
        }
