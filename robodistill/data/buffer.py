"""Growable in-memory store of (observation, label) pairs that learners sample minibatches from."""

from __future__ import annotations

import numpy as np


class LabelBuffer:
    """Arrays that double their capacity as episodes arrive: aggregation never copies the whole dataset per round."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch of equally long arrays (T, ...), keyed by name."""
        n = len(next(iter(batch.values())))
        if not self.arrays:
            self.arrays = {k: np.empty((max(1024, 2 * n), *v.shape[1:]), v.dtype) for k, v in batch.items()}
        if set(batch) != set(self.arrays):
            raise ValueError(f"batch keys {sorted(batch)} differ from the buffer's {sorted(self.arrays)}")
        cap = len(next(iter(self.arrays.values())))
        if self.size + n > cap:
            new_cap = max(2 * cap, self.size + n)
            for k, a in self.arrays.items():
                grown = np.empty((new_cap, *a.shape[1:]), a.dtype)
                grown[: self.size] = a[: self.size]
                self.arrays[k] = grown
        for k, v in batch.items():
            self.arrays[k][self.size : self.size + n] = v
        self.size += n

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        idx = rng.integers(0, self.size, size=batch_size)
        return {k: a[idx] for k, a in self.arrays.items()}

    def view(self, key: str) -> np.ndarray:
        return self.arrays[key][: self.size]

    def __len__(self) -> int:
        return self.size
