"""Export a trained run's student to an artifact directory the torch-free runtime (`robodistill/runtime/`) runs.

The artifact holds the graphs (observation normalisation and action un-normalisation inside them), `contract.json`,
`parity.json` (torch vs the exported graphs on recorded observations) and `selftest.npz` (a sample of those
observations with torch's actions, so a robot computer can check the artifact). It is written to a temporary
directory and moved into place only when parity holds: a failed export leaves nothing half-written.

Per student kind:
- `gaussian` (MLP or CNN): the deterministic mean, clipped to the action bounds; a chunk of 1. An SB3 run's state
  policy (ppo, rpd, sac) is exported the same way, with its running observation normalisation.
- `vla` (token policy): the argmax tokens decoded to actions, plus the logits; word ids in, the split into words
  runs in the runtime.
- `consistency`: the one-step head from noise (an input, so the runtime draws it) to the executed chunk.
- `diffusion`: three graphs, the observation encoder, the noise predictor and the un-normaliser; the runtime runs
  the DDIM loop between them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from policies.consistency import ConsistencyPolicy
from policies.diffusion_policy import DiffusionPolicy
from policies.gaussian import GaussianPolicy
from policies.vla import INSTRUCTION_KEY, VLAPolicy
from robodistill.config import to_dict
from robodistill.data.labels import windows
from robodistill.errors import UserError
from robodistill.evaluation.rollouts import student_policy
from robodistill.observations import as_dict, obs_mode_for
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import FORMAT_VERSION, IDS_KEY, ArtifactPolicy, load_artifact, sha256
from robodistill.tasks import make_env, shape_meta
from robodistill.teachers import load_policy
from robodistill.teachers.sb3 import SB3Student, load_sb3_model

FORMATS = ("onnx", "torchscript")
OPSET = 17
SELFTEST_SAMPLES = 64


# ---- the graphs ---------------------------------------------------------------------------------------------------
class GaussianGraph(nn.Module):
    """Observations (sorted keys) -> the mean action clipped to [-1, 1], as a chunk of one (B, 1, A)."""

    def __init__(self, policy: GaussianPolicy):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.policy(dict(zip(self.keys, obs)))
        return mean.clamp(-1.0, 1.0)[:, None]


class VLAGraph(nn.Module):
    """Image, instruction word ids and low-dim observations -> (argmax actions (B, 1, A), logits (B, A, bins))."""

    def __init__(self, policy: VLAPolicy):
        super().__init__()
        self.policy = policy
        self.keys = ["rgb", IDS_KEY, *policy.low_dim]

    def forward(self, image: torch.Tensor, ids: torch.Tensor, *low_dim: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.policy.logits(image, ids, dict(zip(self.policy.low_dim, low_dim)))
        return self.policy.tokenizer.detokenize(logits.argmax(-1))[:, None], logits


class ConsistencyGraph(nn.Module):
    """Observation histories (B, T_o, ...) and noise (B, T_p, A) -> the executed chunk (B, T_a, A) in one step."""

    def __init__(self, policy: ConsistencyPolicy):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        p, noise = self.policy, inputs[-1]
        cond = p.condition(dict(zip(self.keys, inputs[:-1])))
        t = torch.full((noise.shape[0],), p.t_max, dtype=torch.long)
        x0 = p.consistency(noise, t, cond).clamp(-1.0, 1.0)
        return p.unnormalize_actions(x0)[:, p.first_action : p.first_action + p.action_horizon]


class EncoderGraph(nn.Module):
    """Observation histories (B, T_o, ...) -> the FiLM condition (B, C)."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy, self.keys = policy, sorted(policy.obs_keys)

    def forward(self, *obs: torch.Tensor) -> torch.Tensor:
        return self.policy.condition(dict(zip(self.keys, obs)))


class DenoiserGraph(nn.Module):
    """(x_t (B, T_p, A), t (B,), cond (B, C)) -> predicted noise (B, T_p, A)."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.policy.eps(x, t, cond)


class DecoderGraph(nn.Module):
    """A clean normalised chunk (B, T_p, A) -> the executed actions (B, T_a, A), un-normalised."""

    def __init__(self, policy: DiffusionPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.policy
        return p.unnormalize_actions(x)[:, p.first_action : p.first_action + p.action_horizon]


class SB3Graph(nn.Module):
    """An SB3 run's state policy (ppo, rpd, sac) as an exportable student: its deterministic action, clipped into
    the action bounds (Gaussian policies) or mapped from tanh's [-1, 1] onto them (squashed, SAC), as SB3's
    `predict` does. The observation normalisation (`NormalizedFlatten`) is part of the policy, so of the graph."""

    kind = "gaussian"

    def __init__(self, model: Any, meta: dict[str, Any]):
        super().__init__()
        self.student, self.policy = SB3Student(model, ["state"]), model.policy
        self.obs_keys, self.shape_meta = ["state"], meta
        self.action_dim = int(meta["action"]["shape"][0])
        self.register_buffer("low", torch.as_tensor(model.action_space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(model.action_space.high, dtype=torch.float32))
        self.squash = bool(getattr(self.policy, "squash_output", False))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        a = self.policy._predict(state, deterministic=True)
        a = self.low + 0.5 * (a + 1.0) * (self.high - self.low) if self.squash else a.clamp(self.low, self.high)
        return a[:, None]

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's own inference path (`model.predict`): the reference the graph is checked against."""
        return self.student.act(obs, deterministic)


def load_sb3_graph(run: RunDir, cfg: Any, task: dict[str, Any], which: str = "best") -> SB3Graph:
    """The SB3 model of a ppo / rpd / sac run (`which`: best, else final; last: final) as an exportable SB3Graph;
    state policies only."""
    keys = list(cfg.student.obs_keys)
    if keys != ["state"]:
        raise UserError(f"{run.dir} is an SB3 run on {keys}: export covers SB3 state policies (student=mlp); "
                        f"image policies are SB3's own preprocessing and are not exported")  # fmt: skip
    env = make_env(task, "state")
    try:
        meta = shape_meta(env)
    finally:
        env.close()
    return SB3Graph(load_sb3_model(run.dir, which=which), meta).eval()


# ---- recorded observations ----------------------------------------------------------------------------------------
def record_observations(policy: nn.Module, task: dict[str, Any], n: int, seed: int, sampler: dict | None = None,
                        progress: bool = True) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """`n` observations from the student driving its own task (episodes seeded seed, seed + 1, ...; a chunk policy
    sampled by `sampler`), as episodes of stacked frames {key: (T, ...)}: the states the exported policy meets."""
    env = make_env(task, obs_mode_for(set(policy.obs_keys)))
    act = student_policy(policy, sampler)
    stateful = hasattr(act, "reset")
    episodes, count, episode = [], 0, 0
    bar = tqdm(total=n, desc="record observations", leave=False, disable=not progress)
    try:
        while count < n:
            obs, _ = env.reset(seed=seed + episode)
            episode += 1
            if stateful:
                act.reset(0)
            frames, done = [], False
            while not done and count < n:
                frame = {k: np.asarray(v) for k, v in as_dict(obs).items() if k in policy.obs_keys}
                frames.append(frame)
                batch = {k: v[None] for k, v in frame.items()}
                action = np.asarray(act(batch, [0]) if stateful else act(batch))[0]
                obs, _, term, trunc, _ = env.step(action)
                done = term or trunc
                count += 1
                bar.update()
            episodes.append({k: np.stack([f[k] for f in frames]) for k in frames[0]})
    finally:
        bar.close()
        env.close()
    return episodes


def histories(episodes: list[dict[str, np.ndarray]], horizon: int) -> dict[str, np.ndarray]:
    """Every step's observation history {key: (N, T_o, ...)} (the first observation repeated before it, as training
    windows and the runtime do), or the plain observations {key: (N, ...)} for a horizon of 1."""
    if horizon == 1:
        return {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
    return {k: np.concatenate([windows(ep[k], 1 - horizon, horizon) for ep in episodes]) for k in episodes[0]}


# ---- export -------------------------------------------------------------------------------------------------------
def kind_of(policy: nn.Module) -> str:
    for cls, kind in ((ConsistencyPolicy, "consistency"), (DiffusionPolicy, "diffusion"), (VLAPolicy, "vla"),
                      (GaussianPolicy, "gaussian"), (SB3Graph, "gaussian")):  # fmt: skip
        if isinstance(policy, cls):
            return kind
    raise UserError(f"cannot export a {type(policy).__name__}: export covers gaussian (and SB3 state policies), "
                    f"vla, consistency and diffusion students")  # fmt: skip


def graphs(policy: nn.Module, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, tuple]:
    """{name: (module, input names, output names, example inputs {name: array})} for the policy's kind; the example
    inputs are the recorded observations (and sampled noise and steps) parity is checked on."""
    kind = kind_of(policy)
    keys = sorted(policy.obs_keys)
    if isinstance(policy, SB3Graph):
        return {"policy": (policy, keys, ["actions"], {k: obs[k] for k in keys})}
    if kind == "gaussian":
        return {"policy": (GaussianGraph(policy), keys, ["actions"], {k: obs[k] for k in keys})}
    if kind == "vla":
        from robodistill.runtime.artifact import instruction_ids

        ids = instruction_ids(obs[INSTRUCTION_KEY], policy.vocab, policy.max_words)
        feeds = {"rgb": obs["rgb"], IDS_KEY: ids, **{k: obs[k] for k in policy.low_dim}}
        return {"policy": (VLAGraph(policy), list(feeds), ["actions", "logits"], feeds)}
    n = len(obs[keys[0]])
    chunk = (n, policy.pred_horizon, policy.action_dim)
    if kind == "consistency":
        noise = rng.standard_normal(chunk).astype(np.float32)
        feeds = {**{k: obs[k] for k in keys}, "noise": noise}
        return {"policy": (ConsistencyGraph(policy), list(feeds), ["actions"], feeds)}
    with torch.inference_mode():
        cond = EncoderGraph(policy)(*[torch.as_tensor(obs[k]) for k in keys]).numpy()
    x = rng.standard_normal(chunk).astype(np.float32)
    t = rng.integers(0, policy.num_train_steps, n).astype(np.int64)
    clean = np.clip(rng.standard_normal(chunk), -1, 1).astype(np.float32)
    return {
        "encoder": (EncoderGraph(policy), keys, ["cond"], {k: obs[k] for k in keys}),
        "denoiser": (DenoiserGraph(policy), ["x", "t", "cond"], ["eps"], {"x": x, "t": t, "cond": cond}),
        "decoder": (DecoderGraph(policy), ["x"], ["actions"], {"x": clean}),
    }


def run_torch(module: nn.Module, names: list[str], feeds: dict[str, np.ndarray], batch: int = 100) -> list[np.ndarray]:
    """The module's outputs on `feeds`, in batches."""
    n, outs = len(feeds[names[0]]), []
    with torch.inference_mode():
        for i in range(0, n, batch):
            y = module(*[torch.as_tensor(feeds[k][i : i + batch]) for k in names])
            outs.append([o.numpy() for o in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate(parts) for parts in zip(*outs)]


def write_graph(module: nn.Module, names: list[str], outputs: list[str], feeds: dict[str, np.ndarray], file: Path,
                fmt: str) -> None:  # fmt: skip
    """Trace `module` on two example inputs and write it as ONNX (a dynamic batch axis) or TorchScript."""
    example = tuple(torch.as_tensor(feeds[k][:2]) for k in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes and the legacy exporter's notice
        if fmt == "torchscript":
            with torch.inference_mode(False), torch.no_grad():
                torch.jit.trace(module, example, check_trace=False).save(str(file))
            return
        torch.onnx.export(
            module, example, str(file), dynamo=False, opset_version=OPSET, input_names=names, output_names=outputs,
            dynamic_axes={k: {0: "batch"} for k in [*names, *outputs]},
        )  # fmt: skip


def run_exported(file: Path, fmt: str, names: list[str], outputs: list[str], feeds: dict[str, np.ndarray],
                 batch: int = 100) -> list[np.ndarray]:  # fmt: skip
    """The exported graph's outputs on `feeds`: onnxruntime for ONNX, torch.jit for TorchScript."""
    n = len(feeds[names[0]])
    if fmt == "torchscript":
        return run_torch(torch.jit.load(str(file)), names, feeds, batch)
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    parts = [session.run(outputs, {k: feeds[k][i : i + batch] for k in names}) for i in range(0, n, batch)]
    return [np.concatenate(p) for p in zip(*parts)]


def argmax_ties(logits: np.ndarray, tol: float) -> np.ndarray:
    """(N, A) True where a token policy's top two logits are within 2 tol: a tie that torch and onnxruntime may
    break either way, so the decoded actions may differ there by a bin."""
    top2 = np.sort(logits, -1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) <= 2 * tol


def compare(outputs: list[str], ref: list[np.ndarray], got: list[np.ndarray], tol: float) -> dict:
    """Parity of one graph: max |torch - exported| per output; for a token policy's actions, the argmax may differ
    only where the top two logits are within the tolerance (a tie the two runtimes may break either way)."""
    report: dict[str, Any] = {}
    for out, a, b in zip(outputs, ref, got):
        report[out] = float(np.abs(a.astype(np.float64) - b).max())
    if outputs == ["actions", "logits"]:
        tie = argmax_ties(ref[1], tol)
        differs = np.abs(ref[0][:, 0] - got[0][:, 0]) > tol
        report["argmax_disagreements"] = int(differs.sum())
        report["argmax_disagreements_not_ties"] = int((differs & ~tie).sum())
        report["actions"] = float(np.abs(ref[0][:, 0] - got[0][:, 0])[~tie].max(initial=0.0))
    report["passed"] = all(v <= tol for k, v in report.items() if k in outputs)
    return report


def export_run(run_dir: str | Path, out: str | Path | None = None, fmt: str = "onnx", samples: int = 1000,
               tolerance: float = 1e-4, checkpoint: str = "best", sampler_steps: int = 10, seed: int = 0,
               progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Export `run_dir`'s student to `out` (default <run>/export_<fmt>); returns the contract. Parity is checked on
    `samples` recorded observations; the export is refused (UserError, nothing written) beyond `tolerance`."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = RunDir(run_dir).require()
    config = run.config_path
    cfg = run.config()
    task = to_dict(cfg.task)
    policy = load_sb3_graph(run, cfg, task, checkpoint) if run.is_sb3() else load_policy(run.dir, checkpoint)
    kind = kind_of(policy)
    torch.set_num_threads(1)
    out = Path(out) if out is not None else run.dir / f"export_{fmt}"
    rng = np.random.default_rng(seed)

    sampler = {"kind": "ddim", "num_inference_steps": sampler_steps} if kind == "diffusion" else None
    episodes = record_observations(policy, task, samples, int(cfg.eval.seed) + 10_000, sampler, progress)
    horizon = int(getattr(policy, "obs_horizon", 1))
    obs = histories(episodes, horizon)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    models, parity = {}, {}
    try:
        parts = graphs(policy, obs, rng)
        for name, (module, names, outputs, feeds) in tqdm(parts.items(), desc="export", disable=not progress):
            module.eval()
            file = tmp / f"{name}{suffix}"
            write_graph(module, names, outputs, feeds, file, fmt)
            ref = run_torch(module, names, feeds)
            parity[name] = compare(outputs, ref, run_exported(file, fmt, names, outputs, feeds), tolerance)
            models[name] = {"file": file.name, "sha256": sha256(file), "inputs": names, "outputs": outputs}
        contract = make_contract(policy, kind, cfg, config, task, models, fmt, sampler_steps, tolerance)
        (tmp / "contract.json").write_text(json.dumps(contract, indent=2))
        if fmt == "onnx":  # the runtime's own path end to end, on the runtime's inputs
            parity["runtime"] = runtime_parity(tmp, policy, kind, obs, rng, tolerance)
        failed = {k: v for k, v in parity.items() if not v["passed"]}
        report = {"samples": len(next(iter(obs.values()))), "tolerance": tolerance, "graphs": parity,
                  "max_abs_diff": max(max(v for k, v in r.items() if isinstance(v, float)) for r in parity.values()),
                  "passed": not failed}  # fmt: skip
        (tmp / "parity.json").write_text(json.dumps(report, indent=2))
        if failed:
            raise UserError(f"export refused: the exported {kind} policy differs from torch beyond {tolerance} on "
                            f"recorded observations: {failed}")  # fmt: skip
        contract["parity"] = {k: report[k] for k in ("samples", "tolerance", "max_abs_diff", "passed")}
        (tmp / "contract.json").write_text(json.dumps(contract, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return contract


def runtime_parity(path: Path, policy: nn.Module, kind: str, obs: dict[str, np.ndarray], rng: np.random.Generator,
                   tol: float) -> dict[str, Any]:  # fmt: skip
    """torch's whole policy vs `ArtifactPolicy.infer` (tokeniser, sampler loop and all) on the recorded
    observations with the same noise; writes selftest.npz from the first of them."""
    runtime = ArtifactPolicy(load_artifact(path))
    contract = runtime.contract
    n = len(next(iter(obs.values())))
    if kind == "diffusion":
        n = min(n, 200)  # each sample is a whole sampler loop
    feeds = {k: v[:n] for k, v in obs.items()}
    noise = None
    if kind in ("diffusion", "consistency"):
        noise = rng.standard_normal((n, policy.pred_horizon, policy.action_dim)).astype(np.float32)
    expected = torch_actions(policy, kind, feeds, noise, contract)
    got = np.concatenate([runtime.infer({k: v[i : i + 100] for k, v in feeds.items()},
                                        None if noise is None else noise[i : i + 100]) for i in range(0, n, 100)])  # fmt: skip
    diff = np.abs(expected - got)
    if kind == "vla":  # argmax ties, as in `compare`
        diff = np.where(argmax_ties(policy.label(feeds)[1], tol)[:, None], 0.0, diff)
    m = min(SELFTEST_SAMPLES, n)
    np.savez_compressed(path / "selftest.npz", actions=expected[:m], **{f"obs/{k}": v[:m] for k, v in feeds.items()},
                        **({"noise": noise[:m]} if noise is not None else {}))  # fmt: skip
    return {"samples": n, "actions": float(diff.max()), "passed": bool(diff.max() <= tol)}


@torch.inference_mode()
def torch_actions(policy: nn.Module, kind: str, obs: dict[str, np.ndarray], noise: np.ndarray | None,
                  contract: dict[str, Any]) -> np.ndarray:  # fmt: skip
    """The chunks (N, T, A) torch gives: the reference for the runtime's whole path."""
    if kind in ("gaussian", "vla"):
        return policy.act(obs, deterministic=True)[0][:, None]
    x = torch.as_tensor(noise)
    if kind == "consistency":
        return ConsistencyGraph(policy)(*[torch.as_tensor(obs[k]) for k in sorted(policy.obs_keys)], x).numpy()
    from policies.samplers import ddim_denoise

    cond = policy.condition({k: torch.as_tensor(obs[k]) for k in policy.obs_keys})
    x = ddim_denoise(policy, x, cond, contract["sampler"]["timesteps"])
    return DecoderGraph(policy)(x).numpy()


def make_contract(policy: nn.Module, kind: str, cfg: Any, config: Path, task: dict[str, Any],
                  models: dict[str, Any], fmt: str, sampler_steps: int, tolerance: float) -> dict[str, Any]:  # fmt: skip
    """What the policy observes and commands, at which rate and in which chunks: the runtime's contract."""
    env = make_env(task, obs_mode_for(set(policy.obs_keys)))
    try:
        space = env.action_space
        rate = env.unwrapped.metadata.get("render_fps") or round(1.0 / env.unwrapped.dt)
        control_mode = getattr(env.unwrapped, "control_mode", None)
    finally:
        env.close()
    meta = policy.shape_meta
    chunked = kind in ("diffusion", "consistency")
    observations = {}
    for k in sorted(policy.obs_keys):
        spec = meta["obs"][k]
        dtype = "uint8" if spec.get("type") in ("rgb", "text") else "float32"
        observations[k] = {"shape": list(spec["shape"]), "dtype": dtype, "type": spec.get("type", "low_dim")}
    contract: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "kind": kind,
        "observations": observations,
        "action": {
            "dim": int(policy.action_dim), "low": space.low.tolist(), "high": space.high.tolist(),
            "control_mode": control_mode, "gripper_dims": list(meta["action"].get("gripper_dims", [])),
        },
        "control_rate_hz": float(rate),
        "chunk": {
            "obs_horizon": int(policy.obs_horizon) if chunked else 1,
            "pred_horizon": int(policy.pred_horizon) if chunked else 1,
            "action_horizon": int(policy.action_horizon) if chunked else 1,
        },
        "models": models,
        "task": {"env_id": task.get("env_id"), "name": task.get("name"), "kwargs": task.get("kwargs") or {}},
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "run": str(config.parent.resolve()),
        "commit": git_commit(),
        "parity": {"tolerance": tolerance},
    }  # fmt: skip
    if kind == "vla":
        contract["instruction"] = {"key": INSTRUCTION_KEY, "vocab": policy.vocab, "max_words": policy.max_words}
        contract["bins"] = policy.bins
    if kind == "diffusion":
        contract["sampler"] = {
            "kind": "ddim", "timesteps": policy.schedule.ddim_timesteps(int(sampler_steps)),
            "alphas_cumprod": policy.schedule.alphas_cumprod.tolist(),
        }  # fmt: skip
    return contract


def git_commit() -> str | None:
    """The commit of the code that exported (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
