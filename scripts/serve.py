"""Serve a teacher over the openpi policy-server protocol (websocket + msgpack-numpy), until Ctrl-C:

python scripts/serve.py task=pushcube teacher=scripted port=8765
python scripts/serve.py task=pushcube teacher=checkpoint teacher.path=<run dir> host=0.0.0.0

Clients send observation batches (a leading batch dim N) and get {"actions": (N, A)} plus "mean", "std", "logits"
or "chunk" where the teacher gives them; robodistill's teacher=remote is such a client.
"""

from __future__ import annotations

from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from robodistill.errors import report_errors


def observation_batch(obs: dict[str, Any], keys: list[str], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The teacher's view of a request, checked against the task's shapes; a bad request raises ValueError."""
    missing = [k for k in keys if k not in obs]
    if missing:
        raise ValueError(f"the observation lacks {missing}: this teacher reads {keys}, the request has {sorted(obs)}")
    batch = {k: np.asarray(obs[k]) for k in keys}
    for k, a in batch.items():
        shape = meta["obs"].get(k, {}).get("shape")
        if shape is not None and (a.ndim != len(shape) + 1 or list(a.shape[1:]) != list(shape)):
            expected = ", ".join(["N", *map(str, shape)])
            raise ValueError(f"observation {k!r} has shape {a.shape}, expected ({expected}): a batch of N")
    if len({len(a) for a in batch.values()}) > 1:
        raise ValueError(f"observations differ in batch size: { {k: a.shape for k, a in batch.items()} }")
    return batch


@hydra.main(version_base=None, config_path="../conf", config_name="serve")
@report_errors
def main(cfg: DictConfig) -> None:
    # imported here so a missing GL backend is reported as one line
    from robodistill.components import check_teacher, to_dict
    from robodistill.observations import obs_mode_for
    from robodistill.runtime.server import PolicyServer
    from robodistill.tasks import make_env, shape_meta
    from robodistill.teachers import OPTIONAL_LABELS, make_teacher, query_teacher, reset_episode

    teacher_cfg = to_dict(cfg.teacher)
    kind = teacher_cfg.get("kind")
    env = make_env(to_dict(cfg.task), obs_mode_for(set(teacher_cfg.get("obs_keys") or ["state"])))
    teacher = make_teacher(teacher_cfg, env, seed=int(cfg.seed))
    probe = check_teacher(teacher, env)  # one query on a reset observation: the teacher fits the task
    meta = shape_meta(env)
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
        out = query_teacher(teacher, observation_batch(obs, teacher.obs_keys, meta), action_dim)
        # sent beside "actions" when the teacher gives them
        return {"actions": out.action, **{k: getattr(out, k) for k in OPTIONAL_LABELS if getattr(out, k) is not None}}

    server = PolicyServer(
        infer, metadata, host=str(cfg.host), port=int(cfg.port), reset=lambda: reset_episode(teacher, None)
    )
    server.start()
    print(f"serving {kind} teacher on {server.url} (health: http://{server.host}:{server.port}/healthz)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        env.close()


if __name__ == "__main__":
    main()
