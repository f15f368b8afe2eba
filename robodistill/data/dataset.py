"""Datasets in robomimic's HDF5 layout, written one episode at a time and read one demo at a time.

data/ (attrs total, env_args) -> data/demo_<i>/ (attr num_samples; actions, rewards, dones, states, obs/<key>,
next_obs/<key>, teacher/<label>, student/<field>) and mask/train, mask/valid.

Orphans: a resumed run keeps the episodes its killed predecessor wrote after its last checkpoint on disk, but out of
training: `mark_orphans` gives them the attribute `orphaned=True`. Readers here (`iter_demos`, `dataset_summary`, and
through them the label loaders) skip orphans, `data` attr `total` counts live samples only, and mask/train and
mask/valid list live demos only. robomimic sees the live demos with `filter_by_attribute="train"` or `"valid"`;
without a filter key it lists every group under `data`, orphans included. New demos continue the numbering after
the orphans, so an orphan is never overwritten.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robodistill.errors import UserError
from robodistill.runtime.spawning import main_script_hidden

VALID_EVERY = 10  # every 10th live demo goes to mask/valid
ORPHANED = "orphaned"  # demo attribute: written by a killed run after its last checkpoint, kept out of training
LOCK_WAIT_S = 15.0  # how long to wait for another process's writer to release a dataset file


class DatasetError(UserError):
    """A dataset file that is missing, unreadable or not in the expected layout."""


def _demo_names(data: h5py.Group) -> list[str]:
    """Every demo group, orphans included, in write order."""
    return sorted(data.keys(), key=_demo_index)


def _demo_index(name: str) -> int:
    return int(name.split("_")[-1])


def _is_orphan(g: h5py.Group) -> bool:
    return bool(g.attrs.get(ORPHANED, False))


def _live_names(data: h5py.Group) -> list[str]:
    return [n for n in _demo_names(data) if not _is_orphan(data[n])]


def live_demos(f: h5py.File) -> Iterator[h5py.Group]:
    """The demo groups of an open dataset that are not orphans, in write order."""
    data = f["data"]
    return (data[n] for n in _live_names(data))


def _next_index(data: h5py.Group) -> int:
    """The next demo's index: after every demo on disk, orphans included (an orphan is never overwritten)."""
    return max((_demo_index(n) for n in data), default=-1) + 1


def open_dataset(path: str | Path, mode: str = "r") -> h5py.File:
    """Open a robodistill/robomimic HDF5 dataset, or raise one DatasetError that says what is wrong."""
    path = Path(path)
    if not path.exists():  # "a" would create it
        raise DatasetError(f"dataset file {path} does not exist")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            f = h5py.File(path, mode)
            break
        except BlockingIOError as exc:  # HDF5's file lock: a writer (e.g. a killed run's) is still draining
            if time.monotonic() > deadline:
                raise DatasetError(f"dataset file {path} is locked by another process that is writing it") from exc
            time.sleep(0.1)
        except OSError as exc:
            raise DatasetError(
                f"dataset file {path} is not a readable HDF5 file (truncated or corrupt?): {exc}"
            ) from exc
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
        self.num_demos = _next_index(self.data)  # the next demo's index
        self.num_live = len(_live_names(self.data))  # demos that are not orphans: their order picks the masks

    def write(self, episode: dict[str, Any]) -> int:
        """Write one episode (nested dict of arrays (T, ...); `attrs` for scalars); returns its demo index."""
        i = self.num_demos
        g = self.data.create_group(f"demo_{i}")
        attrs = episode.get("attrs", {})
        for k, v in attrs.items():
            g.attrs[k] = v
        n = len(episode["actions"])
        self._write_arrays(g, {k: v for k, v in episode.items() if k != "attrs"})
        g.attrs["num_samples"] = n  # last: a demo a killed writer left half-written lacks it (see `_complete`)
        self.data.attrs["total"] = int(self.data.attrs["total"]) + n
        self.num_demos += 1
        self._write_masks(f"demo_{i}")
        self.file.flush()
        return i

    def sync(self) -> int:
        """Flush; every episode written so far is on disk. Returns the number of demos in the file (orphans
        included: the `keep` that `mark_orphans` takes)."""
        self.file.flush()
        return self.num_demos

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

    def _write_masks(self, name: str) -> None:
        """Append the newest demo to mask/train or mask/valid (resizable datasets: O(1) per episode)."""
        ds = _masks(self.file)[_mask_key(self.num_live)]
        ds.resize((len(ds) + 1,))
        ds[-1] = name.encode()
        self.num_live += 1

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mask_key(live_index: int) -> str:
    return "valid" if live_index % VALID_EVERY == VALID_EVERY - 1 else "train"


def _masks(f: h5py.File) -> h5py.Group:
    mask = f.require_group("mask")
    for k in ("train", "valid"):
        if k not in mask:
            mask.create_dataset(k, shape=(0,), maxshape=(None,), dtype="S16", chunks=(256,))
    return mask


SYNC = "sync"  # BackgroundEpisodeWriter's message: reply with the number of demos once all sent before are on disk


def _writer_process(path: str, env_args: dict[str, Any], append: bool, conn, replies) -> None:
    """Body of BackgroundEpisodeWriter's process: write episodes until the None sentinel or the parent's death."""
    parent = mp.parent_process()
    os.nice(10)  # the envs and policies in the parent come first; disk writes can wait a few milliseconds
    with EpisodeWriter(path, env_args, append) as writer:
        replies.send(writer.num_demos)  # started: the parent's constructor returns
        while True:
            if not conn.poll(0.2):
                if parent is not None and not parent.is_alive():  # parent killed: all it sent is written
                    return
                continue
            try:
                episode = conn.recv()
            except EOFError:  # parent closed its end or died
                return
            if episode is None:
                return
            if isinstance(episode, str) and episode == SYNC:
                replies.send(writer.sync())
            else:
                writer.write(episode)


class BackgroundEpisodeWriter:
    """EpisodeWriter in a separate process, so HDF5 work runs on the other core while the envs step.

    Same interface as EpisodeWriter. If the collecting process is killed, the writer still drains and flushes the
    episodes it was sent. The constructor returns once the writer process holds the file open (and HDF5's lock on
    it): a killed run's writer still draining keeps a resumed run from touching the file until it is done.
    """

    def __init__(self, path: str | Path, env_args: dict[str, Any], append: bool = False):
        self.path = Path(path)
        ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
        # a one-way pipe, not a Queue: send() writes synchronously (a Queue's feeder thread would lose episodes
        # already handed over if this process is killed) and blocks when the writer falls behind
        reader, self.conn = ctx.Pipe(duplex=False)
        self.replies, replies = ctx.Pipe(duplex=False)  # the writer's answers to `sync`
        self.proc = ctx.Process(
            target=_writer_process, args=(str(path), env_args, append, reader, replies), daemon=False
        )
        with main_script_hidden():
            self.proc.start()
        reader.close()
        replies.close()
        self.num_demos = self._reply("failed to start")  # the writer has the file open: the next demo's index

    def write(self, episode: dict[str, Any]) -> int:
        if not self.proc.is_alive():
            raise DatasetError(f"the episode writer for {self.path} stopped (exit code {self.proc.exitcode})")
        self.conn.send(episode)
        self.num_demos += 1
        return self.num_demos - 1

    def sync(self) -> int:
        """Block until every episode sent so far is written and flushed; returns the number of demos in the file
        (orphans included: the `keep` that `mark_orphans` takes)."""
        if not self.proc.is_alive():
            raise DatasetError(f"the episode writer for {self.path} stopped (exit code {self.proc.exitcode})")
        self.conn.send(SYNC)
        return self._reply("stopped")

    def _reply(self, stopped: str) -> int:
        """The writer process's next answer (a demo count), or a DatasetError if it ends first."""
        while not self.replies.poll(0.2):
            if not self.proc.is_alive():
                break
        try:
            return int(self.replies.recv())
        except EOFError:  # the writer ended and closed its end
            self.proc.join()
            raise DatasetError(
                f"the episode writer for {self.path} {stopped} (exit code {self.proc.exitcode})"
            ) from None

    def close(self) -> None:
        if self.proc.is_alive() and not self.conn.closed:
            self.conn.send(None)
        self.proc.join()
        self.conn.close()
        self.replies.close()
        if self.proc.exitcode != 0:
            raise DatasetError(f"the episode writer for {self.path} failed (exit code {self.proc.exitcode})")

    def __enter__(self) -> BackgroundEpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_env_args(path: str | Path) -> dict[str, Any]:
    with open_dataset(path) as f:
        return json.loads(f["data"].attrs["env_args"])


def iter_demos(path: str | Path, fields: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Yield each live demo's requested fields (paths inside the demo group, e.g. 'obs/state', 'teacher/actions');
    orphans are skipped."""
    with open_dataset(path) as f:
        data = f["data"]
        for name in _live_names(data):
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
    """Number of live demos, their samples and successes, and the number of orphaned demos in a dataset."""
    with open_dataset(path) as f:
        data = f["data"]
        names = _live_names(data)
        return {
            "demos": len(names),
            "samples": int(data.attrs["total"]),
            "successes": int(sum(bool(data[n].attrs.get("success", False)) for n in names)),
            "orphaned": len(data) - len(names),
        }


def _complete(g: h5py.Group) -> bool:
    """Whether a demo was written to the end: `num_samples` (written last) is there, it has the arrays every demo
    has (actions, rewards, dones, the same keys under obs/ and next_obs/), and every array has that many steps."""
    try:
        if "num_samples" not in g.attrs or not all(k in g for k in ("actions", "rewards", "dones", "obs", "next_obs")):
            return False
        if not len(g["obs"]) or set(g["obs"]) != set(g["next_obs"]):
            return False
        n = int(g.attrs["num_samples"])
        return all(len(g[k]) == n for k in _all_paths(g))
    except (OSError, KeyError, ValueError):  # a group whose metadata a killed writer never finished
        return False


def mark_orphans(path: str | Path, keep: int) -> int:
    """Mark the demos after the first `keep` in write order (a checkpoint's count, orphans included: what the
    writer's `sync` returned) `orphaned=True`, keeping them on disk; returns how many were newly marked.

    A demo a killed writer left half-written is marked too (or, if even its attributes cannot be written, its group
    is unlinked: it holds no complete episode). Then `data` attr `total` and mask/train, mask/valid are rebuilt
    from the live demos, so the file is consistent again whatever step the killed writer stopped at.
    """
    with open_dataset(path, "a") as f:
        data = f["data"]
        if _next_index(data) < keep:
            raise DatasetError(
                f"{path} holds {_next_index(data)} demos but the run's checkpoint counts {keep}: "
                "the dataset is not the one the run wrote"
            )
        marked = 0
        for name in _demo_names(data):
            index = _demo_index(name)
            try:
                g = data[name]
            except (OSError, KeyError):
                if index < keep:
                    raise DatasetError(f"{path}:{name} is unreadable but the run's checkpoint counts it") from None
                del data[name]
                continue
            if index < keep:
                if not _is_orphan(g) and not _complete(g):
                    raise DatasetError(f"{path}:{name} is incomplete but the run's checkpoint counts it")
                continue
            if not _is_orphan(g):
                try:
                    g.attrs[ORPHANED] = True
                except (OSError, KeyError):
                    del data[name]
                    continue
                marked += 1
        live = _live_names(data)
        data.attrs["total"] = int(sum(int(data[n].attrs["num_samples"]) for n in live))
        masks = _masks(f)
        names = {k: [n.encode() for i, n in enumerate(live) if _mask_key(i) == k] for k in ("train", "valid")}
        for k, ds in masks.items():
            ds.resize((len(names[k]),))
            if names[k]:
                ds[:] = names[k]
        f.flush()
    return marked
