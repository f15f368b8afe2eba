"""Deployment figures: exported students under onnxruntime vs torch, the control loop's timing, the policy server's
round trip, and success on the sim robot vs the run's own evaluation.

1. Students, one per exported kind: on PushCube a DAgger Gaussian MLP on the state (trained as `make train` does),
   a Gaussian CNN (BC, image + proprio) and a token policy (SFT); on PickCube a diffusion policy (100 demos, 3000
   updates, as the diffusion bench trains it) and a consistency head distilled from it. The CNN, the token policy
   and the consistency head are trained briefly: latency and parity do not depend on how well a network is trained.
2. Each is exported (parity on 1000 recorded observations) and timed at batch 1: torch eager (the student's own
   inference path, 1 thread) vs the runtime (`ArtifactPolicy`, onnxruntime with 1 thread), calls interleaved.
3. The control loop (`ControlLoop` on a robot replaying recorded observations, the MLP artifact) at 50 and
   100 Hz while another process keeps the second core busy: lateness of each tick's wake-up against its
   scheduled time (p50, p99) and deadline misses per 10 000 ticks.
4. The artifact served by `scripts/serve.py` on loopback: round trip per request with 1 and with 8 clients at once.
5. The MLP and the diffusion policy (DDIM-10 in the runtime, chunks of 8 with latency compensation) deployed on
   the sim robot (`scripts/deploy.py robot=sim`: real time at 20 Hz) on the same seeded episodes as their runs'
   evaluations (the diffusion run evaluated with DDIM-10 too).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robodistill.benchmarks.runs import served, train_once
from robodistill.deploy.deployment import close_all, deploy_sim, monitoring, runtime_policy, safety_filter
from robodistill.export.exporter import export_run, kind_of, torch_actions
from robodistill.rundir import RunDir
from robodistill.runtime.artifact import ArtifactPolicy, load_artifact
from robodistill.runtime.client import PolicyClient
from robodistill.runtime.control import ControlLoop, claim_realtime
from robodistill.runtime.robots import CallbackRobot
from robodistill.teachers import load_policy

TASK = "task=pushcube"


SIZES = {  # name: (--quick, full)
    "dagger": (["algo.rounds=2", "algo.episodes_per_round=4", "algo.updates_per_round=50"], []),
    "eval": (4, 50),
    "demos": (6, 10),
    "updates": (10, 100),
    "dp_demos": (6, 100),
    "dp_updates": (20, 3000),
    "calls": (30, 1000),
    "ticks": ({"50": 100, "100": 200}, {"50": 3000, "100": 10000}),
    "requests": (40, 500),
    "deploy": (4, 50),
    "dp_episodes": (4, 100),
    "samples": (200, 1000),
    "net": (["student.down_dims=[16,32]"], []),
}


def sizes(quick: bool) -> dict[str, Any]:
    return {k: quick_value if quick else full for k, (quick_value, full) in SIZES.items()}


def train_students(s: dict[str, Any], out: Path) -> dict[str, Path]:
    """One run per exported kind; returns {kind: run dir}. The MLP (PushCube) and the diffusion policy (PickCube,
    evaluated with DDIM-10 as the runtime samples it) are trained fully and deployed; the rest only for timing."""
    common = ["eval.videos=0", "eval.num_envs=10"]
    short = [TASK, *common, "eval.episodes=2", f"algo.num_demos={s['demos']}", f"algo.updates={s['updates']}"]
    full = [*common, f"eval.episodes={s['eval']}"]
    pickcube = ["task=pickcube", *common]
    dp = ["algo=diffusion", "student=diffusion", *s["net"], f"algo.num_demos={s['dp_demos']}"]
    dp += [f"algo.updates={s['dp_updates']}", "sampler=ddim"]  # evaluated with DDIM-10, as the runtime samples it
    consistency = [
        "algo=consistency",
        "teacher=diffusion",
        f"teacher.path={out / 'dp'}",
        f"algo.updates={s['updates']}",
    ]
    runs = {
        "gaussian_mlp": ([TASK, *full, "algo=dagger", *s["dagger"]], out / "mlp"),
        "gaussian_cnn": ([*short, "algo=bc", "student=cnn"], out / "cnn"),
        "vla": ([*short, "algo=sft", "student=vla"], out / "vla"),
        "diffusion": ([*pickcube, f"eval.episodes={s['dp_episodes']}", *dp], out / "dp"),
        "consistency": ([*pickcube, "eval.episodes=2", *consistency], out / "cd"),
    }
    for overrides, run_dir in runs.values():  # in order: the consistency head distils the diffusion policy
        if not (run_dir / "eval.json").exists():
            train_once(overrides, run_dir)
    return {k: v[1] for k, v in runs.items()}


def latency(run: Path, artifact: Path, calls: int) -> dict[str, float]:
    """Median batch-1 inference time (ms) of torch eager and of the runtime, calls interleaved on one input."""
    torch.set_num_threads(1)
    policy = load_policy(str(run))
    kind = kind_of(policy)
    runtime = ArtifactPolicy(load_artifact(artifact, threads=1))
    data = np.load(artifact / "selftest.npz")
    obs = {k[4:]: data[k][:1] for k in data.files if k.startswith("obs/")}
    noise = data["noise"][:1] if "noise" in data.files else None
    contract = runtime.contract
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    for i in range(calls + 5):  # the first 5 of each warm up
        t0 = time.perf_counter()
        torch_actions(policy, kind, obs, noise, contract)
        t1 = time.perf_counter()
        runtime.infer(obs, noise)
        t2 = time.perf_counter()
        if i >= 5:
            times["torch"].append(1e3 * (t1 - t0))
            times["onnx"].append(1e3 * (t2 - t1))
    torch_ms, onnx_ms = statistics.median(times["torch"]), statistics.median(times["onnx"])
    return {"torch_ms": torch_ms, "onnx_ms": onnx_ms, "ratio": onnx_ms / torch_ms}


def busy_core() -> subprocess.Popen:
    """Another process spinning on the second core."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def jitter(
    artifact: Path,
    ticks: dict[str, int],
    log_dir: Path,
    inference: str = "thread",
    realtime: bool = False,
    monitor: bool = False,
) -> dict[str, Any]:
    """The control loop on a robot replaying recorded observations, at each rate, with the other core busy; the
    policy's inference on a worker thread or in its own process; with `realtime`, the loop's thread asks for
    real-time priority (`claim_realtime`; the loop runs on a thread of its own so that the bench's stays as it is);
    with `monitor`, the artifact's failure monitor scores every tick (alarms only logged)."""
    art = load_artifact(artifact)
    data = np.load(artifact / "selftest.npz")
    frames = [{k[4:]: data[k][i] for k in data.files if k.startswith("obs/")} for i in range(len(data["actions"]))]
    out: dict[str, Any] = {}
    log_dir.mkdir(parents=True, exist_ok=True)
    policy = runtime_policy(art, inference)
    watch = monitoring(art, policy, {"enabled": True, "on_alarm": "log"}) if monitor else None
    spinner = busy_core()
    failed: list[BaseException] = []

    def measure() -> None:
        try:
            loops()
        except BaseException as exc:  # raised again on the bench's thread
            failed.append(exc)

    def loops() -> None:
        if realtime:
            out["realtime"] = claim_realtime()
        for rate, n in ticks.items():
            count = iter(range(10**9))
            robot = CallbackRobot(lambda c=count: dict(frames[next(c) % len(frames)]), lambda a: None, art.action_dim)
            log = log_dir / f"ticks_{rate}hz_{inference}{'_rt' if realtime else ''}{'_mon' if monitor else ''}.jsonl"
            loop = ControlLoop(policy, robot, float(rate), safety_filter(art, None), log_path=log, monitor=watch)
            stats = loop.run(ticks=n)
            sent = [1e3 * (t["t_sent"] - t["t_scheduled"]) for t in stats.log]  # observation read to action sent
            out[rate] = {
                **stats.summary(),
                "sent_ms_p50": float(np.median(sent)),
                "sent_ms_p99": float(np.percentile(sent, 99)),
            }

    try:
        thread = threading.Thread(target=measure, name="control-loop")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
    finally:
        spinner.kill()
        spinner.wait()
        close_all(policy, watch)
    return out


def server_rtt(artifact: Path, requests: int) -> dict[str, Any]:
    """Round trip (ms) of one observation through scripts/serve.py on loopback: 1 client, then 8 at once."""
    data = np.load(artifact / "selftest.npz")
    obs = {k[4:]: data[k][0] for k in data.files if k.startswith("obs/")}
    with served(f"artifact={artifact}") as url:

        def client(n: int, out: list[float]) -> None:
            with PolicyClient(url, retries=0) as c:
                c.infer(obs)  # connect and warm up
                for _ in range(n):
                    t0 = time.perf_counter()
                    c.infer(obs)
                    out.append(1e3 * (time.perf_counter() - t0))

        result = {}
        for clients in (1, 8):
            rtts: list[list[float]] = [[] for _ in range(clients)]
            threads = [
                threading.Thread(target=client, args=(requests // clients if clients > 1 else requests, r))
                for r in rtts
            ]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            flat = [x for r in rtts for x in r]
            result[str(clients)] = {
                "p50_ms": float(np.median(flat)),
                "p99_ms": float(np.percentile(flat, 99)),
                "requests": len(flat),
                "requests_per_s": len(flat) / wall,
            }
        return result


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    s = sizes(quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = train_students(s, out_dir)
    parity, lat = {}, {}
    for kind, run_dir in runs.items():
        parity[kind] = export_run(run_dir, samples=s["samples"], progress=False)["parity"]
        calls = s["calls"] if kind != "diffusion" else s["calls"] // 4  # its 10-step sampler loop is slow
        lat[kind] = latency(run_dir, run_dir / "export_onnx", calls)
    mlp = runs["gaussian_mlp"] / "export_onnx"
    loop = jitter(mlp, s["ticks"], out_dir, realtime=True)  # as scripts/deploy.py runs it (realtime: true)
    rtt = server_rtt(mlp, s["requests"])
    deployed, eval_success = {}, {}
    episodes = {"gaussian_mlp": s["deploy"], "diffusion": s["dp_episodes"]}  # the sampled policy: more episodes
    for kind, n in episodes.items():  # the fully trained students, on their evaluation's seeds
        eval_success[kind] = RunDir(runs[kind]).read_json("eval.json")["success_rate"]
        deployed[kind] = deploy_sim(
            load_artifact(runs[kind] / "export_onnx"),
            n,
            seed=100_000,
            log_dir=out_dir / f"deploy_{kind}",
            progress=False,
        )
    misses = sum(v["misses"] for v in loop.values())
    loop_ticks = sum(v["ticks"] for v in loop.values())

    payload: dict[str, Any] = {
        "onnx_over_torch_latency": {k: v["ratio"] for k, v in lat.items()},
        "latency_ms": lat,
        "parity_max_abs_diff": {k: v["max_abs_diff"] for k, v in parity.items()},
        "parity_samples": {k: v["samples"] for k, v in parity.items()},
        "jitter_p50_ms": {r: v["late_ms_p50"] for r, v in loop.items()},
        "jitter_p99_ms": {r: v["late_ms_p99"] for r, v in loop.items()},
        "deadline_misses_per_10k": 1e4 * misses / max(loop_ticks, 1),
        "loop": loop,
        "server_rtt_ms": {k: v["p50_ms"] for k, v in rtt.items()},
        "server": rtt,
        "deploy_success": deployed["gaussian_mlp"]["success_rate"],
        "eval_success": eval_success["gaussian_mlp"],
        "deploy_success_by_student": {k: v["success_rate"] for k, v in deployed.items()},
        "eval_success_by_student": eval_success,
        "deploy": {kind: {k: v for k, v in d.items() if k != "per_episode"} for kind, d in deployed.items()},
        "episodes": episodes,
    }
    lines = [f"{'student kind':<16}{'torch ms':>10}{'onnx ms':>10}{'onnx/torch':>12}{'parity max |diff|':>20}"]
    for kind, v in lat.items():
        lines.append(
            f"{kind:<16}{v['torch_ms']:>10.3f}{v['onnx_ms']:>10.3f}{v['ratio']:>12.2f}"
            f"{parity[kind]['max_abs_diff']:>20.2e}"
        )
    for rate, v in loop.items():
        lines.append(
            f"control loop {rate:>3} Hz, other core busy: late p50 {v['late_ms_p50']:.3f} ms, p99 "
            f"{v['late_ms_p99']:.3f} ms, max {v['late_ms_max']:.3f} ms; action sent p50 {v['sent_ms_p50']:.3f} "
            f"ms, p99 {v['sent_ms_p99']:.3f} ms after the scheduled time; deadline misses {v['misses']} in "
            f"{v['ticks']} ticks"
        )
    lines.append(f"deadline misses per 10k ticks: {payload['deadline_misses_per_10k']:.1f}")
    for k, v in rtt.items():
        lines.append(
            f"server round trip, {k} client{'s' if k != '1' else ''}: p50 {v['p50_ms']:.3f} ms, p99 "
            f"{v['p99_ms']:.3f} ms, {v['requests_per_s']:.0f} requests/s"
        )
    for kind, d in deployed.items():
        lines.append(
            f"sim robot, {kind} on {d['task']} (real time, {d['rate_hz']:.0f} Hz): deployed success "
            f"{d['success_rate']:.2f} vs the run's evaluation {eval_success[kind]:.2f} ({d['episodes']} "
            f"episodes, the same seeds); {d['misses']} misses in {d['ticks']} ticks, inference p99 "
            f"{d['latency_ms_p99']:.1f} ms, {d['dropped']} chunk actions dropped"
        )
    lines.append(
        "(latency: batch 1, median over interleaved calls, 1 thread each; jitter: tick wake-up minus its "
        "scheduled time)"
    )
    return payload, lines
