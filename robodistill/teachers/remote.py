"""A policy behind an openpi-style policy server (a VLA served by openpi, or our scripts/serve.py) as a teacher."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from robodistill.config import option_defaults
from robodistill.errors import UserError
from robodistill.observations import INSTRUCTION_KEY
from robodistill.runtime.client import PolicyClient, RemoteError
from robodistill.runtime.server import TOKEN_ENV
from robodistill.teachers.protocol import OPTIONAL_LABELS, TeacherError, TeacherOutput

LABEL_KEYS = ("actions", *OPTIONAL_LABELS)  # reply keys read; "actions" is required


def decode_instruction(arr: np.ndarray) -> str:
    """The instruction string held by one env's zero-padded uint8 UTF-8 array (L,)."""
    return np.asarray(arr, dtype=np.uint8).tobytes().rstrip(b"\0").decode("utf-8", errors="replace")


class RemoteTeacher:
    """Labels by asking a policy server over the openpi websocket + msgpack-numpy protocol.

    `batched=True` (our serve.py) sends the whole batch in one request; `batched=False` (a stock openpi server
    takes one observation) sends one request per env. Observation keys are renamed by `key_map` (our key ->
    server key); with `prompt_key` set, the `instruction` observation (one of `obs_keys`) goes as its string under
    that key. A reply's "actions" may be an action chunk (H, A) per env, starting at the current step: the label is
    its first action, and the chunk is kept. A batch larger than the server's `max_batch` goes in several requests.
    """

    def __init__(
        self,
        client: PolicyClient,
        obs_keys: list[str],
        batched: bool,
        key_map: Mapping[str, str] | None = None,
        prompt_key: str | None = None,
    ):
        self.client, self.batched, self.prompt_key = client, batched, prompt_key
        self.key_map = dict(key_map or {})
        self.obs_keys = list(obs_keys)
        if prompt_key and INSTRUCTION_KEY not in self.obs_keys:
            # listed, not added here: the run picks the env's observation mode from teacher.obs_keys
            raise UserError(
                f"teacher.prompt_key={prompt_key} sends the instruction: add {INSTRUCTION_KEY} to teacher.obs_keys"
            )
        self.metadata: dict[str, Any] = client.metadata
        bins = self.metadata.get("bins")
        self.bins: int | None = None if bins is None else int(bins)  # set when the served policy is a token policy

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RemoteTeacher:
        """Connect to `cfg.uri` and check that what we send is what the server reads; keys not in `cfg` come from
        conf/teacher/remote.yaml."""
        cfg = {**option_defaults("teacher", "remote"), **cfg}
        try:
            client = PolicyClient(
                str(cfg["uri"]),
                timeout_s=float(cfg["timeout_s"]),
                retries=int(cfg["retries"]),
                backoff_s=float(cfg["backoff_s"]),
                token=cfg["token"] or os.environ.get(TOKEN_ENV),
            )
        except RemoteError as exc:
            raise UserError(f"cannot reach the remote teacher: {exc} (is the server running? see teacher.uri)") from exc
        try:
            teacher = cls(
                client,
                obs_keys=list(cfg["obs_keys"]),
                batched=bool(cfg["batched"]),
                key_map=cfg["key_map"],
                prompt_key=cfg["prompt_key"],
            )
            teacher.check_server()
        except UserError:
            client.close()
            raise
        return teacher

    def check_server(self) -> None:
        """Where the server publishes what it reads (our serve.py does), it must match what this teacher sends."""
        wanted = self.metadata.get("obs_keys")
        sent = {
            self.prompt_key if self.prompt_key and k == INSTRUCTION_KEY else self.key_map.get(k, k)
            for k in self.obs_keys
        }
        if wanted is not None and not set(wanted) <= sent:
            raise UserError(
                f"the server at {self.client.uri} reads {sorted(wanted)}, but this teacher sends {sorted(sent)}: "
                "set teacher.obs_keys (and teacher.key_map)"
            )
        if self.metadata.get("batched") and not self.batched:
            raise UserError(f"the server at {self.client.uri} takes batches: set teacher.batched=true")

    def act(self, obs: dict[str, np.ndarray]) -> TeacherOutput:
        n = len(obs[self.obs_keys[0]])
        try:
            if not self.batched:
                outs = [self._labels(self.client.infer(self._message(obs, i)), 1, batched=False) for i in range(n)]
                return _concatenate(outs)
            size = int(self.metadata.get("max_batch") or n)
            if size >= n:
                return self._labels(self.client.infer(self._message(obs)), n, batched=True)
            parts = [{k: v[i : i + size] for k, v in obs.items()} for i in range(0, n, size)]
            return _concatenate(
                [self._labels(self.client.infer(self._message(p)), len(p[self.obs_keys[0]]), True) for p in parts]
            )
        except RemoteError as exc:
            raise TeacherError(f"remote teacher: {exc}") from exc

    def _message(self, obs: dict[str, np.ndarray], i: int | None = None) -> dict[str, Any]:
        """The request for the batch (i None) or for env i alone: renamed keys, and the prompt string(s)."""
        message: dict[str, Any] = {}
        for k in self.obs_keys:
            if self.prompt_key and k == INSTRUCTION_KEY:
                rows = np.asarray(obs[k])
                prompts = [decode_instruction(row) for row in rows] if i is None else decode_instruction(rows[i])
                message[self.prompt_key] = prompts
            else:
                message[self.key_map.get(k, k)] = np.asarray(obs[k] if i is None else obs[k][i])
        return message

    def _labels(self, reply: dict[str, Any], n: int, batched: bool) -> TeacherOutput:
        """A reply as TeacherOutput for n envs; an unbatched reply (one env) gets its batch dim back."""
        if reply.get("actions") is None:
            raise TeacherError(f"remote teacher at {self.client.uri} replied without 'actions' (keys: {sorted(reply)})")
        fields = {}
        for key in LABEL_KEYS:
            if reply.get(key) is None:
                continue
            try:
                value = np.asarray(reply[key], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise TeacherError(f"remote teacher's {key!r} is not a numeric array: {exc}") from exc
            fields[key] = value if batched else value[None]
        actions = fields.pop("actions")
        if actions.ndim not in (2, 3) or len(actions) != n:
            shape = actions.shape if batched else actions.shape[1:]
            expected = f"({n}, A) or ({n}, H, A)" if batched else "(A,) or (H, A)"
            raise TeacherError(f"remote teacher returned actions of shape {shape}, expected {expected}")
        if actions.ndim == 3:  # an action chunk (N, H, A) from the current step: the label is its first action
            fields.setdefault("chunk", actions)
            actions = actions[:, 0]
        return TeacherOutput(action=actions, **fields)


def _concatenate(outs: list[TeacherOutput]) -> TeacherOutput:
    """One TeacherOutput from per-env ones; a field only some envs got is dropped."""
    fields = {}
    for name in ("action", *OPTIONAL_LABELS):
        values = [getattr(o, name) for o in outs]
        if all(v is not None for v in values):
            try:
                fields[name] = np.concatenate(values)
            except ValueError as exc:
                raise TeacherError(f"remote teacher's {name!r} differs in shape between envs: {exc}") from exc
    return TeacherOutput(**fields)
