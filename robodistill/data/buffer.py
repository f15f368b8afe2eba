"""Growable store of (observation, label) pairs that learners sample minibatches from.

Low-dim arrays live in memory. Image arrays (uint8 with at least three dims per sample: camera frames, or windows of
them) live in memory too until they would hold more than the buffer's image budget; then they move to an unnamed
temporary file and minibatches read their rows from it (`os.preadv`, one read per row). The file's pages live in
the OS page cache, not in this process: peak memory stays at the budget however many labels arrive.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

MB = 2**20


def is_image(a: np.ndarray) -> bool:
    """Whether a batch array (N, ...) holds images: uint8 with at least three dims per sample."""
    return a.dtype == np.uint8 and a.ndim >= 4


class RowFile:
    """Rows of one array, appended to an unnamed temporary file (removed when closed or when the process ends) and
    read back by index."""

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype, directory: str | Path | None = None):
        self.file = tempfile.TemporaryFile(dir=directory)
        self.row_shape, self.dtype = tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.rows = 0

    def append(self, rows: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(rows, self.dtype).reshape(-1).view(np.uint8))
        offset, done = self.rows * self.row_bytes, 0
        while done < len(data):  # a write may be partial (about 2 GiB at most per call)
            done += os.pwrite(self.file.fileno(), data[done : done + 2**30], offset + done)
        self.rows += len(rows)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The rows at `idx` (in that order, repeats allowed): (len(idx), *row_shape)."""
        out = np.empty((len(idx), *self.row_shape), self.dtype)
        flat = out.reshape(len(idx), self.row_bytes // self.dtype.itemsize)
        for j, i in enumerate(idx):
            self._read_into(flat[j], int(i) * self.row_bytes)
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop in one read."""
        out = np.empty((stop - start, *self.row_shape), self.dtype)
        self._read_into(out.reshape(-1), start * self.row_bytes)
        return out

    def _read_into(self, flat: np.ndarray, offset: int) -> None:
        view, done = memoryview(flat.view(np.uint8)), 0
        while done < len(view):
            n = os.preadv(self.file.fileno(), [view[done:]], offset + done)
            if n == 0:
                raise EOFError(f"row file ends at byte {offset + done}")
            done += n

    def memmap(self, rows: int) -> np.ndarray:
        """The first `rows` rows as a read-only memory map (pages load when touched)."""
        if rows == 0:
            return np.empty((0, *self.row_shape), self.dtype)
        return np.memmap(self.file, self.dtype, mode="r", shape=(rows, *self.row_shape))

    def close(self) -> None:
        self.file.close()


class LabelBuffer:
    """Arrays that double their capacity as episodes arrive: aggregation never copies the whole dataset per round.

    `image_memory_mb` (None: no limit) bounds the bytes its image arrays hold in memory (their capacity); beyond
    it they move to a temporary file in `spill_dir` (None: the system's temporary directory). `sample` draws the
    same indices from the generator either way, so a buffer returns the same samples wherever its images are.
    """

    def __init__(self, image_memory_mb: float | None = None, spill_dir: str | Path | None = None):
        self.arrays: dict[str, np.ndarray] = {}  # in memory, with spare capacity
        self.files: dict[str, RowFile] = {}  # image arrays moved to disk
        self.size = 0
        self.budget = None if image_memory_mb is None else int(float(image_memory_mb) * MB)
        self.spill_dir = spill_dir

    @property
    def keys(self) -> list[str]:
        return [*self.arrays, *self.files]

    @property
    def image_bytes(self) -> int:
        """Bytes of image arrays held in memory (their whole capacity)."""
        return sum(a.nbytes for a in self.arrays.values() if is_image(a))

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch of equally long arrays (T, ...), keyed by name."""
        n = len(next(iter(batch.values())))
        if not self.keys:
            self.arrays = {k: np.empty((max(1024, 2 * n), *v.shape[1:]), v.dtype) for k, v in batch.items()}
            self._keep_budget()
        if set(batch) != set(self.keys):
            raise ValueError(f"batch keys {sorted(batch)} differ from the buffer's {sorted(self.keys)}")
        cap = self._capacity()
        if cap is not None and self.size + n > cap:
            new_cap = max(2 * cap, self.size + n)
            if self._over_budget(new_cap):
                self._spill()
            for k, a in self.arrays.items():
                grown = np.empty((new_cap, *a.shape[1:]), a.dtype)
                grown[: self.size] = a[: self.size]
                self.arrays[k] = grown
        for k, v in batch.items():
            if k in self.files:
                self.files[k].append(v)
            else:
                self.arrays[k][self.size : self.size + n] = v
        self.size += n

    def _capacity(self) -> int | None:
        return len(next(iter(self.arrays.values()))) if self.arrays else None

    def _over_budget(self, capacity: int) -> bool:
        if self.budget is None:
            return False
        row_bytes = sum(a.nbytes // max(len(a), 1) for a in self.arrays.values() if is_image(a))
        return capacity * row_bytes > self.budget

    def _keep_budget(self) -> None:
        cap = self._capacity()
        if cap is not None and self._over_budget(cap):
            self._spill()

    def _spill(self) -> None:
        """Move every in-memory image array to its own row file."""
        for k in [k for k, a in self.arrays.items() if is_image(a)]:
            a = self.arrays.pop(k)
            self.files[k] = RowFile(a.shape[1:], a.dtype, self.spill_dir)
            self.files[k].append(a[: self.size])

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.size, size=batch_size)
        return self.take(idx)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The samples at `idx`, every key."""
        return {**{k: a[idx] for k, a in self.arrays.items()}, **{k: f.take(idx) for k, f in self.files.items()}}

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples start..stop, every key (read in one piece from a row file)."""
        stop = min(stop, self.size)
        return {
            **{k: a[start:stop] for k, a in self.arrays.items()},
            **{k: f.read(start, stop) for k, f in self.files.items()},
        }

    def view(self, key: str) -> np.ndarray:
        """Every sample of `key`: a view of the array in memory, or a read-only memory map of its row file."""
        if key in self.files:
            return self.files[key].memmap(self.size)
        return self.arrays[key][: self.size]

    def close(self) -> None:
        """Remove the row files (the process's end does too)."""
        for f in self.files.values():
            f.close()

    def __len__(self) -> int:
        return self.size
