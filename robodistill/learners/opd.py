"""VLA-OPD: on-policy distillation of a token policy, with the loss taken exactly over the action bins.

Each round:
1. The student drives every env by sampling its own tokens (beta = 0 by default: no teacher actions executed).
2. The teacher is queried on the same observations and returns its per-dimension logits (stored with the
   episode in the dataset: `teacher/logits`).
3. The student is updated on this round's states only (on-policy), per state summed over dimensions k:
   - `rkl` (default): sum_v p_s(v) [log p_s(v) - log p_T(v)]  reverse KL, mode-seeking;
   - `fkl`: sum_v p_T(v) [log p_T(v) - log p_s(v)]  forward KL, mode-covering;
   - `ce`: -log p_s(argmax_v p_T(v))  hard labels (DAgger with argmax tokens).
   No sampling enters the loss: the sums run over all bins.
4. Logged: the student's per-token entropy and its KL to the teacher on the round's states (before the update),
   and the round's success while sampling.
Collection, checkpoints, resume and evaluation are DAgger's (learners/dagger.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from robodistill.data.buffer import LabelBuffer
from robodistill.data.dataset import iter_demos
from robodistill.errors import UserError
from robodistill.learners.components import Components
from robodistill.learners.dagger import DAggerLearner
from robodistill.teachers import check_policy_shapes, load_policy

LOSSES = ("rkl", "fkl", "ce")
LOGITS = "teacher_logits"


def token_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-state loss (B,) between (B, A, V) logits, summed over the A dimensions."""
    log_p = student_logits.log_softmax(-1)
    log_q = teacher_logits.log_softmax(-1)
    if kind == "rkl":
        per_dim = (log_p.exp() * (log_p - log_q)).sum(-1)
    elif kind == "fkl":
        per_dim = (log_q.exp() * (log_q - log_p)).sum(-1)
    elif kind == "ce":
        per_dim = -log_p.gather(-1, log_q.argmax(-1, keepdim=True))[..., 0]
    else:
        raise ValueError(f"unknown OPD loss {kind!r}; choose one of {', '.join(LOSSES)}")
    return per_dim.sum(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each token's distribution (B, A), in nats."""
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1)


class OPDLearner(DAggerLearner):
    name = "opd"
    label_key = LOGITS

    def __init__(self, cfg: DictConfig, comps: Components):
        if cfg.algo.get("init"):  # post-training: start from a trained token policy (e.g. the SFT student)
            comps.student = load_policy(str(cfg.algo.init), "best").train()
            check_policy_shapes(comps.student, comps.env)
        super().__init__(cfg, comps)
        replay = str(self.algo.get("replay", "round"))
        if replay not in ("round", "all"):
            raise UserError(f"algo.replay must be round (on-policy) or all (every round's states), got {replay!r}")
        self.aggregate = replay == "all"
        self.loss = str(cfg.get("opd", {}).get("loss", "rkl"))
        if self.loss not in LOSSES:
            raise UserError(f"opd.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        student = comps.student
        if getattr(student, "kind", None) != "vla":
            raise UserError(f"algo=opd trains a token policy: use student=vla (or algo.init=<a token-policy run>), "
                            f"not a {student.kind!r} student")  # fmt: skip
        logits = comps.teacher_probe.logits if comps.teacher_probe is not None else None
        if logits is None:
            raise UserError("algo=opd needs a teacher that gives per-dimension token logits "
                            "(teacher=vla, or teacher=remote serving a token policy)")  # fmt: skip
        want = (student.action_dim, student.bins)
        if tuple(logits.shape[1:]) != want:
            raise UserError(f"teacher logits have {logits.shape[1]} action dimensions x {logits.shape[2]} bins, the "
                            f"student has {want[0]} x {want[1]}: set student.bins to the teacher's")  # fmt: skip

    def fit_normalizers(self, buffer: LabelBuffer) -> None:
        if not self.algo.get("init"):  # a post-trained student keeps the normalisers it was trained with
            super().fit_normalizers(buffer)

    def student_deterministic(self) -> bool:
        return False  # on-policy: the student samples its own tokens

    def load_buffer(self, path: str | Path) -> LabelBuffer:
        """A dataset's observations with the teacher's stored logits (resuming with `replay: all`)."""
        buffer = LabelBuffer()
        for demo in iter_demos(path, [f"obs/{k}" for k in self.student.obs_keys] + ["teacher/logits"]):
            buffer.add({**{k: demo[f"obs/{k}"] for k in self.student.obs_keys}, LOGITS: demo["teacher/logits"]})
        return buffer

    def episode_samples(self, episode: dict[str, Any]) -> dict[str, np.ndarray]:
        return {**{k: episode["obs"][k] for k in self.student.obs_keys}, LOGITS: episode["teacher"]["logits"]}

    def loss_fn(self) -> Callable:
        student, kind = self.student, self.loss

        def loss(obs: dict[str, torch.Tensor], teacher_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logits = student(obs)
            value = token_loss(logits, teacher_logits, kind).mean()
            return value, {kind: value.item()}

        return loss

    @torch.no_grad()
    def round_metrics(self, buffer: LabelBuffer, max_states: int = 2048) -> dict[str, float]:
        """The student's mean per-token entropy and its per-token KL to the teacher on this round's states."""
        idx = np.linspace(0, len(buffer) - 1, min(len(buffer), max_states)).astype(int)
        entropy, rkl, fkl = [], [], []
        self.student.eval()
        for chunk in np.array_split(idx, max(1, len(idx) // 256)):
            obs = {k: torch.as_tensor(buffer.view(k)[chunk]) for k in self.student.obs_keys}
            logits, teacher = self.student(obs), torch.as_tensor(buffer.view(LOGITS)[chunk])
            a = logits.shape[1]
            entropy.append(token_entropy(logits).mean(-1))
            rkl.append(token_loss(logits, teacher, "rkl") / a)
            fkl.append(token_loss(logits, teacher, "fkl") / a)
        return {
            "opd/entropy": torch.cat(entropy).mean().item(),
            "opd/teacher_entropy": token_entropy(torch.as_tensor(buffer.view(LOGITS)[idx])).mean().item(),
            "opd/kl": torch.cat(rkl).mean().item(),
            "opd/forward_kl": torch.cat(fkl).mean().item(),
        }
