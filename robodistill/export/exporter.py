"""Export a trained run's student to an artifact directory the torch-free runtime (`robodistill/runtime/`) runs.

The artifact holds the graphs (observation normalisation and action un-normalisation inside them), `contract.json`,
`parity.json` (torch vs the exported graphs on recorded observations) and `selftest.npz` (a sample of those
observations with torch's actions, so a robot computer can check the artifact). It is written to a temporary
directory and moved into place only when parity holds: a failed export leaves nothing half-written.

What each policy kind ships (its graphs, its contract fields, torch's reference actions) is its exporter in
`policies.registry`; an SB3 run's state policy (ppo, rpd, sac) is exported as a `gaussian` one (export/sb3.py).
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
import onnxruntime as ort
import torch
from torch import nn

from policies import POLICY_TYPES, Exporter, Graph
from policies.samplers import DDIM_STEPS
from policies.vla import argmax_ties
from robodistill.config import to_dict
from robodistill.data.labels import windows
from robodistill.errors import UserError
from robodistill.evaluation.monitor import MONITOR_FILE, EmbeddingGraph, embeddings, load_monitor
from robodistill.evaluation.rollouts import student_policy
from robodistill.export.sb3 import load_sb3_policy
from robodistill.observations import as_dict, obs_mode_for
from robodistill.progress import progress_bar
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import FORMAT_VERSION, ArtifactPolicy, load_artifact, sha256
from robodistill.runtime.monitor import SPREADS, ArtifactScorer
from robodistill.tasks import make_env, task_for_keys
from robodistill.teachers import load_policy

FORMATS = ("onnx", "torchscript")
MONITOR = ("auto", True, False)  # ship the run's failure monitor: when it has one, always (refuse without), never
OPSET = 17
SELFTEST_SAMPLES = 64


# ---- recorded observations ----------------------------------------------------------------------------------------
def record_observations(
    policy: nn.Module, task: dict[str, Any], n: int, seed: int, sampler: dict | None = None, progress: bool = True
) -> list[dict[str, np.ndarray]]:
    """`n` observations from the student driving its own task (episodes seeded seed, seed + 1, ...; a chunk policy
    sampled by `sampler`), as episodes of stacked frames {key: (T, ...)}: the states the exported policy meets."""
    env = make_env(task_for_keys(task, policy.obs_keys), obs_mode_for(policy.obs_keys))
    act = student_policy(policy, sampler)
    stateful = hasattr(act, "reset")
    episodes, count, episode = [], 0, 0
    bar = progress_bar(total=n, desc="record observations", leave=False, enabled=progress)
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
    """The registry kind a policy is exported as; UserError for anything the registry does not list."""
    kind = getattr(policy, "kind", None)
    if kind not in POLICY_TYPES:
        raise UserError(
            f"cannot export a {type(policy).__name__}: export covers {', '.join(POLICY_TYPES)} students "
            f"(and SB3 state policies)"
        )
    return kind


def exporter_of(policy: nn.Module) -> Exporter:
    """How the policy's kind ships (policies.registry)."""
    return POLICY_TYPES[kind_of(policy)].exporter


def run_torch(module: nn.Module, names: list[str], feeds: dict[str, np.ndarray], batch: int = 100) -> list[np.ndarray]:
    """The module's outputs on `feeds`, in batches."""
    n, outs = len(feeds[names[0]]), []
    with torch.inference_mode():
        for i in range(0, n, batch):
            y = module(*[torch.as_tensor(feeds[k][i : i + batch]) for k in names])
            outs.append([o.numpy() for o in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate(parts) for parts in zip(*outs)]


def write_graph(
    module: nn.Module, names: list[str], outputs: list[str], feeds: dict[str, np.ndarray], file: Path, fmt: str
) -> None:
    """Trace `module` on two example inputs and write it as ONNX (a dynamic batch axis) or TorchScript."""
    example = tuple(torch.as_tensor(feeds[k][:2]) for k in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes and the legacy exporter's notice
        if fmt == "torchscript":
            with torch.inference_mode(False), torch.no_grad():
                torch.jit.trace(module, example, check_trace=False).save(str(file))
            return
        torch.onnx.export(
            module,
            example,
            str(file),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=outputs,
            dynamic_axes={k: {0: "batch"} for k in [*names, *outputs]},
        )


def run_exported(
    file: Path, fmt: str, names: list[str], outputs: list[str], feeds: dict[str, np.ndarray], batch: int = 100
) -> list[np.ndarray]:
    """The exported graph's outputs on `feeds`: onnxruntime for ONNX, torch.jit for TorchScript."""
    n = len(feeds[names[0]])
    if fmt == "torchscript":
        return run_torch(torch.jit.load(str(file)), names, feeds, batch)
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    parts = [session.run(outputs, {k: feeds[k][i : i + batch] for k in names}) for i in range(0, n, batch)]
    return [np.concatenate(p) for p in zip(*parts)]


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


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    fmt: str = "onnx",
    samples: int = 1000,
    tolerance: float = 1e-4,
    checkpoint: str = "best",
    sampler_steps: int = DDIM_STEPS,
    seed: int = 0,
    progress: bool = True,
    rate_hz: float | None = None,
    monitor: str | bool = "auto",
) -> dict[str, Any]:
    """Export `run_dir`'s student to `out` (default <run>/export_<fmt>); returns the contract. Parity is checked on
    `samples` recorded observations; the export is refused (UserError, nothing written) beyond `tolerance`.
    `rate_hz`: the control rate the contract states (None: the task's own). `monitor`: ship the run's failure
    monitor (`monitor.pt`, calibrated for the exported checkpoint) as graphs and a contract section: "auto" when
    the run has one, True (refused without one), False."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if monitor not in MONITOR:
        raise UserError(f"monitor={monitor!r}: choose auto, true or false")
    run = RunDir(run_dir).require()
    config = run.config_path
    cfg = run.config()
    task = to_dict(cfg.task)
    policy = load_sb3_policy(run, cfg, task, checkpoint) if run.is_sb3() else load_policy(run.dir, checkpoint)
    kind = kind_of(policy)
    rate_hz = rate_hz or task_rate(task, policy.obs_keys)  # before anything is written: it may be unknown
    exporter = exporter_of(policy)
    fields = exporter.contract(policy, sampler_steps)
    torch.set_num_threads(1)
    out = Path(out) if out is not None else run.dir / f"export_{fmt}"
    rng = np.random.default_rng(seed)

    sampler = exporter.recording_sampler(sampler_steps)
    episodes = record_observations(policy, task, samples, int(cfg.eval.seed) + 10_000, sampler, progress)
    obs = histories(episodes, int(fields["chunk"]["obs_horizon"]))
    monitor_state = calibrated_monitor(run, policy, checkpoint, monitor, fmt)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    models, parity = {}, {}
    try:
        parts = exporter.graphs(policy, obs, rng)
        if monitor_state is not None:
            parts.update(monitor_graphs(policy, monitor_state, obs))
        for name, (module, names, outputs, feeds) in progress_bar(parts.items(), desc="export", enabled=progress):
            module.eval()
            file = tmp / f"{name}{suffix}"
            write_graph(module, names, outputs, feeds, file, fmt)
            ref = run_torch(module, names, feeds)
            parity[name] = compare(outputs, ref, run_exported(file, fmt, names, outputs, feeds), tolerance)
            models[name] = {"file": file.name, "sha256": sha256(file), "inputs": names, "outputs": outputs}
        contract = make_contract(policy, kind, fields, config, task, models, fmt, tolerance, rate_hz)
        if monitor_state is not None:
            contract["monitor"] = monitor_contract(monitor_state, [n for n in models if n.startswith("monitor_")])
        (tmp / "contract.json").write_text(json.dumps(contract, indent=2))
        if fmt == "onnx":  # the runtime's own path end to end, on the runtime's inputs
            parity["runtime"] = runtime_parity(tmp, policy, obs, rng, tolerance)
            if monitor_state is not None:
                parity["runtime_monitor"] = monitor_parity(tmp, policy, monitor_state, obs, tolerance)
        failed = {k: v for k, v in parity.items() if not v["passed"]}
        report = {
            "samples": len(next(iter(obs.values()))),
            "tolerance": tolerance,
            "graphs": parity,
            "max_abs_diff": max(max(v for k, v in r.items() if isinstance(v, float)) for r in parity.values()),
            "passed": not failed,
        }
        (tmp / "parity.json").write_text(json.dumps(report, indent=2))
        if failed:
            raise UserError(
                f"export refused: the exported {kind} policy differs from torch beyond {tolerance} on "
                f"recorded observations: {failed}"
            )
        contract["parity"] = {k: report[k] for k in ("samples", "tolerance", "max_abs_diff", "passed")}
        (tmp / "contract.json").write_text(json.dumps(contract, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return contract


def runtime_parity(
    path: Path, policy: nn.Module, obs: dict[str, np.ndarray], rng: np.random.Generator, tol: float
) -> dict[str, Any]:
    """torch's whole policy vs `ArtifactPolicy.infer` (tokeniser, sampler loop and all) on the recorded
    observations with the same noise; writes selftest.npz from the first of them."""
    exporter = exporter_of(policy)
    runtime = ArtifactPolicy(load_artifact(path))
    n = len(next(iter(obs.values())))
    if exporter.parity_samples is not None:
        n = min(n, exporter.parity_samples)
    feeds = {k: v[:n] for k, v in obs.items()}
    shape = exporter.noise_shape(policy, n)
    noise = None if shape is None else rng.standard_normal(shape).astype(np.float32)
    expected = exporter.reference(policy, feeds, noise, runtime.contract)
    got = np.concatenate(
        [
            runtime.infer({k: v[i : i + 100] for k, v in feeds.items()}, None if noise is None else noise[i : i + 100])
            for i in range(0, n, 100)
        ]
    )
    diff = np.abs(expected - got)
    ties = exporter.ties(policy, feeds, tol)  # argmax ties, as in `compare`
    if ties is not None:
        diff = np.where(ties[:, None], 0.0, diff)
    m = min(SELFTEST_SAMPLES, n)
    np.savez_compressed(
        path / "selftest.npz",
        actions=expected[:m],
        **{f"obs/{k}": v[:m] for k, v in feeds.items()},
        **({"noise": noise[:m]} if noise is not None else {}),
    )
    return {"samples": n, "actions": float(diff.max()), "passed": bool(diff.max() <= tol)}


def calibrated_monitor(
    run: RunDir, policy: nn.Module, checkpoint: str, include: str | bool, fmt: str
) -> dict[str, Any] | None:
    """The run's failure monitor to ship (`load_monitor`: refused if calibrated for another checkpoint), or None."""
    file = run.dir / MONITOR_FILE
    if include is False or (include == "auto" and not file.exists()):
        return None
    if fmt != "onnx":
        if include is True:
            raise UserError("monitor=true: the failure monitor ships in ONNX artifacts only (format=onnx)")
        return None
    state = load_monitor(file, run.checkpoint_path(checkpoint))
    if kind_of(policy) not in SPREADS:
        raise UserError(f"a {kind_of(policy)} student's export cannot carry a failure monitor: pass monitor=false")
    return state


def monitor_graphs(policy: nn.Module, state: dict[str, Any], obs: dict[str, np.ndarray]) -> dict[str, Graph]:
    """The monitor's graphs: RND on the student's embedding, and the embedding itself (a diffusion policy's is its
    encoder's condition, already a graph)."""
    keys = sorted(policy.obs_keys)
    embedding, spread = embeddings(policy, obs)
    graphs = {"monitor_rnd": Graph(state["rnd_module"], ["embedding"], ["score"], {"embedding": embedding.numpy()})}
    if kind_of(policy) != "diffusion":
        outputs = ["embedding", "spread"] if spread is not None else ["embedding"]
        graphs["monitor_embedding"] = Graph(EmbeddingGraph(policy), keys, outputs, {k: obs[k] for k in keys})
    return graphs


def monitor_contract(state: dict[str, Any], graphs: list[str]) -> dict[str, Any]:
    """The contract's `monitor` section: the calibration the runtime's alarm rule needs (thresholds at `alpha`,
    the window, the per-rollout calibration scores for thresholds at another alpha) and the graphs it runs."""
    keep = ("alpha", "window", "samples", "thresholds", "calibration_scores", "checkpoint_sha256", "successes")
    joint = {k: state.get(k) for k in ("joint_thresholds", "joint_note")}  # none in a monitor.pt from before them
    return {**{k: state[k] for k in keep}, **joint, "graphs": graphs}


def monitor_parity(
    path: Path, policy: nn.Module, state: dict[str, Any], obs: dict[str, np.ndarray], tol: float, n: int = 20
) -> dict[str, Any]:
    """torch's RND score (and a Gaussian student's spread) against `ArtifactScorer`'s on the first `n` recorded
    observations, one at a time as the control loop scores them; differences relative to max(1, |torch|)."""
    scorer = ArtifactScorer(load_artifact(path))
    keys = sorted(policy.obs_keys)
    n = min(n, len(obs[keys[0]]))
    embedding, spread = embeddings(policy, {k: obs[k][:n] for k in keys})
    with torch.inference_mode():
        expected = {"rnd": state["rnd_module"](embedding).numpy()}
    if spread is not None:
        expected["entropy"] = spread.numpy()
    got = [scorer({k: obs[k][i : i + 1] for k in keys}) for i in range(n)]
    diff = {
        s: float(max(abs(g[s] - e) / max(1.0, abs(e)) for g, e in zip(got, ref, strict=True)))
        for s, ref in expected.items()
    }
    return {"samples": n, **diff, "passed": all(v <= tol for v in diff.values())}


def torch_actions(
    policy: nn.Module, kind: str, obs: dict[str, np.ndarray], noise: np.ndarray | None, contract: dict[str, Any]
) -> np.ndarray:
    """The chunks (N, T, A) torch gives for `kind`'s policy: the reference for the runtime's whole path."""
    return POLICY_TYPES[kind].exporter.reference(policy, obs, noise, contract)


def task_rate(task: dict[str, Any], obs_keys: list[str]) -> float:
    """The task's control rate: its env's `metadata["render_fps"]`, else 1 / `dt`; a UserError if it has neither."""
    env = make_env(task_for_keys(task, obs_keys), obs_mode_for(obs_keys))
    try:
        base = env.unwrapped
        rate = base.metadata.get("render_fps") or (round(1.0 / base.dt) if getattr(base, "dt", None) else None)
    finally:
        env.close()
    if not rate:
        raise UserError(
            f"cannot tell {task.get('env_id')}'s control rate (its env has no metadata['render_fps'] and no dt): "
            "give it with rate_hz=<Hz>"
        )
    return float(rate)


def make_contract(
    policy: nn.Module,
    kind: str,
    fields: dict[str, Any],
    config: Path,
    task: dict[str, Any],
    models: dict[str, Any],
    fmt: str,
    tolerance: float,
    rate: float,
) -> dict[str, Any]:
    """What the policy observes and commands, at which rate (`rate`, Hz) and in which chunks: the runtime's contract.
    `fields`: the kind's own (its exporter's `contract`: chunk sizes, and what the runtime's step reads). Its task
    lists as cameras exactly those the policy reads."""
    task = task_for_keys(task, policy.obs_keys)
    env = make_env(task, obs_mode_for(policy.obs_keys))
    try:
        space = env.action_space
        control_mode = getattr(env.unwrapped, "control_mode", None)
    finally:
        env.close()
    meta = policy.shape_meta
    observations = {}
    for k in sorted(policy.obs_keys):
        spec = meta["obs"][k]
        dtype = "uint8" if spec.get("type") in ("rgb", "text") else "float32"
        observations[k] = {"shape": list(spec["shape"]), "dtype": dtype, "type": spec.get("type", "low_dim")}
    fields = dict(fields)
    contract: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "kind": kind,
        "observations": observations,
        "action": {
            "dim": int(policy.action_dim),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "control_mode": control_mode,
            "gripper_dims": list(meta["action"].get("gripper_dims", [])),
        },
        "control_rate_hz": float(rate),
        "chunk": fields.pop("chunk"),
        "models": models,
        "task": {  # what deploy's stand-in robot remakes the task from (tasks.make_env)
            **{k: task[k] for k in ("env_id", "name", "max_episode_steps", "success_key") if k in task},
            "imports": list(task.get("imports") or []),
            "kwargs": task.get("kwargs") or {},
        },
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "run": str(config.parent.resolve()),
        "commit": git_commit(),
        "parity": {"tolerance": tolerance},
        **fields,
    }
    return contract


def git_commit() -> str | None:
    """The commit of the code that exported (None outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
