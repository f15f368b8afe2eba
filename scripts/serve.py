"""Serve a teacher or an exported policy over the openpi policy-server protocol (websocket + msgpack-numpy):

python scripts/serve.py task=pushcube teacher=scripted port=8765
python scripts/serve.py task=pushcube teacher=checkpoint teacher.path=<run dir> host=0.0.0.0 token=<shared secret>
python scripts/serve.py artifact=<run dir>/export_onnx port=8000

A teacher answers observation batches (a leading batch dim N) with {"actions": (N, A)} plus "mean", "std", "logits"
or "chunk" where it gives them; robodistill's teacher=remote is such a client. An artifact (run by onnxruntime, no
torch) answers one observation, as openpi's robot clients send it, with {"actions": (T, A)}: the action chunk.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from robodistill import config  # noqa: F401  (registers the ConfigStore entries conf/ extends: task schema, student types)
from robodistill.errors import report_errors


@hydra.main(version_base=None, config_path="../conf", config_name="serve")
@report_errors
def main(cfg: DictConfig) -> None:
    if cfg.get("artifact"):
        return serve_artifact(str(cfg.artifact), cfg)
    # imported here so a missing GL backend is reported as one line
    from robodistill.config import to_dict
    from robodistill.devices import resolve_device
    from robodistill.observations import obs_mode_for
    from robodistill.runtime.server import PolicyServer, observation_batch
    from robodistill.tasks import make_env, shape_meta, task_for_keys
    from robodistill.teachers import OPTIONAL_LABELS, check_teacher, make_teacher, query_teacher, reset_episode

    teacher_cfg = to_dict(cfg.teacher)
    kind = teacher_cfg.get("kind")
    keys = list(teacher_cfg.get("obs_keys") or ["state"])
    env = make_env(task_for_keys(to_dict(cfg.task), keys), obs_mode_for(set(keys)))  # renders only what it reads
    teacher = make_teacher(teacher_cfg, env, seed=int(cfg.seed), device=resolve_device(cfg.get("device")))
    probe = check_teacher(teacher, env)  # one query on a reset observation: the teacher fits the task
    meta = shape_meta(env)
    shapes = {k: v["shape"] for k, v in meta["obs"].items()}
    action_dim = int(env.action_space.shape[0])
    metadata = {
        "server": "robodistill",
        "teacher": kind,
        "obs_keys": list(teacher.obs_keys),
        "action_dim": action_dim,
        "shape_meta": meta,
        "batched": True,
    }
    if probe.logits is not None:  # a token policy: clients distilling over its logits need the vocabulary size
        metadata["bins"] = int(probe.logits.shape[-1])

    def infer(obs: dict[str, Any]) -> dict[str, np.ndarray]:
        out = query_teacher(teacher, observation_batch(obs, teacher.obs_keys, shapes), action_dim)
        # sent beside "actions" when the teacher gives them
        return {"actions": out.action, **{k: getattr(out, k) for k in OPTIONAL_LABELS if getattr(out, k) is not None}}

    server = PolicyServer(infer, metadata, reset=lambda: reset_episode(teacher, None), **server_options(cfg))
    try:
        serve(server, f"{kind} teacher")
    finally:
        env.close()


def server_options(cfg: DictConfig) -> dict[str, Any]:
    """Where and how PolicyServer listens: address, limits and the shared token (`token`, else $ROBODISTILL_TOKEN)."""
    from robodistill.runtime.server import TOKEN_ENV

    return {
        "host": str(cfg.host),
        "port": int(cfg.port),
        "max_message_mb": float(cfg.max_message_mb),
        "max_batch": int(cfg.max_batch),
        "token": cfg.token or os.environ.get(TOKEN_ENV),
        "allow_open": bool(cfg.allow_open),
    }


def serve_artifact(path: str, cfg: DictConfig) -> None:
    """Serve an exported policy with the torch-free runtime (its graphs checked against their sha256 first)."""
    # imported here, not at the top: serving an artifact imports neither torch nor MuJoCo
    from robodistill.runtime.artifact import ArtifactPolicy, load_artifact
    from robodistill.runtime.server import PolicyServer

    artifact = load_artifact(path)
    policy = ArtifactPolicy(artifact)
    c = artifact.contract
    metadata = {
        "server": "robodistill",
        "artifact": artifact.kind,
        "obs_keys": policy.obs_keys,
        "action_dim": artifact.action_dim,
        "batched": policy.horizon == 1,
        "contract": {k: c[k] for k in ("observations", "action", "chunk", "control_rate_hz")},
    }
    server = PolicyServer(policy.answer, metadata, reset=policy.reset, **server_options(cfg))
    serve(server, f"{artifact.kind} policy")


def serve(server, what: str) -> None:
    """Serve until Ctrl-C, which stops the server cleanly whenever it comes (also while it starts)."""
    # a process started in the background by a non-interactive shell inherits SIGINT ignored, and Python then keeps
    # it ignored: restore Ctrl-C's KeyboardInterrupt so `kill -INT` stops the server there too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.start()
        print(f"serving {what} on {server.url} (health: http://{server.host}:{server.port}/healthz)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()  # returns once served and stopped; errors exit inside it
    # every connection is closed: exit now instead of waiting for the interpreter to unload torch and MuJoCo, which
    # takes seconds (over 8 s measured on a loaded 2-core machine) while whoever pressed Ctrl-C waits for the exit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
