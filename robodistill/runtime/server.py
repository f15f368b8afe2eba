"""A policy server wire-compatible with openpi's: websocket + msgpack-numpy, metadata first, then obs -> actions."""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from robodistill.runtime.wire import packb, unpackb

log = logging.getLogger(__name__)

CONTROLS = ("episode_start", "episode_end")  # {"__ctrl__": <one of these>} is answered {"__ack__": <it>}
MAX_MESSAGE_MB = 64.0  # a batch of 64 envs x 3 cameras at 224x224 RGB is 29 MB
MAX_BATCH = 1024
TOKEN_ENV = "ROBODISTILL_TOKEN"  # entry points read the shared token from here when none is configured


class ServerError(RuntimeError):
    """The policy server could not start (e.g. the port is taken)."""

    user_facing = True  # entry points print it as one line


class PolicyServer:
    """Serves `infer(obs) -> {"actions": ..., ...}` to any number of websocket clients, one inference at a time.

    A malformed message, a batch larger than `max_batch` (for a server whose metadata says "batched") or a failing
    `infer` is answered with one text frame "error: ..." (as openpi does), and the connection stays open. A message
    over `max_message_mb` is refused before it is read: the connection closes with code 1009 and the reason, and
    other clients are served as before. With a `token`, a client must send `Authorization: Bearer <token>` in its
    handshake (refused with HTTP 401 otherwise; GET /healthz stays open); a host beyond loopback needs a token
    unless `allow_open`. The limits go out in the metadata (`max_message_bytes`, `max_batch`), so that clients can
    keep within them. `reset` is called on an "episode_start" control message.
    """

    def __init__(
        self,
        infer: Callable[[dict], dict],
        metadata: dict,
        host: str = "127.0.0.1",
        port: int = 8000,
        reset: Callable[[], None] | None = None,
        max_message_mb: float = MAX_MESSAGE_MB,
        max_batch: int = MAX_BATCH,
        token: str | None = None,
        allow_open: bool = False,
    ):
        if max_message_mb <= 0 or max_batch < 1:
            raise ServerError(f"need max_message_mb > 0 and max_batch >= 1, got {max_message_mb} and {max_batch}")
        if not token and not allow_open and not is_loopback(host):
            raise ServerError(
                f"serving on {host} reaches beyond this machine: set a shared token (token=... or the {TOKEN_ENV} "
                "environment variable; clients send it as teacher.token) or allow_open=true"
            )
        self.infer, self.metadata, self.host, self.port, self.reset = infer, metadata, host, port, reset
        self.max_message_bytes, self.max_batch = int(max_message_mb * 2**20), int(max_batch)
        self._expected_auth = f"Bearer {token}".encode() if token else None
        metadata = {**metadata, "max_message_bytes": self.max_message_bytes, "max_batch": self.max_batch}
        self.metadata = metadata
        self._packed_metadata = packb(metadata)  # an unpackable metadata fails here, not at the first client
        # one worker thread: inference and resets never run concurrently (a torch policy is not thread-safe), always
        # on the same thread, and the event loop stays free to answer pings and health checks meanwhile
        self._worker: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()  # set once the loop listens (or failed to): stop() waits for it

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> PolicyServer:
        """Serve in a background thread; returns once listening (`.port` is then the bound port)."""
        if self._thread is not None:
            return self
        ready = self._ready = threading.Event()
        failure: list[BaseException] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-infer")
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="policy-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._worker.shutdown()
            raise ServerError(f"cannot serve on {self.host}:{self.port}: {failure[0]}") from failure[0]
        return self

    def serve_forever(self) -> None:
        """Serve until `stop()` is called from another thread, or Ctrl-C (which stops cleanly, then propagates)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)  # a timed join: Ctrl-C interrupts it on every Python version
        finally:
            self.stop()

    def stop(self) -> None:
        """Close every connection, stop listening and wait for the server thread."""
        thread = self._thread
        if thread is None:
            return
        self._ready.wait()  # a Ctrl-C while start() waited: the loop that must be told to stop may not exist yet
        loop = self._loop
        if loop is not None and self._stopping is not None:
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # the loop already closed
                pass
        thread.join()
        self._thread = self._loop = self._stopping = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # reported by start(); after startup the loop only ends by stop()
            if not ready.is_set():
                failure.append(exc)
            else:
                log.exception("policy server stopped on an error")
        finally:
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        # compression off (observations are images and arrays, as in openpi); a message over the limit is refused from
        # its frame header, before its payload is read; at most 2 unread messages wait per connection
        async with serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            max_size=self.max_message_bytes,
            max_queue=2,
            process_request=self._process_request,
        ) as server:
            self.port = _bound_port(server)
            ready.set()
            await self._stopping.wait()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP GET /healthz answers 200 OK; a handshake without the token gets 401; anything else goes on to
        the websocket handshake."""
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self._expected_auth is not None:
            sent = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(sent, self._expected_auth):
                log.warning("refused a client without the right token")
                reason = "wrong token" if sent else "no token (send Authorization: Bearer <token>)"
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{reason}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await ws.send(self._packed_metadata)
            async for message in ws:
                reply = await self._answer(message)
                await ws.send(reply)
        except ConnectionClosed:
            pass  # the client went away mid-exchange: nothing to answer

    async def _answer(self, message: str | bytes) -> str | bytes:
        """The reply frame to one message: packed actions or an ack, else a text frame with the error."""
        if isinstance(message, str):
            return _error("expected a binary msgpack-numpy frame, got a text frame")
        try:
            obs = unpackb(message)
        except ValueError as exc:
            return _error(str(exc))
        if not isinstance(obs, dict) or not all(isinstance(k, str) for k in obs):
            return _error(f"expected a msgpack map with str keys (an observation dict), got a {type(obs).__name__}")
        if self.metadata.get("batched"):
            n = max((len(v) for v in obs.values() if isinstance(v, list) or np.ndim(v) > 0), default=0)
            if n > self.max_batch:
                return _error(f"a batch of {n} exceeds this server's max_batch={self.max_batch}: send smaller batches")
        loop = asyncio.get_running_loop()
        if "__ctrl__" in obs:
            ctrl = obs["__ctrl__"]
            if ctrl not in CONTROLS:
                return _error(f"unknown control message {ctrl!r}; known: {', '.join(CONTROLS)}")
            if ctrl == "episode_start" and self.reset is not None:
                try:
                    await loop.run_in_executor(self._worker, self.reset)
                except Exception as exc:  # reported to the client; the server keeps serving
                    log.exception("reset failed")
                    return _error(f"reset failed: {type(exc).__name__}: {exc}")
            return packb({"__ack__": ctrl})
        start = time.perf_counter()
        try:
            actions = await loop.run_in_executor(self._worker, self.infer, obs)
        except Exception as exc:  # reported to the client; the server keeps serving
            log.warning("inference failed: %s: %s", type(exc).__name__, exc)
            return _error(f"inference failed: {type(exc).__name__}: {exc}")
        if not isinstance(actions, dict):
            return _error(f"the policy returned a {type(actions).__name__}, not a dict with 'actions'")
        try:
            return packb({**actions, "server_timing": {"infer_ms": 1000 * (time.perf_counter() - start)}})
        except (TypeError, ValueError) as exc:
            return _error(f"the policy's reply cannot be sent: {exc}")


def _error(message: str) -> str:
    """One text frame holding one line, as openpi sends errors."""
    return "error: " + " ".join(message.split())


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _bound_port(server: Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


def observation_batch(obs: dict[str, Any], keys: list[str], shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The policy's view of a request {key: (N, *shape)}, checked against `shapes` {key: shape}; ValueError naming
    what is missing or misshapen (the server answers it as an error and keeps serving)."""
    missing = [k for k in keys if k not in obs]
    if missing:
        raise ValueError(f"the observation lacks {missing}: this policy reads {keys}, the request has {sorted(obs)}")
    batch = {k: np.asarray(obs[k]) for k in keys}
    for k, a in batch.items():
        shape = shapes.get(k)
        if shape is not None and (a.ndim != len(shape) + 1 or list(a.shape[1:]) != list(shape)):
            expected = ", ".join(["N", *map(str, shape)])
            raise ValueError(f"observation {k!r} has shape {a.shape}, expected ({expected}): a batch of N")
    if len({len(a) for a in batch.values()}) > 1:
        raise ValueError(f"observations differ in batch size: { {k: a.shape for k, a in batch.items()} }")
    return batch
