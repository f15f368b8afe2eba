"""Observation views: every env observation as a dict of arrays, and the sub-dict a teacher or student reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from envs import PROPRIO_KEY, cameras_read

STATE_KEY = "state"  # the key a flat Box observation gets
INSTRUCTION_KEY = "instruction"  # the language instruction, UTF-8 bytes (uint8, zero padded)


def as_dict(obs: Any) -> dict[str, np.ndarray]:
    """A Box observation becomes {"state": obs}; a Dict observation stays as it is."""
    if isinstance(obs, dict):
        return obs
    return {STATE_KEY: obs}


def view(obs: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    """The part of an observation dict a consumer reads."""
    return {k: obs[k] for k in keys}


def stack(obs_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-step observation dicts into arrays (T, ...)."""
    return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}


def obs_mode_for(keys: Iterable[str]) -> str:
    """Smallest robodistill obs_mode that provides all `keys` (`rgb`: the cameras and proprioception)."""
    keys = set(keys)
    language = "+language" if INSTRUCTION_KEY in keys else ""
    if PROPRIO_KEY not in keys and not cameras_read(keys):
        return "state" + language
    return ("state+rgb" if STATE_KEY in keys else "rgb") + language
