"""The `device` setting: where networks, their noise tables and the tensors they are fed live.

`auto` is the first CUDA GPU torch sees, else the CPU; `cpu`, `cuda` and `cuda:N` name one. A GPU that is not there
is refused in one line rather than failing at the first tensor.
"""

from __future__ import annotations

import re

import torch

from robodistill.errors import UserError

DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The torch device `spec` names (None: auto); UserError for another spelling or a GPU torch cannot see."""
    name = "auto" if spec is None else str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"device={spec} is not a device: use {DEVICES}")
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA driver or GPU is visible"
        raise UserError(f"device={spec}: torch {torch.__version__} sees no CUDA GPU ({why}); use device=cpu or auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device={spec}: torch sees {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to cuda:N-1")
    return torch.device("cuda", index)
