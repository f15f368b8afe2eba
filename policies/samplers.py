"""Samplers for chunk policies, and the runner that executes their chunks in a control loop.

A sampler plans normalised action chunks (B, T_p, A) for a batch of env slots from their FiLM conditions and says
how many actions of each plan are executed. `ChunkRunner` keeps each slot's observation history and action queue
and calls the sampler only for slots whose queue ran out, batching them; `HistoryRunner` keeps the history of a
one-step policy that reads one (a Gaussian student's stacked frames).

- `ddpm`: ancestral sampling over all N training steps.     - `ddim`: K deterministic DDIM steps.
- `rti`: real-time iteration: the first call samples fully, later calls warm-start from the previous clean
  chunk shifted by the one executed step and run a short step list (default [50, 25, 0]; the example [3, 1, 0]
  corrects the warm start too little for PushT with our CPU-sized DP); re-plans every step.
- `sdp`: streaming: a rolling buffer whose noise grows along the horizon; per observation it denoises until the
  first chunk is clean, executes it, shifts by a chunk, re-noises every shifted position to its new level and
  appends fresh noise at the top level.
- `consistency`: a consistency head's 1-3 evaluations.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policies.consistency import ConsistencyPolicy
from policies.diffusion_policy import DiffusionPolicy, ddim_denoise
from policies.registry import chunked

SAMPLERS = ("auto", "ddpm", "ddim", "rti", "sdp", "consistency")
DDIM_STEPS = 10  # DDIM-10: how a diffusion policy samples where no sampler config says (conf/sampler/ddim.yaml)
GRIPPER_MODES = ("none", "clip", "scale")


class Sampler:
    """Plans chunks for a batch of slots; counts network evaluations per sample (`nfe`)."""

    executes: int  # actions executed per plan

    def __init__(self, policy: DiffusionPolicy):
        self.policy = policy
        self.nfe = 0

    def reset(self, slot: int | None = None) -> None:
        """Forget the per-episode state of `slot` (all slots when None)."""

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        """Normalised chunks (B, T_p, A) for the slots whose conditions are `cond` (B, C)."""
        raise NotImplementedError

    def executed(self, chunk: torch.Tensor) -> torch.Tensor:
        """The part of a normalised chunk that runs, un-normalised: (B, executes, A)."""
        first = self.policy.first_action
        return self.policy.unnormalize_actions(chunk[:, first : first + self.executes])


class DDPMSampler(Sampler):
    def __init__(self, policy: DiffusionPolicy):
        super().__init__(policy)
        self.executes = policy.action_horizon

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        p = self.policy
        x = torch.randn(len(cond), p.pred_horizon, p.action_dim, device=cond.device)
        for t in reversed(range(p.num_train_steps)):
            x = p.schedule.ddpm_step(p.eps(x, torch.full((len(x),), t, device=x.device), cond), t, x)
        self.nfe += len(x) * p.num_train_steps
        return x


class DDIMSampler(Sampler):
    def __init__(self, policy: DiffusionPolicy, num_inference_steps: int = DDIM_STEPS):
        super().__init__(policy)
        self.executes = policy.action_horizon
        self.timesteps = policy.schedule.ddim_timesteps(int(num_inference_steps))

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        x = torch.randn(len(cond), self.policy.pred_horizon, self.policy.action_dim, device=cond.device)
        self.nfe += len(x) * len(self.timesteps)
        return ddim_denoise(self.policy, x, cond, self.timesteps)


class RTISampler(Sampler):
    """Real-time iteration: warm start + a short step list, re-planning at every control step."""

    def __init__(
        self,
        policy: DiffusionPolicy,
        timesteps: list[int] = (50, 25, 0),
        num_inference_steps: int = DDIM_STEPS,
        gripper: str = "clip",
        gripper_clip_factor: float = 2.0,
    ):
        super().__init__(policy)
        self.executes = 1
        self.timesteps = sorted({int(t) for t in timesteps}, reverse=True)
        if not self.timesteps or self.timesteps[0] >= policy.num_train_steps or self.timesteps[-1] < 0:
            raise ValueError(f"rti timesteps must lie in [0, {policy.num_train_steps}), got {list(timesteps)}")
        if gripper not in GRIPPER_MODES:
            raise ValueError(f"rti gripper must be one of {GRIPPER_MODES}, got {gripper!r}")
        if gripper == "scale" and policy.gripper_scale == 1.0:
            raise ValueError(
                "rti gripper=scale needs a policy trained with student.gripper_scale=0.1 (the "
                "gripper dimension scaled down in the training data); use gripper=clip otherwise"
            )
        self.first = DDIMSampler(policy, num_inference_steps)
        self.gripper, self.bound = gripper, 1.0 / float(gripper_clip_factor)
        self.previous: dict[int, torch.Tensor] = {}  # slot -> last clean chunk (T_p, A), normalised

    def reset(self, slot: int | None = None) -> None:
        if slot is None:
            self.previous.clear()
        else:
            self.previous.pop(slot, None)

    def warm_start(self, previous: torch.Tensor) -> torch.Tensor:
        """The previous clean chunk shifted by the one executed step, padded with its last action."""
        x = torch.cat([previous[1:], previous[-1:]], dim=0)
        dims = self.policy.gripper_dims
        if self.gripper == "clip" and dims:  # a saturated +-1 gripper could not flip in a few small steps
            x[:, dims] = x[:, dims].clamp(-self.bound, self.bound)
        return x

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        chunks = cond.new_empty(len(cond), self.policy.pred_horizon, self.policy.action_dim)
        cold = [i for i, s in enumerate(slots) if s not in self.previous]
        warm = [i for i, s in enumerate(slots) if s in self.previous]
        if cold:
            chunks[cold] = self.first.plan(cond[cold], [slots[i] for i in cold])
            self.nfe += len(cold) * len(self.first.timesteps)
        if warm:
            x = torch.stack([self.warm_start(self.previous[slots[i]]) for i in warm])
            chunks[warm] = ddim_denoise(self.policy, x, cond[warm], self.timesteps)
            self.nfe += len(warm) * len(self.timesteps)
        for i, s in enumerate(slots):
            self.previous[s] = chunks[i]
        return chunks

    def executed(self, chunk: torch.Tensor) -> torch.Tensor:
        dims = self.policy.gripper_dims
        if self.gripper != "none" and dims:  # a discrete gripper: threshold the output (in normalised units)
            chunk = chunk.clone()
            chunk[..., dims] = torch.where(chunk[..., dims] >= 0, 1.0, -1.0) * self.policy.gripper_scale
        return super().executed(chunk)


class SDPSampler(Sampler):
    """Streaming diffusion: a rolling buffer with noise increasing along the horizon, one chunk out per plan."""

    def __init__(self, policy: DiffusionPolicy):
        if policy.noise_levels != "sdp":
            raise ValueError("sampler=sdp needs a policy trained with per-position noise levels (student=sdp)")
        super().__init__(policy)
        self.executes = policy.action_horizon
        chunks = policy.pred_horizon // policy.action_horizon
        self.step = policy.num_train_steps // chunks
        # levels before a plan in the steady state: chunk c at (c + 1) * N / h - 1
        self.target = policy.sdp_levels(torch.tensor([self.step - 1], device=policy.device))[0]  # (T_p,)
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # slot -> (x (T_p, A), levels (T_p,))

    def reset(self, slot: int | None = None) -> None:
        if slot is None:
            self.buffers.clear()
        else:
            self.buffers.pop(slot, None)

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        p, n, device = self.policy, self.policy.num_train_steps, cond.device
        xs, levels = [], []
        for s in slots:  # a new episode starts from pure noise at the top level everywhere (a full first plan)
            top = torch.full((p.pred_horizon,), n - 1, device=device)
            x, lv = self.buffers.get(s, (torch.randn(p.pred_horizon, p.action_dim, device=device), top))
            xs.append(x)
            levels.append(lv)
        x, lv = torch.stack(xs), torch.stack(levels)  # (B, T_p, A), (B, T_p)
        first = slice(0, self.executes)
        while True:
            active = (lv[:, first] >= 0).any(1)  # slots whose first chunk is not clean yet
            if not active.any():
                break
            idx = active.nonzero()[:, 0]
            eps = p.eps(x[idx], lv[idx].clamp(min=0), cond[idx])
            x[idx] = p.schedule.ddpm_step(eps, lv[idx], x[idx])
            lv[idx] = (lv[idx] - 1).clamp(min=-1)
            self.nfe += len(idx)
        chunk = x.clone()
        # shift by one chunk, append fresh noise at the top level, re-noise every shifted position to its level
        x = torch.cat([x[:, self.executes :], torch.randn(len(x), self.executes, p.action_dim, device=device)], dim=1)
        lv = torch.cat([lv[:, self.executes :], torch.full((len(x), self.executes), n - 1, device=device)], dim=1)
        target = self.target.expand_as(lv)
        low = lv < target
        x = torch.where(low[..., None], p.schedule.renoise(x, lv, target), x)
        lv = torch.where(low, target, lv)
        for i, s in enumerate(slots):
            self.buffers[s] = (x[i], lv[i])
        return chunk


class ConsistencySampler(Sampler):
    """One evaluation from noise at t_max; with 2-3 steps, re-noise the estimate to a lower t and map again."""

    def __init__(self, policy: ConsistencyPolicy, num_steps: int = 1):
        super().__init__(policy)
        self.executes = policy.action_horizon
        self.timesteps = policy.chain_timesteps(int(num_steps))

    def plan(self, cond: torch.Tensor, slots: list[int]) -> torch.Tensor:
        p: ConsistencyPolicy = self.policy  # type: ignore[assignment]
        x0 = cond.new_zeros(len(cond), p.pred_horizon, p.action_dim)
        for i, t in enumerate(self.timesteps):
            ts = torch.full((len(x0),), t, device=x0.device)
            # from pure noise first; then the estimate re-noised to the next, lower step
            x = torch.randn_like(x0) if i == 0 else p.schedule.add_noise(x0, torch.randn_like(x0), ts)
            x0 = p.consistency(x, ts, cond).clamp(-1.0, 1.0)
        self.nfe += len(x0) * len(self.timesteps)
        return x0


def make_sampler(policy: Any, cfg: Mapping[str, Any]) -> Sampler:
    """The sampler `cfg.kind` for `policy`, or ValueError saying why it does not fit."""
    kind = cfg.get("kind", "auto")
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; available: {', '.join(SAMPLERS)}")
    if not isinstance(policy, DiffusionPolicy):
        raise ValueError(
            f"sampler={kind} needs a diffusion-family policy, but this run's policy is "
            f"{getattr(policy, 'kind', type(policy).__name__)!r}"
        )
    consistency = isinstance(policy, ConsistencyPolicy)
    if kind == "auto":
        kind = "consistency" if consistency else "sdp" if policy.noise_levels == "sdp" else "ddpm"
    if consistency != (kind == "consistency"):
        raise ValueError(
            "a consistency head samples only with sampler=consistency, and only it does"
            if consistency
            else "sampler=consistency needs a consistency head (algo=consistency)"
        )
    options = {k: v for k, v in cfg.items() if k != "kind"}  # the sampler's own keys (its defaults below)
    sampler = {
        "ddpm": DDPMSampler,
        "ddim": DDIMSampler,
        "rti": RTISampler,
        "sdp": SDPSampler,
        "consistency": ConsistencySampler,
    }[kind]
    valid = [name for name in inspect.signature(sampler).parameters if name != "policy"]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(
            f"sampler={kind} has no key {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid) or 'none'}"
        )
    return sampler(policy, **options)


class History:
    """Each env slot's last `horizon` observations of the keys a policy reads; a new episode repeats its first
    observation (as training windows pad theirs)."""

    def __init__(self, keys: list[str], horizon: int):
        self.keys, self.horizon = list(keys), int(horizon)
        self.frames: dict[int, deque] = {}

    def reset(self, slot: int | None = None) -> None:
        if slot is None:
            self.frames.clear()
        else:
            self.frames.pop(slot, None)

    def observe(self, obs: dict[str, np.ndarray], slots: list[int]) -> None:
        """Append each slot's newest observation (row j of `obs` comes from slot `slots[j]`)."""
        for j, s in enumerate(slots):
            frame = {k: np.asarray(obs[k][j]) for k in self.keys}
            h = self.frames.get(s)
            if h is None:
                self.frames[s] = deque([frame] * self.horizon, maxlen=self.horizon)
            else:
                h.append(frame)

    def stacked(self, slots: list[int]) -> dict[str, np.ndarray]:
        """The slots' histories {key: (B, T_o, ...)}, oldest first."""
        return {k: np.stack([np.stack([f[k] for f in self.frames[s]]) for s in slots]) for k in self.keys}


def batch_slots(obs: dict[str, np.ndarray], slots: list[int] | None) -> list[int]:
    """The env slots a batch's rows come from: `slots`, or 0..B-1."""
    return list(range(len(next(iter(obs.values()))))) if slots is None else list(slots)


class HistoryRunner:
    """A one-step policy that reads an observation history (`obs_horizon` > 1: a Gaussian student on stacked frames)
    in a control loop: each slot's last T_o observations, the policy called on them at every step. The collector's
    student interface (`act`, `obs_keys`, `reset`) and an evaluation policy (`runner(obs, slots)`)."""

    def __init__(self, policy: Any):
        self.policy, self.obs_keys = policy, list(policy.obs_keys)
        self.history = History(self.obs_keys, policy.obs_horizon)

    def reset(self, slot: int | None = None) -> None:
        self.history.reset(slot)

    def act(
        self, obs: dict[str, np.ndarray], deterministic: bool = True, slots: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The policy's (actions (B, A), log-probs (B,)) on the histories of envs `slots` (default 0..B-1)."""
        slots = batch_slots(obs, slots)
        self.history.observe(obs, slots)
        return self.policy.act(self.history.stacked(slots), deterministic)

    def __call__(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> np.ndarray:
        return self.act(obs, True, slots)[0]


def driving(policy: Any) -> Any:
    """What acts for `policy` in a collector: a HistoryRunner for a one-step policy that reads a history, else the
    policy itself."""
    return HistoryRunner(policy) if not chunked(policy) and getattr(policy, "obs_horizon", 1) > 1 else policy


class ChunkRunner:
    """A chunk policy in a control loop: per-slot observation history and action queue, batched planning.

    Call it with a batch of observations and the env slots they come from; `reset(slot)` at each episode start.
    Also the collector's student interface (`act`, `obs_keys`).
    """

    def __init__(self, policy: DiffusionPolicy, sampler: Sampler):
        self.policy, self.sampler = policy.eval(), sampler
        self.obs_keys = policy.obs_keys
        self.history = History(self.obs_keys, policy.obs_horizon)
        self.queue: dict[int, list[np.ndarray]] = {}
        self.steps = 0  # control steps served, for network evaluations per step

    def reset(self, slot: int | None = None) -> None:
        self.history.reset(slot)
        if slot is None:
            self.queue.clear()
        else:
            self.queue.pop(slot, None)
        self.sampler.reset(slot)

    def observe(self, obs: dict[str, np.ndarray], slots: list[int]) -> None:
        """Append each slot's newest observation to its history (a new episode repeats its first one)."""
        self.history.observe(obs, slots)

    def condition(self, slots: list[int]) -> torch.Tensor:
        """FiLM conditions (B, C) from the slots' histories."""
        return self.policy.condition(self.policy.tensors(self.history.stacked(slots)))  # (B, T_o, ...)

    @torch.inference_mode()
    def __call__(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> np.ndarray:
        """Actions (B, A) for observations from env `slots` (default 0..B-1)."""
        slots = batch_slots(obs, slots)
        self.observe(obs, slots)
        need = [s for s in slots if not self.queue.get(s)]
        if need:
            actions = self.sampler.executed(self.sampler.plan(self.condition(need), need)).numpy(force=True)
            for i, s in enumerate(need):
                self.queue[s] = list(actions[i])
        self.steps += len(slots)
        return np.stack([self.queue[s].pop(0) for s in slots]).astype(np.float32)

    def act(
        self, obs: dict[str, np.ndarray], deterministic: bool = True, slots: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The collector's student call: actions for envs `slots` (default 0..B-1) (log-probabilities are not
        defined: zeros)."""
        actions = self(obs, slots)
        return actions, np.zeros(len(actions), np.float32)

    @property
    def nfe_per_step(self) -> float:
        """Network evaluations per executed control step so far."""
        return self.sampler.nfe / max(self.steps, 1)

    @torch.inference_mode()
    def label(self, obs: dict[str, np.ndarray], slots: list[int] | None = None) -> np.ndarray:
        """A freshly sampled, un-normalised chunk (B, T_p, A) for envs `slots` (default 0..B-1) at every call (for a
        teacher)."""
        slots = batch_slots(obs, slots)
        self.observe(obs, slots)
        chunk = self.sampler.plan(self.condition(slots), slots)
        self.steps += len(slots)
        return self.policy.unnormalize_actions(chunk).numpy(force=True).astype(np.float32)
