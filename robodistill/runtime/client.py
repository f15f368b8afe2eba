"""A client for openpi-style policy servers (ours or openpi's): `PolicyClient(uri).infer(obs) -> dict`."""

from __future__ import annotations

import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from robodistill.runtime.server import TOKEN_ENV
from robodistill.runtime.wire import packb, unpackb


class RemoteError(RuntimeError):
    """The policy server could not be reached, broke off, or answered with an error."""

    user_facing = True  # entry points print it as one line


class _BrokenReply(Exception):
    """A reply that is not a packed dict: treated like a broken connection."""


# what a dead, unreachable, slow or confused server raises (TimeoutError and refused connections are OSErrors)
_CONNECTION_ERRORS = (OSError, WebSocketException, _BrokenReply)


class PolicyClient:
    """Connects to a policy server, reads its metadata, and sends observation dicts for action dicts.

    A failed connect or exchange (refused, closed, timed out, garbled) is retried `retries` times on a fresh
    connection, waiting `backoff_s * 2**i` before retry i, then raises RemoteError. An error the server answers, a
    refused token and a message over the server's size limit are raised at once: resending would fail the same way.
    `token` goes in the handshake as `Authorization: Bearer <token>`.
    """

    def __init__(
        self,
        uri: str,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        token: str | None = None,
    ):
        if not uri.startswith(("ws://", "wss://")):
            raise RemoteError(f"a policy server address looks like ws://host:port, got {uri!r}")
        if retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                f"need retries >= 0, timeout_s > 0, backoff_s >= 0; got {retries}, {timeout_s}, {backoff_s}"
            )
        self.uri, self.timeout_s, self.retries, self.backoff_s = uri, timeout_s, retries, backoff_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._ws: ClientConnection | None = None
        self.metadata: dict[str, Any] = {}
        self._with_retries(lambda: None)  # connects, which reads the server's metadata

    def infer(self, obs: dict) -> dict:
        """Send one observation dict (arrays, numbers, strings) and return the server's reply dict."""
        message = packb(obs)  # unsendable content (object arrays, custom classes) raises here, without retries
        limit = self.metadata.get("max_message_bytes")
        if limit is not None and len(message) > int(limit):
            raise RemoteError(
                f"a message of {len(message) / 2**20:.1f} MB exceeds the limit of the server at {self.uri} "
                f"({int(limit) / 2**20:.1f} MB): send smaller batches, or raise its max_message_mb"
            )
        return self._with_retries(lambda: self._exchange(message))

    def close(self) -> None:
        """Close the connection (a later `infer` reconnects)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except (OSError, WebSocketException):
                pass  # closing an already broken connection

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _with_retries(self, call: Any) -> Any:
        """Run `call` on a connection (opened if needed), reconnecting and retrying on connection failures."""
        tries = self.retries + 1
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                if self._ws is None:
                    self._connect()
                return call()
            except InvalidURI as exc:
                raise RemoteError(f"bad policy server address {self.uri!r}: {exc}") from exc
            except InvalidStatus as exc:
                self.close()
                if exc.response.status_code != 401:
                    raise RemoteError(f"the server at {self.uri} refused the connection: {exc}") from exc
                said = exc.response.body.decode(errors="replace").strip()
                raise RemoteError(
                    f"the server at {self.uri} refused the connection: {said} (set teacher.token or the "
                    f"{TOKEN_ENV} environment variable to the server's token)"
                ) from exc
            except ConnectionClosed as exc:
                self.close()
                if exc.rcvd is not None and exc.rcvd.code == CloseCode.MESSAGE_TOO_BIG:
                    raise RemoteError(f"the server at {self.uri} refused the message: {exc.rcvd.reason}") from exc
                last = exc
            except _CONNECTION_ERRORS as exc:
                last = exc
                self.close()  # a late reply on this connection would answer the next request: start afresh
        detail = str(last) or "no reply"
        raise RemoteError(
            f"policy server at {self.uri} failed {tries} tries (1 + {self.retries} retries): "
            f"{type(last).__name__}: {' '.join(detail.split())}"
        ) from last

    def _connect(self) -> None:
        ws = connect(
            self.uri, compression=None, max_size=None, open_timeout=self.timeout_s, additional_headers=self._headers
        )
        # entered as `with connect(...)` would be: websockets >= 17.1 warns about a connection used bare
        self._ws = ws.__enter__()
        self.metadata = self._receive()

    def _exchange(self, message: bytes) -> dict:
        self._ws.send(message)
        return self._receive()

    def _receive(self) -> dict:
        reply = self._ws.recv(timeout=self.timeout_s)
        if isinstance(reply, str):  # openpi answers a failed inference with a text frame (a traceback)
            raise RemoteError(f"server at {self.uri} answered with an error: {_one_line(reply)}")
        try:
            data = unpackb(reply)
        except ValueError as exc:
            raise _BrokenReply(str(exc)) from exc
        if not isinstance(data, dict):
            raise _BrokenReply(f"the reply is a {type(data).__name__}, not a dict")
        return data


def _one_line(text: str) -> str:
    """A traceback's last line (the error itself), or the text on one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "(empty)"
    line = lines[-1] if lines[0].startswith("Traceback") else " ".join(lines)
    return line.removeprefix("error: ")  # our server's prefix; the message already says it is an error
