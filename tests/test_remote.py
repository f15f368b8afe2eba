"""The openpi policy-server protocol: wire format, server, client, remote teacher and scripts/serve.py (loopback)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from conftest import ROOT
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect
from websockets.sync.server import serve as sync_serve

import envs
from robodistill.errors import UserError
from robodistill.runtime.client import PolicyClient, RemoteError
from robodistill.runtime.server import PolicyServer, ServerError, is_loopback
from robodistill.runtime.wire import packb, unpackb
from robodistill.teachers import TeacherError
from robodistill.teachers.remote import RemoteTeacher


def double_state(obs: dict) -> dict:
    return {"actions": obs["state"][:, :4] * 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        assert r.read() == b"OK\n"
        return r.status


@pytest.fixture(scope="module")
def pushcube():
    """A PushCube env, its scripted expert and a batch of 3 different states."""
    env = gym.make("robodistill/PushCube-v0")
    states = np.stack([env.reset(seed=s)[0] for s in range(3)]).astype(np.float32)  # (3, D)
    yield env, envs.make_expert(env), states
    env.close()


# --- wire format


def test_wire_round_trip_keeps_dtypes_shapes_and_values():
    obs = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f64": np.linspace(0, 1, 8).reshape(4, 2),
        "i16": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        "bool": np.array([True, False, True]),
        "zero_d": np.array(3.5),
        "nonfinite": np.array([np.nan, np.inf, -np.inf], dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalars": [np.float32(1.5), np.float64(2.5), np.int64(-7), np.bool_(True), np.uint8(200)],
        "nested": {"list": [1, "two", np.ones((2, 2), np.uint8)], "none": None, "text": "push the cube"},
    }
    back = unpackb(packb(obs))
    for k in ("f32", "f64", "i16", "bool", "zero_d", "nonfinite", "empty"):
        assert back[k].dtype == obs[k].dtype and back[k].shape == obs[k].shape, k
        np.testing.assert_array_equal(back[k], obs[k])
    for sent, got in zip(obs["scalars"], back["scalars"]):
        assert type(got) is type(sent) and got == sent
    assert back["nested"]["list"][:2] == [1, "two"] and back["nested"]["list"][2].dtype == np.uint8
    assert back["nested"]["none"] is None and back["nested"]["text"] == "push the cube"
    back["f32"][0, 0] = -1.0  # decoded arrays are writable copies


def test_wire_format_is_openpis():
    """Arrays and scalars travel as the maps openpi's msgpack_numpy writes and reads."""
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(packb({"a": arr, "s": np.int32(4)}))  # no hook: the maps as they are on the wire
    assert raw["a"] == {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    assert raw["s"] == {b"__npgeneric__": True, b"data": 4, b"dtype": "<i4"}
    written = msgpack.packb({"a": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": (2, 3)}})
    np.testing.assert_array_equal(unpackb(written)["a"], arr)


def test_wire_refuses_object_arrays_and_garbage():
    with pytest.raises(ValueError, match="object"):
        packb({"x": np.array([{"a": 1}, None], dtype=object)})
    with pytest.raises(ValueError, match="complex"):
        packb(np.ones(2, dtype=np.complex64))
    with pytest.raises(ValueError, match="not a msgpack-numpy message"):
        unpackb(b"\xc1 garbage \xff")


# --- server and client


def test_round_trip_metadata_and_healthz():
    with PolicyServer(double_state, {"name": "double", "bins": 5}, port=0) as server:
        assert healthz(server.port) == 200
        with PolicyClient(server.url) as client:
            assert client.metadata == {"name": "double", "bins": 5, "max_message_bytes": 64 * 2**20, "max_batch": 1024}
            state = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)  # a batch of 3
            reply = client.infer({"state": state})
            np.testing.assert_array_equal(reply["actions"], state[:, :4] * 2)
            assert reply["actions"].dtype == np.float32 and reply["server_timing"]["infer_ms"] >= 0
            assert client.infer({"__ctrl__": "episode_start"}) == {"__ack__": "episode_start"}


def test_control_messages_call_reset():
    resets = []
    with (
        PolicyServer(double_state, {}, port=0, reset=lambda: resets.append(1)) as server,
        PolicyClient(server.url) as c,
    ):
        assert c.infer({"__ctrl__": "episode_end"}) == {"__ack__": "episode_end"}
        assert c.infer({"__ctrl__": "episode_start"}) == {"__ack__": "episode_start"}
    assert resets == [1]


def test_malformed_messages_get_an_error_and_the_server_keeps_serving():
    state = np.ones((2, 6), np.float32)
    with PolicyServer(double_state, {}, port=0) as server:
        with connect(server.url, compression=None) as ws, PolicyClient(server.url) as other:
            assert isinstance(unpackb(ws.recv(timeout=5)), dict)  # metadata first
            ws.send(b"\xc1 garbage \xff")
            answer = ws.recv(timeout=5)
            assert isinstance(answer, str) and answer.startswith("error: ") and "\n" not in answer
            ws.send(msgpack.packb([1, 2, 3]))  # a list, not an observation map
            assert "str keys" in ws.recv(timeout=5)
            ws.send(packb({"state": state}))  # the same connection still answers
            np.testing.assert_array_equal(unpackb(ws.recv(timeout=5))["actions"], state[:, :4] * 2)
            np.testing.assert_array_equal(other.infer({"state": state})["actions"], state[:, :4] * 2)


def test_failed_inference_is_raised_at_once_without_retries():
    calls = []

    def broken(obs: dict) -> dict:
        calls.append(1)
        raise KeyError("state")

    with PolicyServer(broken, {}, port=0) as server, PolicyClient(server.url, retries=3) as client:
        with pytest.raises(RemoteError, match=f"server at {server.url} answered with an error: .*KeyError"):
            client.infer({"x": np.zeros(2)})
        assert calls == [1]


def test_inference_is_never_concurrent():
    active, most = [0], [0]

    def slow(obs: dict) -> dict:
        active[0] += 1
        most[0] = max(most[0], active[0])
        time.sleep(0.01)
        active[0] -= 1
        return {"actions": obs["state"]}

    with PolicyServer(slow, {}, port=0) as server:

        def ask() -> None:
            with PolicyClient(server.url) as client:
                for _ in range(3):
                    client.infer({"state": np.zeros((1, 2))})

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert most[0] == 1


def test_oversized_message_is_refused_unread_while_others_are_served():
    state = np.ones((2, 6), np.float32)
    big = {"state": np.zeros((2**18 + 1024,), np.float32)}  # just over 1 MB
    with PolicyServer(double_state, {}, port=0, max_message_mb=1) as server, PolicyClient(server.url) as other:
        assert server.max_message_bytes == 2**20
        with connect(server.url, compression=None, max_size=None) as ws:  # a client that ignores the limit
            unpackb(ws.recv(timeout=5))
            ws.send(packb(big))
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 1009 and "exceeds" in closed.value.rcvd.reason
        # ours reads the limit from the metadata and refuses to send, without retries
        with pytest.raises(RemoteError, match="1.0 MB exceeds the limit of the server .*max_message_mb"):
            other.infer(big)
        other.metadata = {}  # a client that does not know the limit: the server's refusal is raised at once
        with pytest.raises(RemoteError, match="refused the message: .*exceeds"):
            other.infer(big)
        np.testing.assert_array_equal(other.infer({"state": state})["actions"], state[:, :4] * 2)


def test_batches_over_max_batch_are_refused_with_an_error_reply():
    with PolicyServer(double_state, {"batched": True}, port=0, max_batch=2) as server, PolicyClient(server.url) as c:
        with pytest.raises(RemoteError, match="a batch of 3 exceeds this server's max_batch=2"):
            c.infer({"state": np.ones((3, 6), np.float32)})
        assert c.infer({"state": np.ones((2, 6), np.float32)})["actions"].shape == (2, 4)


def test_a_token_is_required_when_set_and_the_right_one_is_served():
    state = np.ones((2, 6), np.float32)
    with PolicyServer(double_state, {}, port=0, token="s3cret") as server:
        with PolicyClient(server.url, token="s3cret") as good:
            with pytest.raises(RemoteError, match="refused the connection: no token .*teacher.token"):
                PolicyClient(server.url, retries=2)  # refused at once, not retried
            with pytest.raises(RemoteError, match="refused the connection: wrong token"):
                PolicyClient(server.url, token="guess")
            np.testing.assert_array_equal(good.infer({"state": state})["actions"], state[:, :4] * 2)
        assert healthz(server.port) == 200  # the health check stays open


def test_serving_beyond_loopback_needs_a_token_or_allow_open():
    with pytest.raises(ServerError, match="serving on 0.0.0.0 reaches beyond this machine: set a shared token"):
        PolicyServer(double_state, {}, host="0.0.0.0", port=0)
    for host in ("127.0.0.1", "::1", "localhost"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "192.168.1.7", "robot-pc"):
        assert not is_loopback(host)
    with PolicyServer(double_state, {}, host="0.0.0.0", port=0, allow_open=True) as server:
        with PolicyClient(f"ws://127.0.0.1:{server.port}") as client:
            assert client.infer({"state": np.ones((1, 6))})["actions"].shape == (1, 4)
    with pytest.raises(ServerError, match="max_batch >= 1"):
        PolicyServer(double_state, {}, port=0, max_batch=0)


def test_killed_server_raises_after_bounded_retries():
    server = PolicyServer(double_state, {}, port=0).start()
    client = PolicyClient(server.url, retries=2, backoff_s=0.05)
    server.stop()
    with pytest.raises(RemoteError, match=f"{server.url} failed 3 tries"):  # 1 try + 2 retries, then it gives up
        client.infer({"state": np.zeros((1, 6))})
    client.close()


def test_nothing_listening_raises_remote_error():
    uri = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteError, match=f"{uri} failed 2 tries.*refused"):
        PolicyClient(uri, retries=1, backoff_s=0.01)


def test_slow_server_times_out_after_bounded_retries():
    def slow(obs: dict) -> dict:
        time.sleep(0.3)
        return {"actions": obs["state"]}

    with PolicyServer(slow, {}, port=0) as server, PolicyClient(server.url, timeout_s=0.1, retries=1) as client:
        with pytest.raises(RemoteError, match="2 tries.*TimeoutError"):
            client.infer({"state": np.zeros((1, 2))})


def test_garbled_replies_raise_after_bounded_retries():
    def garbler(ws) -> None:
        ws.send(packb({}))
        for _ in ws:
            ws.send(b"\xc1 not msgpack")

    with sync_serve(garbler, "127.0.0.1", 0, compression=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        with PolicyClient(uri, retries=1, backoff_s=0.01) as client:
            with pytest.raises(RemoteError, match="2 tries.*not a msgpack-numpy message"):
                client.infer({"state": np.zeros((1, 2))})
        server.shutdown()


# --- remote teacher


def test_remote_teacher_batched_matches_the_expert(pushcube):
    _, expert, states = pushcube
    with PolicyServer(lambda obs: {"actions": expert(obs["state"])}, {"obs_keys": ["state"]}, port=0) as server:
        teacher = RemoteTeacher.from_config({"uri": server.url, "obs_keys": ["state"], "batched": True})
        out = teacher.act({"state": states})
        np.testing.assert_allclose(out.action, expert(states), rtol=0, atol=1e-6)
        assert out.action.shape == (3, 4) and out.chunk is None and teacher.bins is None
        teacher.client.close()


def test_remote_teacher_splits_batches_to_the_servers_max_batch(pushcube, monkeypatch):
    _, expert, states = pushcube
    sizes = []

    def label(obs: dict) -> dict:
        sizes.append(len(obs["state"]))
        return {"actions": expert(obs["state"])}

    monkeypatch.setenv("ROBODISTILL_TOKEN", "from-env")  # read when teacher.token is unset
    meta = {"obs_keys": ["state"], "batched": True}
    with PolicyServer(label, meta, port=0, max_batch=2, token="from-env") as server:
        teacher = RemoteTeacher.from_config({"uri": server.url, "obs_keys": ["state"], "batched": True})
        out = teacher.act({"state": states})
        teacher.client.close()
    assert sizes == [2, 1]
    np.testing.assert_allclose(out.action, expert(states), rtol=0, atol=1e-6)


def test_remote_teacher_per_env_with_prompt_and_chunk(pushcube):
    """A stock-openpi-like server: one unbatched observation per request, a prompt string, an action chunk back."""
    _, expert, states = pushcube
    prompts = []

    def openpi_like(obs: dict) -> dict:
        prompts.append(obs["prompt"])
        action = expert(obs["observation/state"])  # (A,)
        return {"actions": np.stack([action, 0.5 * action])}  # an action chunk (H=2, A)

    texts = ["push the cube to the goal", "pousser le cube à gauche", ""]
    instruction = np.zeros((3, 64), np.uint8)  # UTF-8 bytes, zero padded
    for i, text in enumerate(texts):
        raw = np.frombuffer(text.encode(), np.uint8)
        instruction[i, : len(raw)] = raw
    cfg = {
        "uri": None,
        "obs_keys": ["state", "instruction"],
        "batched": False,
        "key_map": {"state": "observation/state"},
        "prompt_key": "prompt",
    }
    with PolicyServer(openpi_like, {"policy": "pi0"}, port=0) as server:
        teacher = RemoteTeacher.from_config({**cfg, "uri": server.url})
        out = teacher.act({"state": states, "instruction": instruction})
        teacher.client.close()
    assert prompts == texts
    np.testing.assert_allclose(out.action, expert(states), rtol=0, atol=1e-6)
    assert out.chunk.shape == (3, 2, 4)
    np.testing.assert_allclose(out.chunk[:, 1], 0.5 * out.action, rtol=0, atol=1e-6)


def test_remote_teacher_errors_are_clear(pushcube):
    _, _, states = pushcube
    with pytest.raises(UserError, match="cannot reach the remote teacher"):
        RemoteTeacher.from_config({"uri": f"ws://127.0.0.1:{free_port()}", "retries": 0})
    with PolicyServer(lambda obs: {"wrong": 1}, {"obs_keys": ["state"]}, port=0) as server:
        with pytest.raises(UserError, match="reads \\['state'\\], but this teacher sends \\['front_rgb'\\]"):
            RemoteTeacher.from_config({"uri": server.url, "obs_keys": ["front_rgb"]})
        teacher = RemoteTeacher.from_config({"uri": server.url})
        with pytest.raises(TeacherError, match="replied without 'actions'"):
            teacher.act({"state": states})
        server.infer = lambda obs: {"actions": np.zeros((2, 4))}  # a batch of 2 for 3 states
        with pytest.raises(TeacherError, match="shape \\(2, 4\\)"):
            teacher.act({"state": states})
        server.infer = lambda obs: 1 / 0
        with pytest.raises(TeacherError, match="ZeroDivisionError"):
            teacher.act({"state": states})
        teacher.client.close()


# --- scripts/serve.py


def test_serve_script_end_to_end(pushcube):
    _, expert, states = pushcube
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/serve.py", "task=pushcube", "teacher=scripted", f"port={port}"],
        cwd=ROOT,
        # SIGABRT dumps every thread's stack; the token comes from the environment, as a deployment would set it
        env={**os.environ, "MUJOCO_GL": "egl", "PYTHONFAULTHANDLER": "1", "ROBODISTILL_TOKEN": "e2e"},
        # started as a background job of a non-interactive shell is: with SIGINT ignored, which Ctrl-C must overcome
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # a safety net against a hung start, not a speed claim
        while True:  # up when it answers its health check (a loaded machine may take a while to import everything)
            with contextlib.suppress(OSError):
                if healthz(port) == 200:
                    break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "serve.py did not come up"
            time.sleep(0.2)
        with pytest.raises(RemoteError, match="no token"):
            PolicyClient(f"ws://127.0.0.1:{port}")
        with PolicyClient(f"ws://127.0.0.1:{port}", token="e2e") as client:
            assert client.metadata["teacher"] == "scripted" and client.metadata["obs_keys"] == ["state"]
            reply = client.infer({"state": states})
        assert reply["actions"].shape == (3, 4)
        np.testing.assert_allclose(reply["actions"], expert(states), rtol=0, atol=1e-6)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean exit (prompt: it skips the interpreter's slow teardown)
        try:
            out, err = proc.communicate(timeout=120)  # generous: the test checks that it exits cleanly, not how fast
        except subprocess.TimeoutExpired:  # say where it waits
            proc.send_signal(signal.SIGABRT)
            pytest.fail(f"serve.py did not exit within 120 s of Ctrl-C; its threads:\n{proc.communicate()[1][-6000:]}")
        assert proc.returncode == 0, err[-3000:]
        assert f"serving scripted teacher on ws://127.0.0.1:{port}" in out and "Traceback" not in err
        assert out.rstrip().endswith("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_script_refuses_an_open_address_without_a_token():
    p = subprocess.run(
        [sys.executable, "scripts/serve.py", "task=pushcube", "teacher=scripted", "host=0.0.0.0", "port=0"],
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, "MUJOCO_GL": "egl"}.items() if k != "ROBODISTILL_TOKEN"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [
        "error: serving on 0.0.0.0 reaches beyond this machine: set a shared token (token=... or the "
        "ROBODISTILL_TOKEN environment variable; clients send it as teacher.token) or allow_open=true"
    ]
