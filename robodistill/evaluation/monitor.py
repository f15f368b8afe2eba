"""Calibrate and run the failure monitor (`robodistill.runtime.monitor`) on a trained student, in evaluation.

- Embedding: a diffusion-family student's FiLM condition of its observation history (what its denoiser sees); a
  Gaussian student's observation features.
- RND: a fixed random target network and a predictor trained on the calibration rollouts' embeddings; the score is
  the predictor's squared error (large on embeddings unlike those it was trained on).
- Chunk spread ("entropy"): `samples` chunks sampled for the same observation (DDIM-10 for a diffusion policy, the
  consistency head's own chain), the mean per-element standard deviation of their executed actions (what an
  exported artifact's sampler returns); a Gaussian student's predicted spread (the geometric mean of its std). A
  token student
  cannot be sampled this way: one error.
- Calibration (`calibrate`): successful rollouts of the student on seeds apart from the evaluation's; half of them
  train the RND predictor, the other half set each signal's conformal threshold on per-rollout scores.
The monitor is saved as `monitor.pt` beside the checkpoint, with the checkpoint's sha256: a monitor calibrated for
another checkpoint is refused at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policies import chunked
from policies.samplers import DDIM_STEPS, make_sampler
from robodistill.config import to_dict
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import evaluate, student_policy
from robodistill.observations import obs_mode_for, view
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import sha256
from robodistill.runtime.monitor import (
    JOINT,
    METHODS,
    SIGNALS,
    FailureMonitor,
    MonitorError,
    joint_thresholds,
    method_thresholds,
    min_rollouts,
    rollout_score,
    thresholds_at,
)
from robodistill.tasks import task_for_keys
from robodistill.teachers import load_run_policy

MONITOR_FILE = "monitor.pt"


class RND(nn.Module):
    """Random network distillation on embeddings: score = mean squared error of a trained predictor against a fixed
    random target, on embeddings standardised by the training set's mean and std."""

    def __init__(self, dim: int, width: int = 128, out: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.target = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, out))
        for p in self.target.parameters():
            p.data = torch.randn(p.shape, generator=g) * (1.0 / max(p.shape[-1], 1) ** 0.5)
            p.requires_grad_(False)
        self.predictor = nn.Sequential(
            nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out)
        )
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        z = (emb - self.mean) / self.std
        return ((self.predictor(z) - self.target(z)) ** 2).mean(-1)  # (B,)

    def fit(self, emb: np.ndarray, updates: int = 2000, batch: int = 256, seed: int = 0) -> float:
        """Train the predictor on embeddings (N, D); returns the final mean score on them."""
        x = torch.as_tensor(emb, dtype=torch.float32)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        opt = torch.optim.Adam(self.predictor.parameters(), lr=1e-3)
        rng = np.random.default_rng(seed)
        for _ in range(updates):
            idx = torch.as_tensor(rng.integers(len(x), size=min(batch, len(x))))
            loss = self(x[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(self(x).mean())


class EmbeddingGraph(nn.Module):
    """What the exported monitor reads of a student: observations (sorted keys; histories (B, T_o, ...) for a chunk
    student) -> its embedding (B, D) as `Signals` takes it; a Gaussian student's also its spread (B,)."""

    def __init__(self, student: Any):
        super().__init__()
        self.student, self.keys = student, sorted(student.obs_keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s, x = self.student, dict(zip(self.keys, obs))
        return s.condition(x) if chunked(s) else gaussian_signals(s, x)


def gaussian_signals(student: Any, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian student's embedding (its features, (B, D)) and spread (the geometric mean of its std, (B,))."""
    _, log_std = student(x)
    return student.features(x), log_std.mean(-1).exp()


def embeddings(student: Any, obs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`EmbeddingGraph` on observations (N, ...) or histories (N, T_o, ...): embeddings and, for a Gaussian student,
    spreads (else None)."""
    graph = EmbeddingGraph(student)
    with torch.inference_mode():
        out = graph(*[torch.as_tensor(obs[k]) for k in graph.keys])
    return out if isinstance(out, tuple) else (out, None)


class Signals:
    """A student's per-step embedding and chunk spread, for a batch of env slots, beside the runner that acts."""

    def __init__(self, student: Any, runner: Any, samples: int = 8):
        self.student, self.runner, self.samples = student, runner, int(samples)
        if chunked(student):
            kind = getattr(student, "kind", "")
            cfg = (
                {"kind": "consistency"}
                if kind == "consistency"
                else {"kind": "ddim", "num_inference_steps": DDIM_STEPS}
            )
            self.sampler = make_sampler(student, cfg)  # its own: the runner's sampler state stays untouched
        elif hasattr(student, "log_std") and getattr(student, "obs_horizon", 1) == 1:
            self.sampler = None  # a Gaussian student: its predicted spread
        else:
            name = getattr(student, "kind", type(student).__name__)
            raise MonitorError(
                f"the failure monitor needs a student it can sample chunks from (diffusion, consistency) or a Gaussian "
                f"student of one observation; a {name!r} student cannot report its action spread"
            )

    @torch.inference_mode()
    def __call__(self, obs: Mapping[str, np.ndarray], slots: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (B, D) and spreads (B,) of the slots' current observations (call after the runner acted on
        them: a chunk runner's history then holds them)."""
        if self.sampler is None:
            s = self.student
            emb, spread = gaussian_signals(s, s.tensors(view(obs, s.obs_keys)))
            return emb.numpy(force=True), spread.numpy(force=True)
        cond = self.runner.condition(slots)  # (B, C)
        k = self.samples
        chunks = self.sampler.plan(cond.repeat_interleave(k, 0), [s for s in slots for _ in range(k)])
        executed = self.sampler.executed(chunks)  # (B * k, T_a, A): the actions that would run, as the runtime has them
        spread = executed.reshape(len(cond), k, -1).std(1).mean(-1)
        return cond.numpy(force=True), spread.numpy(force=True)


class MonitoredPolicy:
    """An evaluation policy (`student_policy`'s: a chunk runner, or a Gaussian student's mean action) that also
    scores every step and reports, per episode, the step at which the monitor's alarm first fired
    (`episode_report`)."""

    def __init__(
        self,
        student: Any,
        runner: Any,
        rnd: RND | None,
        monitors: Mapping[str, FailureMonitor],
        samples: int = 8,
        record: bool = False,
    ):
        self.student, self.runner, self.rnd, self.monitors = student, runner, rnd, dict(monitors)
        self.signals = Signals(student, runner, samples)
        self.record = record
        self.embeds: dict[int, list[np.ndarray]] = {}
        self.trace: dict[int, dict[str, list[float]]] = {}
        self.alarms: dict[int, dict[str, int | None]] = {}
        self.step: dict[int, int] = {}

    def reset(self, slot: int | None = None) -> None:
        if hasattr(self.runner, "reset"):
            self.runner.reset(slot)
        key = slot or 0
        for m in self.monitors.values():
            m.reset(key)
        self.trace[key], self.embeds[key] = {s: [] for s in SIGNALS}, []
        self.alarms[key], self.step[key] = dict.fromkeys(self.monitors), 0

    @torch.inference_mode()
    def __call__(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> np.ndarray:
        slots = list(range(len(next(iter(obs.values()))))) if slots is None else list(slots)
        actions = self.runner(obs, slots) if hasattr(self.runner, "reset") else self.runner(obs)
        emb, spread = self.signals(obs, slots)
        rnd = self.rnd(torch.as_tensor(emb, dtype=torch.float32)).numpy() if self.rnd is not None else None
        for j, slot in enumerate(slots):
            if slot not in self.trace:
                self.reset(slot)
            scores = {"entropy": float(spread[j])}
            if rnd is not None:
                scores["rnd"] = float(rnd[j])
            for name, value in scores.items():
                self.trace[slot][name].append(value)
            if self.record:
                self.embeds[slot].append(emb[j])
            for name, m in self.monitors.items():
                if m.update(scores, slot) and self.alarms[slot][name] is None:
                    self.alarms[slot][name] = self.step[slot]
            self.step[slot] += 1
        return actions

    def episode_report(self, slot: int) -> dict[str, Any]:
        """The episode just finished in `slot`: each method's first alarm step (None: no alarm), its per-step scores
        and (when recording, for calibration) its embeddings (T, D)."""
        report: dict[str, Any] = {
            "alarm_step": dict(self.alarms.get(slot, {})),
            "monitor_scores": self.trace.get(slot, {}),
        }
        if self.record:
            report["embeddings"] = np.stack(self.embeds.get(slot, [])) if self.embeds.get(slot) else None
        return report


def save_monitor(path: str | Path, rnd: RND, thresholds: Mapping[str, float], info: Mapping[str, Any]) -> Path:
    path = Path(path)
    torch.save(
        {"rnd": rnd.state_dict(), "rnd_dim": int(rnd.mean.numel()), "thresholds": dict(thresholds), **info}, path
    )
    return path


def load_monitor(path: str | Path, checkpoint: str | Path) -> dict[str, Any]:
    """A saved monitor, refused unless it was calibrated for `checkpoint` (its sha256)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: calibrate first (python scripts/calibrate.py run=<run>)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    expected = sha256(checkpoint)  # what a monitor is calibrated for
    if state.get("checkpoint_sha256") != expected:
        raise UserError(
            f"{path} was calibrated for another checkpoint (sha256 {str(state.get('checkpoint_sha256'))[:12]}..., "
            f"{checkpoint} has {expected[:12]}...): calibrate again for this one"
        )
    rnd = RND(state["rnd_dim"])
    rnd.load_state_dict(state["rnd"])
    state["rnd_module"] = rnd.eval()
    return state


def rollout_scores(
    rollouts: list[dict[str, list[float]]], rnd_scores: list[list[float]], window: int
) -> dict[str, list[float]]:
    """Each held-out successful rollout's score per signal: the largest window mean it reached."""
    return {
        "entropy": [rollout_score(r["entropy"], window) for r in rollouts],
        "rnd": [rollout_score(r, window) for r in rnd_scores],
    }


def first_alarm(
    trace: Mapping[str, list[float]], thresholds: Mapping[str, float], window: int, method: str
) -> int | None:
    """The step at which `method`'s alarm first fires on an episode's per-step scores (None: never)."""
    monitor = FailureMonitor(thresholds, window, method)
    for step, scores in enumerate(zip(*(trace[s] for s in SIGNALS), strict=True)):
        if monitor.update(dict(zip(SIGNALS, scores, strict=True))):
            return step
    return None


def monitored_policy(
    student: Any,
    sampler: Mapping[str, Any] | None,
    state: Mapping[str, Any] | None = None,
    samples: int = 8,
    record: bool = False,
) -> MonitoredPolicy:
    """`student` as evaluation runs it (with its sampler), scored every step; with a loaded monitor `state`, the
    alarm of each method (fiper_joint, fiper, rnd, entropy) at the state's thresholds."""
    runner = student_policy(student, sampler)
    if state is None:
        return MonitoredPolicy(student, runner, None, {}, samples, record)
    monitors = {
        m: FailureMonitor(method_thresholds(state, m), int(state["window"]), m)
        for m in METHODS
        if m != JOINT or state.get("joint_thresholds")  # a monitor calibrated before fiper_joint has none
    }
    return MonitoredPolicy(student, runner, state["rnd_module"], monitors, int(state["samples"]), record)


def run_student(run_dir: str | Path) -> tuple[RunDir, Any, dict[str, Any] | None, dict[str, Any]]:
    """A run (checked), its best student on the CPU, its sampler config (None for a config written before there
    was one) and the task made with just the keys the student reads."""
    run = RunDir(run_dir).require()
    cfg = run.config()
    student = load_run_policy(run.dir, "best", torch.device("cpu"))
    sampler = cfg.get("sampler")
    return (
        run,
        student,
        to_dict(sampler) if sampler is not None else None,
        task_for_keys(to_dict(cfg.task), student.obs_keys),
    )


def calibrate(
    run_dir: str | Path,
    alpha: float = 0.05,
    episodes: int = 100,
    window: int = 4,
    samples: int = 8,
    seed: int = 200_000,
    num_envs: int = 10,
    rnd_updates: int = 2000,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate the run's best checkpoint: `episodes` rollouts from seeds `seed`.. (apart from the evaluation's),
    their successful ones split in two (RND training, conformal calibration); saves `monitor.pt` in the run
    directory and returns its summary."""
    run, student, sampler, task = run_student(run_dir)
    checkpoint = run.checkpoint_path("best")
    need = 2 * min_rollouts(alpha)
    policy = monitored_policy(student, sampler, None, samples, record=True)
    result = evaluate(policy, task, obs_mode_for(student.obs_keys), episodes, seed, num_envs, progress=progress)
    good = [r for r in result["per_episode"] if r["success"]]
    if len(good) < need:
        raise MonitorError(
            f"{len(good)} of {episodes} calibration rollouts succeeded; alpha={alpha} needs at least {need} successful "
            f"ones ({need // 2} to train the RND predictor, {need // 2} for the conformal threshold): raise episodes= "
            f"to about {int(np.ceil(need * episodes / max(len(good), 1) * 1.2))}, or raise alpha"
        )
    train, held = good[0::2], good[1::2]
    rnd = RND(int(train[0]["embeddings"].shape[1]), seed=seed)
    rnd.fit(np.concatenate([r["embeddings"] for r in train]), updates=rnd_updates, seed=seed)
    with torch.no_grad():
        rnd_scores = [rnd(torch.as_tensor(r["embeddings"], dtype=torch.float32)).numpy().tolist() for r in held]
    scores = rollout_scores([r["monitor_scores"] for r in held], rnd_scores, window)
    thresholds = thresholds_at(scores, alpha)
    traces = [{"rnd": rnd, "entropy": r["monitor_scores"]["entropy"]} for r, rnd in zip(held, rnd_scores, strict=True)]
    try:
        joint, joint_note = joint_thresholds(traces, window, alpha), None
    except MonitorError as exc:  # a signal without positive scores (degenerate): the other methods still work
        joint, joint_note = None, str(exc)
    info = {
        "checkpoint_sha256": sha256(checkpoint),
        "checkpoint": checkpoint.name,
        "alpha": alpha,
        "window": window,
        "samples": samples,
        "episodes": episodes,
        "successes": len(good),
        "rnd_train_rollouts": len(train),
        "calibration_rollouts": len(held),
        "seed": seed,
        "calibration_scores": scores,  # thresholds at any other alpha: thresholds_at(scores, alpha)
        "calibration_traces": traces,  # each held-out rollout's per-step scores: joint_thresholds at any alpha
        "joint_thresholds": joint,
        "joint_note": joint_note,
    }
    path = save_monitor(run.dir / MONITOR_FILE, rnd, thresholds, info)
    return {**info, "thresholds": thresholds, "path": str(path)}
