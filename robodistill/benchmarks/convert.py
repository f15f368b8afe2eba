"""LeRobot conversion figures: frames per second HDF5 -> LeRobot (parquet + H.264) and back, for a state dataset and
a camera dataset (PushCube teacher demos; two 96x96 cameras), against reading the same HDF5 (the baseline); the
training read of each format (load_labels: HDF5 against LeRobot directory); sizes on disk; the cameras' round-trip
error; and whether lerobot itself loads our export with the values we wrote.

lerobot is not a dependency: the check runs `LeRobotDataset(repo_id, root=<export>)` in the interpreter(s) named by
LEROBOT_PYTHON (paths separated by ':'), e.g. a venv made with
    python3.12 -m venv /tmp/lerobot && /tmp/lerobot/bin/pip install 'lerobot[dataset]'
and without one records why it did not run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

import envs
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter, dataset_summary, iter_demos
from robodistill.data.labels import load_labels
from robodistill.data.lerobot import export_lerobot, feature_for, import_lerobot
from robodistill.tasks import env_fns, env_meta
from robodistill.teachers import CallableTeacher

FPS = 20
LEROBOT_CHECK = """
import json, sys
from importlib.metadata import version
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, out, indices = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dataset = LeRobotDataset("robodistill/check", root=root, video_backend="pyav")
arrays, tasks = {}, []
for i in indices:
    item = dataset[i]
    tasks.append(item["task"])
    arrays.update({f"{i}/{k}": v.numpy() for k, v in item.items() if hasattr(v, "numpy")})
np.savez(out, **arrays)
print(json.dumps({"version": version("lerobot"), "frames": len(dataset), "episodes": dataset.num_episodes,
                  "fps": dataset.fps, "tasks": tasks, "stats": sorted(dataset.meta.stats)}))
"""


def collect(path: Path, obs_mode: str, episodes: int, image_size: int) -> int:
    """PushCube teacher demos (the scripted expert drives) into `path`; returns their frames."""
    task = {"env_id": "robodistill/PushCube-v0", "kwargs": {"image_size": image_size}}
    env = gym.make(task["env_id"], obs_mode=obs_mode, image_size=image_size)
    teacher = CallableTeacher(envs.make_expert(env), ["state"])
    with EpisodeWriter(path, env_meta(env, task, obs_mode)) as writer:
        collector = Collector(make_vector_env(env_fns(task, 4, obs_mode)), teacher, None, writer)
        collector.collect(episodes, beta=1.0, seed=0, progress=False)
    collector.close()
    return dataset_summary(path)["samples"]


def timed(fn: Any, repeats: int) -> float:
    """Median wall seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def image_error(src: Path, back: Path) -> float:
    """Mean absolute error (0-255 levels) of every camera frame after HDF5 -> LeRobot -> HDF5."""
    with h5py.File(src) as a, h5py.File(back) as b:
        errors = [
            np.abs(a["data"][d]["obs"][k][()].astype(np.int16) - b["data"][d]["obs"][k][()]).mean()
            for d in a["data"]
            for k in a["data"][d]["obs"]
            if a["data"][d]["obs"][k].dtype == np.uint8
        ]
    return float(np.mean(errors)) if errors else 0.0


def lerobot_pythons() -> list[str]:
    return [p for p in os.environ.get("LEROBOT_PYTHON", "").split(os.pathsep) if p]


def lerobot_check(python: str, root: Path, src: Path, work: Path) -> dict[str, Any]:
    """Load our export `root` with lerobot's own LeRobotDataset in `python` and compare a first, middle and last
    frame with the HDF5 `src` it came from: low-dim features exactly, camera frames within H.264 loss, task strings."""
    demos = list(iter_demos(src, ["actions", "rewards"]))
    starts = np.cumsum([0] + [len(d["actions"]) for d in demos])
    indices = [0, int(starts[-1]) // 2, int(starts[-1]) - 1]
    out = work / f"lerobot_{root.name}.npz"
    p = subprocess.run(
        [python, "-c", LEROBOT_CHECK, str(root), str(out), json.dumps(indices)], capture_output=True, text=True
    )
    if p.returncode != 0:
        return {"python": python, "verified": False, "error": p.stderr.strip().splitlines()[-1:]}
    report = json.loads(p.stdout.strip().splitlines()[-1])
    loaded = np.load(out)
    exact, image_mae, tasks = True, [], []
    with h5py.File(src) as f:
        meta = json.loads(f["data"].attrs["env_args"])["shape_meta"]["obs"]
        names = sorted(f["data"], key=lambda n: int(n.split("_")[-1]))
        for i, task in zip(indices, report["tasks"]):
            e = int(np.searchsorted(starts, i, side="right") - 1)
            g, step = f["data"][names[e]], i - int(starts[e])
            tasks.append(task == g.attrs["instruction"])
            exact &= np.array_equal(loaded[f"{i}/action"], g["actions"][step])
            exact &= np.isclose(loaded[f"{i}/timestamp"], step / FPS, atol=1e-6)
            for k, spec in meta.items():
                feature, ours = f"{i}/{feature_for(k, spec['type'])}", g["obs"][k][step]
                if spec["type"] == "rgb":  # lerobot: float (C, H, W) in [0, 1]
                    image_mae.append(float(np.abs(loaded[feature].transpose(1, 2, 0) * 255 - ours).mean()))
                elif spec["type"] == "low_dim":
                    exact &= np.array_equal(loaded[feature], ours)
    frames_match = report["frames"] == int(starts[-1]) and report["episodes"] == len(demos)
    verified = bool(exact and all(tasks) and frames_match and all(e < 6 for e in image_mae))
    return {
        "python": python,
        "lerobot": report["version"],
        "verified": verified,
        "frames_and_episodes_match": frames_match,
        "low_dim_exact": bool(exact),
        "tasks_match": all(tasks),
        "image_mae": float(np.mean(image_mae)) if image_mae else None,
        "stats_features": report["stats"],
    }


def run(quick: bool, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes, image_size, repeats = (6, 32, 1) if quick else (50, 96, 3)
    payload: dict[str, Any] = {"episodes": episodes, "image_size": image_size, "fps": FPS, "datasets": {}}
    lines = [
        f"{'dataset':8} {'frames':>7} {'->LeRobot f/s':>14} {'->HDF5 f/s':>11} {'HDF5 read f/s':>14} "
        f"{'train read H5/LR f/s':>21} {'MB H5/LR':>12} {'img MAE':>8}"
    ]
    pythons = lerobot_pythons()
    for name, obs_mode in (("state", "state"), ("camera", "state+rgb")):
        src, root, back = out_dir / f"{name}.hdf5", out_dir / f"{name}_lerobot", out_dir / f"{name}_back.hdf5"
        frames = collect(src, obs_mode, episodes, image_size)
        keys = ["state"] if name == "state" else ["front_rgb", "wrist_rgb", "proprio"]
        with h5py.File(src) as f:
            fields = [f"obs/{k}" for k in f["data/demo_0/obs"]] + ["actions", "rewards", "dones", "teacher/actions"]
            meta = json.loads(f["data"].attrs["env_args"])["shape_meta"]
        read_s = timed(lambda src=src, fields=fields: sum(1 for _ in iter_demos(src, fields)), repeats)
        export_s = timed(
            lambda src=src, root=root: export_lerobot(src, root, FPS, overwrite=True, progress=False), repeats
        )
        import_s = timed(
            lambda root=root, back=back: import_lerobot(root, back, overwrite=True, progress=False), repeats
        )
        train_h5 = timed(lambda src=src, keys=keys, meta=meta: load_labels(src, keys, meta), repeats)
        train_lr = timed(lambda root=root, keys=keys, meta=meta: load_labels(root, keys, meta), repeats)
        row = {
            "frames": frames,
            "hdf5_read_fps": frames / read_s,
            "export_fps": frames / export_s,
            "import_fps": frames / import_s,
            "export_over_read": read_s / export_s,
            "import_over_read": read_s / import_s,
            "train_read_hdf5_fps": frames / train_h5,
            "train_read_lerobot_fps": frames / train_lr,
            "train_read_lerobot_over_hdf5": train_h5 / train_lr,
            "hdf5_mb": disk_mb(src),
            "lerobot_mb": disk_mb(root),
            "image_mae": image_error(src, back),
            "raw_seconds": {
                "read": read_s,
                "export": export_s,
                "import": import_s,
                "train_h5": train_h5,
                "train_lr": train_lr,
            },
        }
        row["lerobot_checks"] = [lerobot_check(p, root, src, out_dir) for p in pythons]
        payload["datasets"][name] = row
        lines.append(
            f"{name:8} {frames:7d} {row['export_fps']:14.0f} {row['import_fps']:11.0f} {row['hdf5_read_fps']:14.0f} "
            f"{row['train_read_hdf5_fps']:10.0f}/{row['train_read_lerobot_fps']:<10.0f} "
            f"{row['hdf5_mb']:5.1f}/{row['lerobot_mb']:<6.1f} {row['image_mae']:8.2f}"
        )
    checks = [c for row in payload["datasets"].values() for c in row["lerobot_checks"]]
    if not pythons:
        payload["lerobot_verified"] = False
        payload["lerobot_not_verified_because"] = (
            "LEROBOT_PYTHON is not set: lerobot is not a dependency; point it at a Python with lerobot[dataset] "
            "(lerobot 0.5+ needs Python 3.12: python3.12 -m venv v && v/bin/pip install 'lerobot[dataset]')"
        )
        lines.append(f"lerobot check: not run ({payload['lerobot_not_verified_because']})")
    else:
        payload["lerobot_verified"] = all(c["verified"] for c in checks)
        payload["lerobot_versions"] = sorted({c.get("lerobot", "?") for c in checks})
        for c in checks:
            lines.append(
                f"lerobot {c.get('lerobot', '?')} ({c['python']}): "
                + ("loads our export, values match" if c["verified"] else f"NOT verified: {c}")
            )
    return payload, lines
