"""Training samples from datasets and collected episodes: (observation, label) pairs for a LabelBuffer.

Labels are one action per state, or for chunk policies an action window per state with the observation history
that led to it (`sequence_labels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robodistill.data.buffer import LabelBuffer
from robodistill.data.dataset import dataset_summary, iter_demos, live_demos, open_dataset
from robodistill.data.lerobot import LeRobotReader, is_lerobot_dataset
from robodistill.errors import UserError

LABEL = "teacher_action"


def windows(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """For every step i of an episode, x[i + start : i + start + length], padded with the edge values:
    (T, length, ...)."""
    idx = np.clip(np.arange(len(x))[:, None] + start + np.arange(length)[None], 0, len(x) - 1)
    return x[idx]


def sequence_labels(
    obs: dict[str, np.ndarray], actions: np.ndarray, obs_keys: list[str], horizons: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """Per step: the last T_o observations {key: (T, T_o, ...)} and the T_p actions from `first_action` steps
    back (T, T_p, A); horizons = (obs_horizon, pred_horizon, first_action)."""
    obs_horizon, pred_horizon, first = horizons
    return {
        **{k: windows(obs[k], 1 - obs_horizon, obs_horizon) for k in obs_keys},
        LABEL: windows(actions, -first, pred_horizon),
    }


def episode_labels(
    episode: dict[str, Any], obs_keys: list[str], horizons: tuple[int, int, int] | None = None
) -> dict[str, np.ndarray]:
    """The (observation, teacher label) pairs of one collected episode, for a LabelBuffer; with `horizons`, windows
    of them (`sequence_labels`)."""
    if horizons:
        return sequence_labels(episode["obs"], episode["teacher"]["actions"], obs_keys, horizons)
    return {**{k: episode["obs"][k] for k in obs_keys}, LABEL: episode["teacher"]["actions"]}


def _cameras(keys: list[str], is_camera) -> str:
    names = [k for k in keys if is_camera(k)]
    return ", ".join(names) if names else "none"


def check_observations(path: str | Path, demo: h5py.Group, obs_keys: list[str], meta: dict[str, Any]) -> None:
    """One UserError if a dataset's demo lacks an observation the student reads, naming the cameras (and other
    observations) the dataset recorded and the ones the student reads."""
    recorded = sorted(demo["obs"]) if "obs" in demo else []
    missing = [k for k in obs_keys if k not in recorded]
    if not missing:
        return

    def recorded_camera(k: str) -> bool:
        d = demo["obs"][k]
        return isinstance(d, h5py.Dataset) and d.dtype == np.uint8 and d.ndim >= 4

    def read_camera(k: str) -> bool:
        return meta["obs"].get(k, {}).get("type") == "rgb"

    raise UserError(
        f"dataset {path} was recorded with cameras [{_cameras(recorded, recorded_camera)}] "
        f"(observations {recorded}), the student reads cameras [{_cameras(obs_keys, read_camera)}] "
        f"(observations {list(obs_keys)}): the dataset lacks {', '.join(f'obs/{k}' for k in missing)}; record it "
        "with the student's cameras (task.kwargs.cameras) or give the student the dataset's (student.obs_keys)"
    )


def load_labels(
    path: str | Path,
    obs_keys: list[str],
    meta: dict[str, Any],
    horizons: tuple[int, int, int] | None = None,
    chunk_label: str | None = None,
    into: LabelBuffer | None = None,
) -> LabelBuffer:
    """Read a dataset's live demos (orphans skipped) one by one into a LabelBuffer (teacher labels, else executed
    actions), checking that the dataset records every observation the student reads and their shapes.

    A directory is read as a LeRobot dataset, its features mapped to the task's keys (`LeRobotReader.sources`).
    With `horizons` (obs_horizon, pred_horizon, first_action) every sample is a window (`sequence_labels`); with
    `chunk_label` (e.g. "teacher/chunk") its label is that stored chunk instead of a window of actions. `into`: the
    empty buffer to fill (e.g. one with an image memory budget); None: a new unbounded one.
    """
    if is_lerobot_dataset(path):
        if chunk_label:
            raise UserError(f"{path} is a LeRobot dataset: it holds no {chunk_label} labels")
        lerobot = LeRobotReader(path)
        demos, label = lerobot.demos(obs_keys, meta)
        expected = int(lerobot.info["total_frames"])
    else:
        with open_dataset(path) as f:
            first = next(live_demos(f), None)
            if first is None:
                raise UserError(f"dataset {path} holds no demos")
            label = "teacher/actions" if "teacher/actions" in first else "actions"
            check_observations(path, first, obs_keys, meta)
        demos = iter_demos(path, [f"obs/{k}" for k in obs_keys] + [label] + ([chunk_label] if chunk_label else []))
        expected = None  # the HDF5's count of live samples, read at the end
    action_dim = int(meta["action"]["shape"][0])
    buffer, longest = (LabelBuffer() if into is None else into), 0
    for demo in demos:
        for k in obs_keys:
            if list(demo[f"obs/{k}"].shape[1:]) != list(meta["obs"][k]["shape"]):
                raise UserError(
                    f"dataset {path} has obs/{k} of shape {demo[f'obs/{k}'].shape[1:]}, "
                    f"the task needs {tuple(meta['obs'][k]['shape'])}"
                )
        if demo[label].shape[1:] != (action_dim,):
            raise UserError(
                f"dataset {path} has {label} of dim {demo[label].shape[1:]}, the task needs ({action_dim},)"
            )
        longest = max(longest, len(demo[label]))
        obs = {k: demo[f"obs/{k}"] for k in obs_keys}
        if not horizons:
            buffer.add({**obs, LABEL: demo[label]})
            continue
        samples = sequence_labels(obs, demo[label], obs_keys, horizons)
        if chunk_label:
            samples[LABEL] = demo[chunk_label]
        buffer.add(samples)
    if horizons and longest < horizons[1]:
        raise UserError(
            f"dataset {path} is too short for the horizons: its longest demo has {longest} steps, "
            f"pred_horizon is {horizons[1]}; collect longer demos or lower student.pred_horizon"
        )
    expected = dataset_summary(path)["samples"] if expected is None else expected
    if expected != len(buffer):
        raise UserError(f"dataset {path} says it holds {expected} samples but {len(buffer)} were read")
    return buffer
