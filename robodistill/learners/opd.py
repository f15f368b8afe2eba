"""VLA-OPD: on-policy distillation of a token policy, with the loss taken exactly over the action bins.

Each round:
1. The student drives every env by sampling its own tokens (beta = 0 by default: no teacher actions executed).
2. The teacher is queried on the same observations and returns its per-dimension logits (stored with the
   episode in the dataset: `teacher/logits`).
3. The student is updated on this round's states only (on-policy; `algo.replay=all`: on every round's), per
   state summed over dimensions k:
   - `rkl` (default): sum_v p_s(v) [log p_s(v) - log p_T(v)]  reverse KL, mode-seeking;
   - `fkl`: sum_v p_T(v) [log p_T(v) - log p_s(v)]  forward KL, mode-covering;
   - `ce`: -log p_s(argmax_v p_T(v))  hard labels (DAgger with argmax tokens).
   No sampling enters the loss: the sums run over all bins.
4. Logged: the student's per-token entropy and its KL to the teacher on the round's states (before the update),
   and the round's success while sampling.

Cached teacher (`algo.teacher_cache=<dataset>`): no teacher is built or asked. The file is a dataset whose demos hold
the teacher's logits (`teacher/logits`; e.g. an earlier opd run's data/dataset.hdf5, each episode tagged with its
round; demos without a round, such as teacher demonstrations, are round 0). Round r updates the student on the
cache's round-r states (`algo.replay=all`: rounds 0..r) instead of collecting; then a live run can continue from the
cached one (`algo.init=<cached run>`).

Specialists merged (`algo.tasks=[...]`, e.g. with `teacher=router`): each round also collects
`algo.episodes_per_round` episodes of every other task, each task labelled by its own teacher; one multi-task
student is updated on all of them and evaluated on every task. A teacher without token logits (scripted, sb3,
diffusion) gives soft targets: a Gaussian of the student's `label_sigma` bins around its action, the rule SFT fits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from omegaconf import DictConfig

from robodistill.data.buffer import LabelBuffer
from robodistill.data.dataset import live_demos, open_dataset
from robodistill.data.labels import check_observations
from robodistill.errors import UserError
from robodistill.learners.components import Components
from robodistill.learners.fitting import adam_fit, label_buffer
from robodistill.learners.rounds import Rounds
from robodistill.learners.schedules import BetaSchedule
from robodistill.learners.services import Services, load_policy_state, policy_state
from robodistill.tasks import sibling_tasks
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


class OPDLearner:
    name = "opd"
    uses_teacher = True
    data_parallel = True  # trainer.workers > 1: its fits run as DDP on Ray Train workers
    builds_student = True

    def __init__(self, cfg: DictConfig, comps: Components, services: Services):
        self.cfg, self.comps, self.services = cfg, comps, services
        a = cfg.algo
        self.student = comps.student
        if a.init:  # post-training: start from a trained token policy (e.g. the SFT student)
            self.student = load_policy(str(a.init), "best", device=comps.device).train()
            check_policy_shapes(self.student, comps.env)
        if a.replay not in ("round", "all"):
            raise UserError(f"algo.replay must be round (on-policy) or all (every round's states), got {a.replay!r}")
        self.loss = str(cfg.opd.loss)
        if self.loss not in LOSSES:
            raise UserError(f"opd.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if getattr(self.student, "kind", None) != "vla":
            raise UserError(
                f"algo=opd trains a token policy: use student=vla (or algo.init=<a token-policy run>), "
                f"not a {self.student.kind!r} student"
            )
        want = (self.student.action_dim, self.student.bins)
        self.cache = Path(a.teacher_cache) if a.teacher_cache else None
        self.tasks = sibling_tasks(comps.task, a.tasks)[1:]  # the other tasks of a multi-task student
        if self.cache is not None:  # no teacher: its logits come from the file
            if self.tasks:
                raise UserError("algo.teacher_cache replays one task's states: leave algo.tasks empty")
            check_cache(self.cache, self.student, comps, int(a.rounds))
            return
        logits = comps.teacher_probe.logits if comps.teacher_probe is not None else None
        if logits is not None and tuple(logits.shape[1:]) != want:  # none: soft targets around its actions
            raise UserError(
                f"teacher logits have {logits.shape[1]} action dimensions x {logits.shape[2]} bins, the "
                f"student has {want[0]} x {want[1]}: set student.bins to the teacher's"
            )

    @staticmethod
    def needs_teacher(cfg: DictConfig) -> bool:
        """A run replaying a teacher cache builds no teacher."""
        return not cfg.algo.teacher_cache

    def fit(self) -> dict[str, Any]:
        a, student = self.cfg.algo, self.student
        keys, replay_all = student.obs_keys, a.replay == "all"
        schedule = BetaSchedule(**a.beta)
        steps, batch = int(a.updates_per_round), int(a.batch_size)  # per round
        updates = int(a.rounds) * steps
        fit = adam_fit(student, self.services, updates)
        buffer = label_buffer(self.services)
        ckpt = self.services.resume()
        if ckpt is not None:
            load_policy_state(student, ckpt)
            fit.load_state_dict(ckpt)

        kind = self.loss  # the loss captures the student and its kind only: it travels to DDP workers

        def loss(obs: dict[str, torch.Tensor], teacher_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            value = token_loss(student(obs), teacher_logits, kind).mean()
            return value, {kind: value.item()}

        def add(episode: dict[str, Any]) -> None:
            buffer.add({**{k: episode["obs"][k] for k in keys}, LOGITS: teacher_logits(student, episode["teacher"])})

        # on-policy: the student samples its own tokens
        with Rounds(self.services, ckpt, student, False, self.tasks) as rounds:
            if ckpt is not None and replay_all and self.cache is None:  # every checkpointed round's states
                buffer = load_logits(rounds.dataset, student, into=buffer)
            for r in rounds:
                beta = schedule(r)
                if not replay_all or self.cache is not None:
                    buffer.close()
                    buffer = label_buffer(self.services)
                if self.cache is not None:  # the cache's states of this round (replay=all: of rounds 0..r)
                    buffer = load_logits(self.cache, student, buffer, range(r + 1) if replay_all else [r])
                    rounds.replayed(r, cached_states(self.cache, r))
                else:
                    rounds.collect(r, beta, add)
                if r == 0 and not a.init:  # a post-trained student keeps the normalisers it was trained with
                    student.fit_normalizers({k: buffer.view(k) for k in keys})
                before = round_metrics(student, buffer)
                losses = fit.regress(
                    student,
                    buffer,
                    steps,
                    batch,
                    loss_fn=loss,
                    label=LOGITS,
                    progress=self.services.progress,
                    desc=f"round {r} fit",
                )
                metrics = {"dataset_size": len(buffer), **before, **losses}
                rounds.end(r, student, metrics, {**policy_state(student), **fit.state_dict()})
        return rounds.finish(student, updates, self.tasks)


def teacher_logits(student: Any, teacher: dict[str, np.ndarray]) -> np.ndarray:
    """An episode's teacher targets (T, A, V): its stored logits, or for a teacher without them the log of soft
    targets around its actions (a Gaussian of the student's `label_sigma` bins; one-hot when 0)."""
    if "logits" in teacher:
        return teacher["logits"]
    actions = torch.as_tensor(np.asarray(teacher["actions"], np.float32))
    tok = student.tokenizer
    if student.label_sigma > 0:
        p = tok.soft_targets(actions, student.label_sigma)
    else:
        p = torch.nn.functional.one_hot(tok.tokenize(actions), student.bins).float()
    return p.clamp_min(1e-6).log().numpy(force=True).astype(np.float32)


def load_logits(path: str | Path, student: Any, into: LabelBuffer, rounds: Any = None) -> LabelBuffer:
    """A dataset's observations with the teacher's targets (`teacher_logits`: stored logits, else soft targets
    around its actions) of the demos of `rounds` only (all when None), added to the buffer `into`."""
    wanted = None if rounds is None else set(rounds)
    fields = [f"obs/{k}" for k in student.obs_keys]
    with open_dataset(path) as f:  # read here, not by iter_demos: the logits are optional
        for g in live_demos(f):
            if wanted is not None and demo_round(g) not in wanted:
                continue
            teacher = {k: g[f"teacher/{k}"][()] for k in ("logits", "actions") if f"teacher/{k}" in g}
            obs = {k.removeprefix("obs/"): g[k][()] for k in fields}
            into.add({**obs, LOGITS: teacher_logits(student, teacher)})
    return into


def demo_round(demo: h5py.Group) -> int:
    """The round a demo was collected in (Rounds tags each episode); 0 for a demo without one (e.g. a teacher
    demonstration)."""
    return int(demo.attrs.get("round", 0))


def cached_states(path: str | Path, r: int) -> int:
    """The number of states round `r` of a teacher cache holds."""
    with open_dataset(path) as f:
        return sum(int(g.attrs["num_samples"]) for g in live_demos(f) if demo_round(g) == r)


def check_cache(path: Path, student: Any, comps: Components, rounds: int) -> None:
    """One UserError, before training, for a teacher cache that cannot stand in for the teacher: no demos or no
    stored logits, another task, logits of another action size or bin count, a student observation it lacks, or
    fewer rounds than the run replays."""
    with open_dataset(path) as f:
        demos = list(live_demos(f))
        if not demos:
            raise UserError(f"teacher cache {path} holds no demos")
        recorded = json.loads(f["data"].attrs["env_args"]).get("env_name")
        if recorded != comps.task["env_id"]:
            raise UserError(
                f"teacher cache {path} was recorded on {recorded}, this run's task is {comps.task['env_id']}"
            )
        first = demos[0]
        if "teacher/logits" not in first:
            raise UserError(
                f"teacher cache {path} holds no teacher logits (teacher/logits): record it with a token teacher "
                "(an algo=opd run's data/dataset.hdf5)"
            )
        shape = tuple(first["teacher/logits"].shape[1:])
        if shape != (student.action_dim, student.bins):
            raise UserError(
                f"teacher cache {path} holds logits of {shape[0]} action dimensions x {shape[1]} bins, the student "
                f"has {student.action_dim} x {student.bins}: set student.bins to the cache's, or use a cache of this "
                "action space"
            )
        check_observations(path, first, student.obs_keys, comps.shape_meta)
        held = sorted({demo_round(g) for g in demos})
    missing = [r for r in range(rounds) if r not in held]
    if missing:
        raise UserError(
            f"teacher cache {path} holds the states of rounds {held}, but algo.rounds={rounds} replays rounds "
            f"0..{rounds - 1} (missing {missing}): lower algo.rounds or record a cache with more rounds"
        )


@torch.no_grad()
def round_metrics(student: torch.nn.Module, buffer: LabelBuffer, max_states: int = 2048) -> dict[str, float]:
    """The student's mean per-token entropy and its per-token KL to the teacher on this round's states."""
    idx = np.linspace(0, len(buffer) - 1, min(len(buffer), max_states)).astype(int)
    entropy, rkl, fkl = [], [], []
    student.eval()
    for chunk in np.array_split(idx, max(1, len(idx) // 256)):
        obs = student.tensors({k: buffer.view(k)[chunk] for k in student.obs_keys})
        logits, teacher = student(obs), torch.as_tensor(buffer.view(LOGITS)[chunk], device=student.device)
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
