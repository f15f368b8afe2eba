"""Load an exported policy (a directory written by `scripts/export.py`) and run it with onnxruntime: numpy only.

An artifact holds `contract.json` (what the policy observes and commands, at which rate, in which chunks), the ONNX
graphs it names with their sha256, and `selftest.npz` (recorded observations and the actions torch gave for them).
`load_artifact` refuses a directory whose contract is missing or malformed or whose model files do not match their
sha256 (truncated, tampered). `ArtifactPolicy` turns one observation into an action chunk (T, A): it keeps the
observation history, tokenises the instruction of a token policy and runs a diffusion policy's sampler loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

FORMAT_VERSION = 1
RGB = "rgb"  # the contract's observation type of a camera image (uint8 H x W x 3), one key per camera
IDS_KEY = (
    "instruction_ids"  # a token policy's graph reads the instruction as word ids, tokenised here (policies/vla.py)
)


class ArtifactError(RuntimeError):
    """The artifact cannot be used: missing, corrupt, tampered, or not made for this robot."""

    user_facing = True  # entry points print it as one line


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    """A loaded artifact: its directory, contract and one onnxruntime session per graph."""

    path: Path
    contract: dict[str, Any]
    sessions: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.contract["kind"]

    @property
    def action_dim(self) -> int:
        return int(self.contract["action"]["dim"])

    @property
    def rate_hz(self) -> float:
        return float(self.contract["control_rate_hz"])

    @property
    def observations(self) -> dict[str, dict[str, Any]]:
        """{key: {"shape", "dtype", "type"}} of one observation (no batch or history dimension)."""
        return self.contract["observations"]

    @property
    def cameras(self) -> list[str]:
        """The observation keys that are camera images (`type` rgb), one per camera."""
        return [k for k, spec in self.observations.items() if spec.get("type") == RGB]

    def mismatches(self, obs: dict[str, Any]) -> list[str]:
        """How one observation does not fit the contract, each mismatch named: a missing key or camera, a shape, a
        dtype (a camera image must have exactly the contract's; other values may be cast within their kind).
        Extra observation keys are fine."""
        problems = []
        cameras = self.cameras
        for key, spec in self.observations.items():
            image = key in cameras
            what = "camera image" if image else "observation"
            if key not in obs:
                given = [k for k, v in obs.items() if np.ndim(v) == 3]
                also = f" (the policy reads the cameras {cameras}, the robot gives {given})" if image else ""
                problems.append(f"no {what} {key!r}{also}")
                continue
            a = np.asarray(obs[key])
            if list(a.shape) != list(spec["shape"]):
                problems.append(f"{what} {key!r} has shape {list(a.shape)}, the contract says {spec['shape']}")
            elif image and a.dtype != np.dtype(spec["dtype"]):
                problems.append(f"{what} {key!r} is {a.dtype}, the contract says {spec['dtype']}")
            elif not np.can_cast(a.dtype, np.dtype(spec["dtype"]), "same_kind"):
                problems.append(f"{what} {key!r} is {a.dtype}, the contract says {spec['dtype']}")
        return problems

    def check_robot(self, obs: dict[str, Any], action_dim: int) -> None:
        """Refuse (ArtifactError, one message listing every mismatch) a robot whose observation (`mismatches`) or
        action size does not fit the contract."""
        problems = self.mismatches(obs)
        if int(action_dim) != self.action_dim:
            problems.append(f"the robot takes {action_dim} action dimensions, the policy gives {self.action_dim}")
        if problems:
            raise ArtifactError(
                f"artifact {self.path} does not fit this robot: {'; '.join(problems)} "
                f"(exported for {self.contract.get('task', {}).get('env_id', '?')}, control mode "
                f"{self.contract['action'].get('control_mode')})"
            )


def load_contract(path: str | Path) -> dict[str, Any]:
    """The artifact's contract.json, checked for the fields the runtime reads."""
    path = Path(path)
    file = path / "contract.json"
    if not file.exists():
        raise ArtifactError(
            f"{path} is not an exported policy (no contract.json); export a run with "
            f"`python scripts/export.py run=<run dir>`"
        )
    try:
        contract = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{file} cannot be read: {exc}") from exc
    required = ("format_version", "kind", "observations", "action", "control_rate_hz", "chunk", "models")
    missing = [k for k in required if not isinstance(contract, dict) or k not in contract]
    if missing:
        raise ArtifactError(f"{file} lacks {missing}: not a robodistill contract, or a damaged one")
    if contract["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            f"{file} has format version {contract['format_version']}; this runtime reads "
            f"{FORMAT_VERSION}: re-export the run"
        )
    if contract.get("format", "onnx") != "onnx":
        raise ArtifactError(
            f"{path} is a {contract['format']} artifact, for torch.jit.load or libtorch (C++); this "
            f"runtime runs ONNX: export with format=onnx"
        )
    if contract["kind"] not in STEPS:
        raise ArtifactError(f"{file}: unknown policy kind {contract['kind']!r}; known: {', '.join(STEPS)}")
    return contract


def verify_models(path: str | Path, contract: dict[str, Any]) -> dict[str, Path]:
    """The model files of the contract, each checked against its sha256; ArtifactError if one is off."""
    path, files = Path(path), {}
    for name in [*STEPS[contract["kind"]].graphs, *contract.get("monitor", {}).get("graphs", [])]:
        entry = contract["models"].get(name)
        if entry is None:
            raise ArtifactError(f"{path}/contract.json names no {name!r} model, which a {contract['kind']} needs")
        file = path / entry["file"]
        if not file.exists():
            raise ArtifactError(f"model file {file} is missing")
        digest = sha256(file)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"model file {file} does not match its sha256 in the contract (truncated or "
                f"tampered?): {digest[:12]}... != {entry['sha256'][:12]}..."
            )
        files[name] = file
    return files


def load_artifact(path: str | Path, threads: int = 1) -> Artifact:
    """Check and load an artifact directory; `threads` is onnxruntime's intra-op thread count."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ArtifactError("running an exported policy needs onnxruntime: pip install onnxruntime") from exc
    path = Path(path)
    contract = load_contract(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # no busy-waiting worker threads: the CPU stays with the control loop (and batch-1 calls measured faster)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {}
    for name, file in verify_models(path, contract).items():
        try:
            sessions[name] = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ArtifactError(f"onnxruntime cannot load {file}: {exc}") from exc
    return Artifact(path, contract, sessions)


def encode_text(text: str, size: int) -> np.ndarray:
    """A prompt string as the zero-padded UTF-8 bytes (size,) of an instruction observation (envs' encoding)."""
    raw = text.encode()[:size]
    return np.frombuffer(raw.ljust(size, b"\0"), np.uint8).copy()


def instruction_ids(instruction: np.ndarray, vocab: list[str], max_words: int) -> np.ndarray:
    """UTF-8 instruction bytes (B, L) -> word ids (B, max_words), as the token policy's tokenizer makes them:
    lower-case words of letters and digits, 1 (<unk>) for a word not in `vocab`, 0 (<pad>) after the last."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.zeros((len(instruction), max_words), np.int64)
    for row, text in enumerate(np.asarray(instruction, np.uint8)):
        words = re.findall(r"[a-z0-9]+", bytes(text).rstrip(b"\0").decode("utf-8", "replace").lower())
        found = [index.get(w, 1) for w in words][:max_words]
        ids[row, : len(found)] = found
    return ids


class ArtifactPolicy:
    """One robot's policy from an artifact: `policy(obs) -> (T, A)` float32 actions, action i meant for the control
    step i after the observation's. Keeps the observation history (`reset()` at an episode start); the noise of
    diffusion-family policies comes from `seed`."""

    def __init__(self, artifact: Artifact, seed: int = 0):
        self.artifact, self.contract = artifact, artifact.contract
        self.kind = artifact.kind
        self.obs_keys = list(self.contract["observations"])
        self.horizon = int(self.contract["chunk"].get("obs_horizon", 1))
        self.rng = np.random.default_rng(seed)
        self.history: deque[dict[str, np.ndarray]] = deque(maxlen=self.horizon)

    def reset(self) -> None:
        """Forget the observation history (call at the start of an episode)."""
        self.history.clear()

    def observe(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Add one observation to the history; the graph inputs (1, ...) or (1, T_o, ...) of the history now. Call it
        at every control step (ControlLoop does), so the history holds consecutive steps."""
        frame = self.cast({k: obs[k] for k in self.obs_keys})
        if not self.history:  # a new episode repeats its first observation (as training windows do)
            self.history.extend([frame] * self.horizon)
        else:
            self.history.append(frame)
        if self.horizon > 1:
            return {k: np.stack([f[k] for f in self.history])[None] for k in self.obs_keys}
        return {k: frame[k][None] for k in self.obs_keys}

    def plan(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The chunk (T, A) for graph inputs from `observe`."""
        return self.infer(inputs)[0]

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        """observe + plan: the chunk (T, A) for this observation (and the ones observed before it)."""
        return self.plan(self.observe(obs))

    def answer(self, request: dict[str, Any]) -> dict[str, np.ndarray]:
        """A policy-server request. One observation {key: array of the contract's shape} (openpi's convention) ->
        {"actions": (T, A)}, the history kept between requests (send every step's observation, or the whole
        history {key: (T_o, ...)}, to a policy with obs_horizon > 1); or, for a policy without history, a batch
        {key: (N, ...)} -> {"actions": (N, A), "chunk": (N, T, A)}. A "prompt" string stands in for a token
        policy's instruction bytes. ValueError on a request that does not fit the contract."""
        from robodistill.runtime.server import observation_batch  # optional: the server needs websockets ([serve])

        obs = dict(request)
        text = self.contract.get("instruction", {}).get("key")
        if text and text not in obs and isinstance(obs.get("prompt"), str):
            obs[text] = encode_text(obs["prompt"], self.contract["observations"][text]["shape"][0])
        shapes = {k: v["shape"] for k, v in self.contract["observations"].items()}
        key = self.obs_keys[0]
        if key in obs and np.ndim(obs[key]) == len(shapes[key]):  # one observation
            one = observation_batch({k: np.asarray(v)[None] for k, v in obs.items()}, self.obs_keys, shapes)
            return {"actions": self({k: v[0] for k, v in one.items()})}
        batch = self.cast(observation_batch(obs, self.obs_keys, shapes))  # (N, ...): a batch, or a whole history
        if self.horizon > 1:
            if len(batch[key]) != self.horizon:
                raise ValueError(
                    f"this policy reads a history of {self.horizon} observations: send one observation "
                    f"per request (shapes {shapes}) or the history ({self.horizon}, ...), not "
                    f"{len(batch[key])}"
                )
            return {"actions": self.plan({k: v[None] for k, v in batch.items()})}  # explicit history, no state
        chunk = self.infer(batch)
        return {"actions": chunk[:, 0], "chunk": chunk}

    def cast(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Observations in the contract's dtypes (a client may send float64); ValueError for a camera image of
        another dtype (a float image in [0, 1] cast to uint8 would be black)."""
        specs = self.contract["observations"]
        out = {}
        for k, v in batch.items():
            v = np.asarray(v)
            if specs[k].get("type") == RGB and v.dtype != np.dtype(specs[k]["dtype"]):
                raise ValueError(f"camera image {k!r} is {v.dtype}, the contract says {specs[k]['dtype']}")
            out[k] = v.astype(specs[k]["dtype"], copy=False)
        return out

    def infer(self, batch: dict[str, np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """Batched inference on graph-shaped inputs (B, ...) or (B, T_o, ...): chunks (B, T, A). `noise`
        (B, T_p, A) replaces the sampler's random start of a diffusion-family policy (for parity checks)."""
        return STEPS[self.kind].run(self, dict(batch), noise)

    def noise(self, batch: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
        """The start of a diffusion-family sampler (B, T_p, A): `noise`, else drawn from the policy's rng."""
        b = len(next(iter(batch.values())))
        shape = (b, int(self.contract["chunk"]["pred_horizon"]), self.artifact.action_dim)
        return (self.rng.standard_normal(shape) if noise is None else noise).astype(np.float32)


# ---- how each kind runs: its graphs and the step between observations and chunks ----------------------------------
def one_graph(policy: ArtifactPolicy, feeds: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
    """Observations -> the policy graph's chunk."""
    return policy.artifact.sessions["policy"].run(["actions"], feeds)[0]


def tokens(policy: ArtifactPolicy, feeds: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
    """A token policy: the instruction split into word ids here, then the policy graph."""
    instruction = policy.contract["instruction"]
    text = feeds.pop(instruction["key"])
    feeds[IDS_KEY] = instruction_ids(text, instruction["vocab"], int(instruction["max_words"]))
    return one_graph(policy, feeds, None)


def one_step_from_noise(policy: ArtifactPolicy, feeds: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
    """A one-step chunk policy (consistency head): the graph maps noise drawn here to the executed chunk."""
    return one_graph(policy, {**feeds, "noise": policy.noise(feeds, noise)}, None)


def ddim(policy: ArtifactPolicy, feeds: dict[str, np.ndarray], noise: np.ndarray | None) -> np.ndarray:
    """A diffusion policy: encode the history, then `ddim_chunks` from noise."""
    cond = policy.artifact.sessions["encoder"].run(["cond"], feeds)[0]
    return ddim_chunks(policy.artifact, cond, policy.noise(feeds, noise))


def ddim_chunks(artifact: Artifact, cond: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Deterministic DDIM from noise x (B, T_p, A) for conditions cond (B, C) along the contract's step list
    (policies/diffusion.py), then the decoded executed chunks (B, T_a, A)."""
    s, sampler = artifact.sessions, artifact.contract["sampler"]
    bars = np.asarray(sampler["alphas_cumprod"], np.float32)
    steps = [int(t) for t in sampler["timesteps"]]
    for t, t_prev in zip(steps, [*steps[1:], -1]):
        eps = s["denoiser"].run(["eps"], {"x": x, "t": np.full(len(x), t, np.int64), "cond": cond})[0]
        bar_t, bar_prev = bars[t], (bars[t_prev] if t_prev >= 0 else np.float32(1.0))
        x0 = np.clip((x - np.sqrt(1 - bar_t) * eps) / np.sqrt(bar_t), -1.0, 1.0)
        eps = (x - np.sqrt(bar_t) * x0) / np.sqrt(1 - bar_t)  # the noise consistent with the clipped x_0
        x = (np.sqrt(bar_prev) * x0 + np.sqrt(1 - bar_prev) * eps).astype(np.float32)
    return s["decoder"].run(["actions"], {"x": x})[0]


class Step(NamedTuple):
    """How the runtime runs one kind: the graphs its artifact ships and the step from graph inputs to chunks."""

    graphs: tuple[str, ...]
    run: Callable[[ArtifactPolicy, dict[str, np.ndarray], np.ndarray | None], np.ndarray]


# keyed by the contract's kind (policies/registry.py lists the same kinds with their exporters)
STEPS: dict[str, Step] = {
    "gaussian": Step(("policy",), one_graph),
    "vla": Step(("policy",), tokens),
    "consistency": Step(("policy",), one_step_from_noise),
    "diffusion": Step(("encoder", "denoiser", "decoder"), ddim),
}


def selftest(artifact: Artifact, tolerance: float | None = None) -> dict[str, Any]:
    """Run the artifact on the observations recorded in its `selftest.npz` and compare with the actions torch gave
    at export: {"samples", "max_abs_diff", "tolerance", "passed"}."""
    file = artifact.path / "selftest.npz"
    if not file.exists():
        raise ArtifactError(f"{file} is missing: this artifact carries no recorded observations")
    data = np.load(file)
    batch = {k.removeprefix("obs/"): data[k] for k in data.files if k.startswith("obs/")}
    noise = data["noise"] if "noise" in data.files else None
    actions = ArtifactPolicy(artifact).infer(batch, noise)
    diff = float(np.abs(actions - data["actions"]).max())
    tol = float(tolerance if tolerance is not None else artifact.contract["parity"]["tolerance"])
    return {"samples": len(actions), "max_abs_diff": diff, "tolerance": tol, "passed": diff <= tol}


def main(argv: list[str] | None = None) -> None:
    """`python -m robodistill.runtime.artifact <dir>`: verify an artifact on this machine (sha256, load, selftest)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("artifact", type=Path)
    args = parser.parse_args(argv)
    try:
        artifact = load_artifact(args.artifact)
        result = selftest(artifact)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"kind": artifact.kind, "action_dim": artifact.action_dim, **result}))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
