"""LeRobot datasets in and out: our robomimic-layout HDF5 <-> the LeRobotDataset v3.0 directory that lerobot (0.4 and
later) reads and writes, with pyarrow and imageio-ffmpeg only (no lerobot, torch, pandas or datasets).

    meta/info.json                     codebase_version, fps, robot_type, totals, path templates, features
    meta/stats.json                    per feature min, max, mean, std, count, q01..q99 (images: per channel, in [0, 1])
    meta/tasks.parquet                 the task strings (pandas index `task`) and their task_index
    meta/episodes/chunk-000/file-000.parquet   a row per episode: length, tasks, where its frames lie, its stats
    data/chunk-CCC/file-FFF.parquet    a row per frame
    videos/<feature>/chunk-CCC/file-FFF.mp4    a camera's frames, episode after episode (from_/to_timestamp)

Our keys and LeRobot's features: obs/state <-> observation.state, any other low-dim obs/<key> <-> observation.<key>,
obs/<camera>_rgb <-> observation.images.<camera> (H.264 video), actions <-> action, teacher/actions <->
teacher.action, rewards <-> next.reward, dones <-> next.done, a demo's `success` <-> next.success (true on its last
frame; back: any frame), its instruction <-> its task. Text observations
(the encoded instruction) travel as the task. Not carried: MuJoCo states, student/* and teacher distributions;
next_obs is rebuilt on the way back (obs one step on, the last step repeated). `meta/robodistill.json` keeps the
HDF5's env_args (lerobot ignores the file). codebase_version v2.x datasets are refused with lerobot's converter named.

Training reads a LeRobot directory directly (`LeRobotReader.demos`, called by data/labels.py): each observation
key the student reads comes from its own feature (`observation.images.<camera>`, `observation.<key>`), else the
low-dim keys left are read from `observation.state` split in shape_meta order, text keys from the task string.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from robodistill.data.dataset import DatasetError, EpisodeWriter, live_demos, open_dataset
from robodistill.errors import UserError
from robodistill.progress import progress_bar

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB, VIDEO_FILE_MB = 100, 200  # new data and video files once the current ones hold this much (lerobot's)
INFO, STATS, TASKS = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
OURS = "meta/robodistill.json"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
FRAME_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # every dataset has them
STATE, OBSERVATION, IMAGES = "observation.state", "observation.", "observation.images."
ACTION, TEACHER_ACTION = "action", "teacher.action"
REWARD, DONE, SUCCESS = "next.reward", "next.done", "next.success"
CAMERA_SUFFIX = "_rgb"  # envs.IMAGE_SUFFIX; not imported: converting a dataset needs no MuJoCo
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
CRF, GOP = 18, 2  # H.264 quality (18: visually lossless) and keyframe interval (lerobot's g=2: cheap random access)
MB = 2**20


def feature_for(key: str, kind: str) -> str:
    """The LeRobot feature of our observation `key` of shape_meta type `kind` (rgb, low_dim)."""
    if kind == "rgb":
        return IMAGES + key.removesuffix(CAMERA_SUFFIX)
    return STATE if key == "state" else OBSERVATION + key


def key_for(feature: str) -> str:
    """Our observation key of a LeRobot observation feature (`feature_for` reversed)."""
    if feature.startswith(IMAGES):
        return feature.removeprefix(IMAGES) + CAMERA_SUFFIX
    return "state" if feature == STATE else feature.removeprefix(OBSERVATION)


def is_lerobot_dataset(path: str | Path) -> bool:
    """Whether `path` is to be read as a LeRobot dataset (a directory) rather than an HDF5 file."""
    return Path(path).is_dir()


def encode_text(text: str, size: int) -> np.ndarray:
    """A text observation: UTF-8 bytes zero padded to `size` (as envs.encode_instruction writes the instruction)."""
    return np.frombuffer(text.encode()[:size].ljust(size, b"\0"), np.uint8).copy()


@contextmanager
def new_output(dst: str | Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside `dst` to write into, moved to `dst` when the block succeeds and removed when it fails:
    a failed conversion never leaves half a dataset. UserError if `dst` exists and `overwrite` is false."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UserError(f"{dst} exists; pass overwrite=true to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (dst.with_name(f".{dst.name}.{tag}-{os.getpid()}") for tag in ("partial", "replaced"))
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if dst.exists():  # moved aside first: `dst` is never missing while the new one is incomplete
        os.replace(dst, old)
    os.replace(tmp, dst)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---- writing ----------------------------------------------------------------------------------------------------


def _sample_frames(n: int) -> np.ndarray:
    """The frames an episode's image stats are taken on, as lerobot samples them (100 for episodes up to ~460)."""
    count = max(min(n, 100), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, count)).astype(int)


def episode_stats(x: np.ndarray, video: bool) -> dict[str, np.ndarray]:
    """lerobot's stats of one feature over an episode's frames `x` (T, ...): per dimension, or for video frames
    (T, H, W, C) per channel on sampled frames, scaled to [0, 1] and shaped (C, 1, 1)."""
    if video:
        frames = x[_sample_frames(len(x))]
        return {**_pixel_stats(frames), "count": np.array([len(frames)])}
    values = x.reshape(len(x), -1)  # (T, D)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    quantiles = np.quantile(values.astype(np.float64), list(QUANTILES.values()), axis=0)  # (Q, D)
    return {**stats, **dict(zip(QUANTILES, quantiles)), "count": np.array([len(x)])}


def _pixel_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per channel stats of uint8 frames (S, H, W, C) in [0, 1], shaped (C, 1, 1), from each channel's histogram
    (exact, and a hundred times faster than sorting a million pixels for the quantiles)."""
    channels = frames.shape[-1]
    hist = np.stack([np.bincount(frames[..., c].ravel(), minlength=256) for c in range(channels)])  # (C, 256)
    levels = np.arange(256) / 255.0
    total = hist.sum(1)
    mean = hist @ levels / total
    cdf = np.cumsum(hist, 1) / total[:, None]
    stats = {
        "min": levels[(hist > 0).argmax(1)],
        "max": levels[255 - (hist[:, ::-1] > 0).argmax(1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(hist @ levels**2 / total - mean**2, 0.0)),
        **{k: levels[(cdf >= q).argmax(1)] for k, q in QUANTILES.items()},
    }
    return {k: v.reshape(channels, 1, 1) for k, v in stats.items()}


def aggregate_stats(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's stats over all episodes: count-weighted means and quantiles, pooled variance (as lerobot)."""
    counts = np.array([int(s["count"][0]) for s in episodes], np.float64)
    total = counts.sum()
    w = counts.reshape(-1, *[1] * np.ndim(episodes[0]["mean"]))
    means = np.stack([s["mean"] for s in episodes])
    mean = (means * w).sum(0) / total
    variance = ((np.stack([s["std"] for s in episodes]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
    out = {
        "min": np.min([s["min"] for s in episodes], axis=0),
        "max": np.max([s["max"] for s in episodes], axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(total)]),
    }
    return {**out, **{k: (np.stack([s[k] for s in episodes]) * w).sum(0) / total for k in QUANTILES}}


def _vector_column(x: np.ndarray) -> pa.Array:
    """A parquet column of frames (T,) as scalars, (T, D) as fixed-size lists (how lerobot stores them)."""
    if x.ndim == 1:
        return pa.array(x)
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x).reshape(-1)), x.shape[1])


class LeRobotWriter:
    """Writes episodes into a new LeRobot v3.0 directory: frames to parquet, camera frames to H.264 video (one file
    per camera with episodes one after another), stats and metadata at `close`.

    `features`: name -> {"dtype", "shape", "names"}; dtype "video" for cameras (shape (H, W, 3)), all in the order
    the frames' columns take. The next episode starts new data and video files once the current data file holds
    `data_file_mb` or a video `video_file_mb`.
    """

    def __init__(
        self,
        root: Path,
        features: dict[str, dict[str, Any]],
        fps: int,
        robot_type: str | None,
        data_file_mb: float = DATA_FILE_MB,
        video_file_mb: float = VIDEO_FILE_MB,
    ):
        self.root, self.fps, self.robot_type = root, int(fps), robot_type
        self.data_file_mb, self.video_file_mb = data_file_mb, video_file_mb
        self.features = {**features, **_frame_features()}
        self.videos = [k for k, f in features.items() if f["dtype"] == "video"]
        for k in self.videos:
            h, w, _ = self.features[k]["shape"]
            if h % 2 or w % 2:
                raise DatasetError(f"{k} is {h}x{w}: H.264 video (yuv420p) needs an even height and width")
        self.tasks: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []  # meta/episodes
        self.stats: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in self.features}
        self.chunk = self.file = 0
        self.frames = 0  # frames written, all files
        self.file_frames = self.data_bytes = 0  # in the current data and video files
        self.parquet: pq.ParquetWriter | None = None
        self.encoders: dict[str, Any] = {}

    def _open_files(self, schema: pa.Schema) -> None:
        path = self._path(DATA_PATH)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = pq.ParquetWriter(path, schema, compression="snappy")
        for k in self.videos:
            h, w, _ = self.features[k]["shape"]
            path = self._path(VIDEO_PATH, video_key=k)
            path.parent.mkdir(parents=True, exist_ok=True)
            encoder = imageio_ffmpeg.write_frames(
                str(path),
                (w, h),
                fps=self.fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                quality=None,
                macro_block_size=1,  # keep the size: imageio would otherwise pad to multiples of 16
                output_params=["-crf", str(CRF), "-g", str(GOP)],
                ffmpeg_log_level="error",
            )
            encoder.send(None)
            self.encoders[k] = encoder

    def _path(self, template: str, **keys: str) -> Path:
        return self.root / template.format(chunk_index=self.chunk, file_index=self.file, **keys)

    def add(self, frames: dict[str, np.ndarray], task: str) -> None:
        """Append one episode: `frames` holds every feature given to the constructor, arrays (T, ...)."""
        n = len(frames[ACTION])
        task_index = self.tasks.setdefault(task, len(self.tasks))
        episode_index = len(self.rows)
        frames = {
            **frames,
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, episode_index, np.int64),
            "index": np.arange(self.frames, self.frames + n, dtype=np.int64),
            "task_index": np.full(n, task_index, np.int64),
        }
        table = pa.table({k: _vector_column(v) for k, v in frames.items() if k not in self.videos})
        if self.file_frames and (
            self.data_bytes > self.data_file_mb * MB or any(self._video_mb(k) > self.video_file_mb for k in self.videos)
        ):  # the current files are full: the next ones (CHUNKS_SIZE files a chunk folder)
            self._close_files()
            self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
            self.file_frames = self.data_bytes = 0
        if self.file_frames == 0:
            self._open_files(table.schema)
        self.parquet.write_table(table)
        row = {
            "episode_index": episode_index,
            "tasks": [task],
            "length": n,
            "data/chunk_index": self.chunk,
            "data/file_index": self.file,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + n,
        }
        for k in self.videos:
            self.encoders[k].send(np.ascontiguousarray(frames[k], np.uint8))
            start = self.file_frames / self.fps
            row |= {f"videos/{k}/chunk_index": self.chunk, f"videos/{k}/file_index": self.file}
            row |= {f"videos/{k}/from_timestamp": start, f"videos/{k}/to_timestamp": start + n / self.fps}
        for k in self.features:
            stats = episode_stats(frames[k], k in self.videos)
            self.stats[k].append(stats)
            row |= {f"stats/{k}/{s}": v.tolist() for s, v in stats.items()}
        self.rows.append(row | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        self.frames += n
        self.file_frames += n
        self.data_bytes += table.nbytes

    def _video_mb(self, key: str) -> float:
        path = self._path(VIDEO_PATH, video_key=key)
        return path.stat().st_size / MB if path.exists() else 0.0

    def _close_files(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        for encoder in self.encoders.values():
            encoder.close()
        self.parquet, self.encoders = None, {}

    def close(self) -> dict[str, Any]:
        """Finish the files and write meta/ (info.json last); returns info.json's content."""
        if not self.rows:
            raise DatasetError("no episodes to write: a LeRobot dataset needs at least one")
        self._close_files()
        (self.root / EPISODES).parent.mkdir(parents=True, exist_ok=True)
        _write_tasks(self.root / TASKS, list(self.tasks))
        pq.write_table(pa.Table.from_pylist(self.rows), self.root / EPISODES)
        stats = {k: {s: v.tolist() for s, v in aggregate_stats(eps).items()} for k, eps in self.stats.items()}
        (self.root / STATS).write_text(json.dumps(stats, indent=4))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.rows),
            "total_frames": self.frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": self.data_file_mb,
            "video_files_size_in_mb": self.video_file_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.videos else None,
            "features": self.features,
        }
        (self.root / INFO).write_text(json.dumps(info, indent=4))
        return info

    def abort(self) -> None:
        """Stop the encoders of an export that failed."""
        self._close_files()


def _frame_features() -> dict[str, dict[str, Any]]:
    dtypes = {"timestamp": "float32"}
    return {k: {"dtype": dtypes.get(k, "int64"), "shape": [1], "names": None} for k in FRAME_FEATURES}


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes lerobot's task table: column task_index, the task strings as index."""
    pandas = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object"},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), path)


def _feature(name: str, x: np.ndarray, fps: int) -> dict[str, Any]:
    """info.json's entry for a feature whose frames are `x` (T, ...): a video for a camera, else a vector."""
    if name.startswith(IMAGES):
        h, w, c = x.shape[1:]
        info = {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p"}
        info |= {"video.is_depth_map": False, "video.fps": fps, "video.channels": c, "has_audio": False}
        return {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"], "info": info}
    if x.ndim > 2:
        raise DatasetError(
            f"{name} has frames of shape {x.shape[1:]}: a LeRobot export takes vectors and camera images"
        )
    short = key_for(name) if name.startswith(OBSERVATION) else name
    names = [f"{short}_{i}" for i in range(x.shape[1])] if x.ndim == 2 else None
    return {"dtype": str(x.dtype), "shape": list(x.shape[1:]) or [1], "names": names}


def _demo_frames(g: h5py.Group, kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """One HDF5 demo as LeRobot feature arrays (T, ...): its observations (text ones left out), actions, teacher
    labels, rewards, dones and success."""
    frames = {feature_for(k, kind): g[f"obs/{k}"][()] for k, kind in kinds.items() if kind != "text"}
    frames[ACTION] = g["actions"][()]
    if "teacher/actions" in g:
        frames[TEACHER_ACTION] = g["teacher/actions"][()]
    if "rewards" in g:
        frames[REWARD] = g["rewards"][()]
    if "dones" in g:
        frames[DONE] = g["dones"][()].astype(bool)
    if "success" in g.attrs:  # success is sticky: by the last frame the episode has succeeded (or never did)
        frames[SUCCESS] = np.arange(len(frames[ACTION])) == len(frames[ACTION]) - 1
        frames[SUCCESS] &= bool(g.attrs["success"])
    return frames


def _observation_kinds(g: h5py.Group, env_args: dict[str, Any]) -> dict[str, str]:
    """Each observation key of a demo and its shape_meta type (from env_args, else rgb for uint8 frames)."""
    meta = (env_args.get("shape_meta") or {}).get("obs", {})
    kinds = {}
    for k, d in g["obs"].items():
        image = d.dtype == np.uint8 and d.ndim == 4
        kinds[k] = meta.get(k, {}).get("type") or ("rgb" if image else "low_dim")
    # observation.state first, as lerobot's datasets list it
    return dict(sorted(kinds.items(), key=lambda kv: (kv[0] != "state", kv[1] == "rgb", kv[0])))


def export_lerobot(
    src: str | Path,
    dst: str | Path,
    fps: int = 20,
    robot_type: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    file_mb: tuple[float, float] = (DATA_FILE_MB, VIDEO_FILE_MB),
) -> dict[str, Any]:
    """Convert a robomimic-layout HDF5 dataset (its live demos) into a new LeRobot v3.0 directory `dst`; returns its
    meta/info.json content. A demo's task is its `instruction` attribute, else the dataset's env name. `file_mb`:
    the sizes (data, video) at which the next episode starts new files."""
    if int(fps) <= 0:
        raise UserError(f"fps={fps}: give a positive frame rate (the dataset's control rate)")
    with open_dataset(src) as f:
        env_args = json.loads(f["data"].attrs.get("env_args", "{}"))
        demos = list(live_demos(f))
        if not demos:
            raise DatasetError(f"dataset {src} holds no demos")
        kinds = _observation_kinds(demos[0], env_args)
        first = _demo_frames(demos[0], kinds)
        features = {k: _feature(k, v, int(fps)) for k, v in first.items()}
        default_task = str(env_args.get("env_name") or Path(src).stem)
        with new_output(dst, overwrite) as tmp:
            writer = LeRobotWriter(tmp, features, int(fps), robot_type, *file_mb)
            try:
                for g in progress_bar(demos, enabled=progress, desc=f"{Path(src).name} -> LeRobot", unit="demo"):
                    frames = _demo_frames(g, kinds)
                    _check_same_features(src, g, frames, features)
                    writer.add(frames, str(g.attrs.get("instruction", default_task)))
                info = writer.close()
            except BaseException:
                writer.abort()
                raise
            (tmp / OURS).write_text(json.dumps({"env_args": env_args}, indent=2))
    return info


def _check_same_features(src: str | Path, g: h5py.Group, frames: dict[str, np.ndarray], features: dict) -> None:
    """Every demo has the first demo's features and shapes (LeRobot's schema is one per dataset), and every array
    has a frame per step."""
    got = {k: list(v.shape[1:]) or [1] for k, v in frames.items()}
    want = {k: list(f["shape"]) for k, f in features.items()}
    if got != want:
        raise DatasetError(f"{src}:{g.name} has {got}, the first demo {want}: a LeRobot dataset has one schema")
    lengths = {k: len(v) for k, v in frames.items()}
    if len(set(lengths.values())) > 1:
        raise DatasetError(f"{src}:{g.name} has arrays of different lengths: {lengths}")


# ---- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSource:
    """Where one of our observation keys comes from in a LeRobot dataset: a feature, or columns of one (a part of a
    concatenated observation.state); `feature` None: the episode's task string (text observations)."""

    feature: str | None
    start: int = 0  # its columns start..stop
    stop: int | None = None


class LeRobotReader:
    """A LeRobot v3.0 dataset directory, checked when opened (info, tasks, episodes, the files they name): one
    DatasetError naming the file and what is wrong with it. Frames are read episode by episode."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"LeRobot dataset {self.root} does not exist (a LeRobot dataset is a directory)")
        if not (self.root / INFO).exists():
            raise DatasetError(f"{self.root} is a directory but not a LeRobot dataset: it has no {INFO}")
        self.info = self._read_info()
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        ours = self.root / OURS
        self.env_args: dict[str, Any] | None = self._read_json(OURS).get("env_args") if ours.exists() else None

    # -- metadata
    def _read_json(self, relative: str) -> dict[str, Any]:
        path = self.root / relative
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path} is not readable JSON (truncated or corrupt?): {exc}") from exc
        if not isinstance(content, dict):
            raise DatasetError(f"{path} holds {type(content).__name__}, not a JSON object")
        return content

    def _read_info(self) -> dict[str, Any]:
        info = self._read_json(INFO)
        version = str(info.get("codebase_version", "(none)"))
        if not version.startswith("v3."):
            raise DatasetError(
                f"LeRobot dataset {self.root} is codebase_version {version}; robodistill reads v3.0: convert it with "
                f"lerobot's `python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=<id> --root={self.root} "
                "--push-to-hub=false` (lerobot 0.4: lerobot.datasets.v30.convert_dataset_v21_to_v30)"
            )
        problems = [f"no {k!r}" for k in ("fps", "features", "data_path", "total_frames") if k not in info]
        features = info.get("features", {})
        if not isinstance(features, dict):
            problems.append("'features' is not an object")
        else:
            complete = {k: isinstance(f, dict) and {"dtype", "shape"} <= set(f) for k, f in features.items()}
            problems += [f"feature {k!r} without dtype and shape" for k, ok in complete.items() if not ok]
            if any(ok and features[k]["dtype"] == "video" for k, ok in complete.items()) and not info.get("video_path"):
                problems.append("video features but no 'video_path'")
        if not isinstance(info.get("fps", 1), int) or info.get("fps", 1) <= 0:
            problems.append(f"fps {info['fps']!r} is not a positive whole number")
        if problems:
            raise DatasetError(f"{self.root / INFO} is not a LeRobot v3.0 info.json: {'; '.join(problems)}")
        return info

    def _read_table(self, relative: str | Path, columns: list[str] | None = None) -> pa.Table:
        path = self.root / relative
        if not path.exists():
            raise DatasetError(f"LeRobot dataset {self.root} lacks {relative}")
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"{path} is not a readable parquet file (truncated or corrupt?): {exc}") from exc

    def _read_tasks(self) -> list[str]:
        table = self._read_table(TASKS)
        names = [c for c in table.column_names if c != "task_index"]  # the pandas index: `task` or __index_level_0__
        if "task_index" not in table.column_names or len(names) != 1:
            raise DatasetError(f"{self.root / TASKS} has columns {table.column_names}: expected task_index and task")
        tasks = dict(zip(table["task_index"].to_pylist(), table[names[0]].to_pylist()))
        return [tasks.get(i, "") for i in range(max(tasks, default=-1) + 1)]

    def _read_episodes(self) -> list[dict[str, Any]]:
        files = sorted((self.root / "meta/episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetError(f"LeRobot dataset {self.root} lacks meta/episodes/chunk-*/file-*.parquet")
        rows = []
        for path in files:
            table = self._read_table(path.relative_to(self.root))
            rows += table.select([c for c in table.column_names if not c.startswith("stats/")]).to_pylist()
        need = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index"]
        need += [f"videos/{k}/{c}" for k in self.video_keys for c in ("chunk_index", "file_index", "from_timestamp")]
        lacking = sorted({c for row in rows for c in need if row.get(c) is None})
        if lacking:
            raise DatasetError(f"{self.root}/meta/episodes lacks {lacking} for some episodes")
        rows.sort(key=lambda r: r["episode_index"])
        for row in rows:
            for path in [self._data_path(row), *(self._video_path(row, k) for k in self.video_keys)]:
                if not (self.root / path).exists():
                    raise DatasetError(f"LeRobot dataset {self.root} lacks {path} (episode {row['episode_index']})")
        return rows

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    def _data_path(self, row: dict[str, Any]) -> str:
        return self.info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])

    def _video_path(self, row: dict[str, Any], key: str) -> str:
        chunk, file = row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]
        return self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)

    def shape(self, feature: str) -> tuple[int, ...]:
        """A feature's frame shape; images as (H, W, C) whatever order info.json lists them in."""
        f = self.features[feature]
        shape = tuple(int(s) for s in f["shape"])
        if f["dtype"] in ("video", "image") and (f.get("names") or [""])[0] in ("channel", "channels"):
            return (*shape[1:], shape[0])
        return shape

    # -- frames
    def frames(self, features: list[str], progress: bool = False, desc: str = "") -> Iterator[tuple[dict, dict]]:
        """Each episode's meta row (with its first frame's `task` string) and its frames of `features`: arrays
        (T, *shape), images (T, H, W, C) uint8."""
        columns = [k for k in features if self.features[k]["dtype"] != "video"]
        videos = {k: _VideoFrames(self.fps) for k in features if self.features[k]["dtype"] == "video"}
        table, table_path, starts = None, None, {}
        try:
            for row in progress_bar(self.episodes, enabled=progress, desc=desc, unit="episode"):
                if self._data_path(row) != table_path:  # episodes come in file order: each file is read once
                    table_path = self._data_path(row)
                    table = self._read_table(table_path, [*columns, "episode_index", "task_index"])
                    starts = _episode_starts(table["episode_index"].to_numpy())
                n, e = int(row["length"]), int(row["episode_index"])
                if e not in starts or starts[e][1] - starts[e][0] != n:
                    raise DatasetError(f"{self.root / table_path} does not hold episode {e}'s {n} frames")
                part = table.slice(starts[e][0], n)
                task = int(part["task_index"][0].as_py())
                if not 0 <= task < len(self.tasks):
                    raise DatasetError(f"{self.root / table_path}: episode {e}'s task_index {task} is not in {TASKS}")
                frames = {k: self._column(part[k], k) for k in columns}
                for k, video in videos.items():
                    start = round(float(row[f"videos/{k}/from_timestamp"]) * self.fps)
                    frames[k] = video.read(self.root / self._video_path(row, k), start, n, self.shape(k))
                yield row | {"task": self.tasks[task]}, frames
        finally:
            for video in videos.values():
                video.close()

    def _column(self, column: pa.ChunkedArray, feature: str) -> np.ndarray:
        shape, n = self.shape(feature), len(column)
        if self.features[feature]["dtype"] == "image":  # PNG bytes in a struct {bytes, path}
            return np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in column.to_pylist()])
        array = column.combine_chunks()
        while (
            pa.types.is_list(array.type)
            or pa.types.is_fixed_size_list(array.type)
            or pa.types.is_large_list(array.type)
        ):
            array = array.flatten()
        values = array.to_numpy(zero_copy_only=False)
        if values.size != n * int(np.prod(shape)):
            raise DatasetError(
                f"{self.root}: {feature} holds {values.size // max(n, 1)} values a frame, info.json says {shape}"
            )
        return values.reshape(n, *shape)

    # -- training
    def sources(self, obs_keys: list[str], meta: dict[str, Any]) -> tuple[dict[str, FeatureSource], str]:
        """Where each observation key of a student reading `obs_keys` (a task's shape_meta `meta`) comes from, and
        the label feature (teacher.action if the dataset has it, else action). One UserError names every feature
        that is missing or has another shape than the task needs."""
        sources, problems, low_dim = {}, [], []
        cameras = ", ".join(k.removeprefix(IMAGES) for k in self.features if k.startswith(IMAGES)) or "none"
        for k in obs_keys:
            spec = meta["obs"][k]
            kind, need = spec.get("type", "low_dim"), tuple(spec["shape"])
            feature = feature_for(k, kind)
            if kind == "rgb":
                if feature not in self.features:
                    problems.append(f"{feature} is missing (its cameras: {cameras}), the task's {k} needs {need}")
                elif self.shape(feature) != need:
                    problems.append(f"{feature} has shape {self.shape(feature)}, the task's {k} needs {need}")
                sources[k] = FeatureSource(feature)
            elif feature in self.features and feature != STATE:
                if self.shape(feature) != need:
                    problems.append(f"{feature} has shape {self.shape(feature)}, the task's {k} needs {need}")
                sources[k] = FeatureSource(feature)
            elif kind == "text":
                sources[k] = FeatureSource(None)
            else:
                low_dim.append(k)
        low_dim.sort(key=list(meta["obs"]).index)  # observation.state holds them in shape_meta order
        need = sum(int(np.prod(meta["obs"][k]["shape"])) for k in low_dim)
        whose = f"the task's {' + '.join(low_dim)} {'need' if len(low_dim) > 1 else 'needs'} ({need},)"
        if low_dim and STATE not in self.features:
            problems.append(f"{STATE} is missing, {whose}")
        elif low_dim and self.shape(STATE) != (need,):
            problems.append(f"{STATE} has shape {self.shape(STATE)}, {whose}")
        start = 0
        for k in low_dim:
            size = int(np.prod(meta["obs"][k]["shape"]))
            sources[k] = FeatureSource(STATE, start, start + size)
            start += size
        label = TEACHER_ACTION if TEACHER_ACTION in self.features else ACTION
        need = tuple(meta["action"]["shape"])
        if label not in self.features:
            problems.append(f"{ACTION} is missing, the task's actions need {need}")
        elif self.shape(label) != need:
            problems.append(f"{label} has shape {self.shape(label)}, the task's actions need {need}")
        if problems:
            have = ", ".join(f"{k} {self.shape(k)}" for k in self.features if k not in FRAME_FEATURES)
            raise UserError(
                f"LeRobot dataset {self.root} does not fit the task's shapes: {'; '.join(problems)}. "
                f"Its features: {have}"
            )
        return sources, label

    def demos(self, obs_keys: list[str], meta: dict[str, Any]) -> tuple[Iterator[dict[str, np.ndarray]], str]:
        """Each episode as `iter_demos` reads an HDF5 demo (`obs/<key>` for `obs_keys`, and the label), after
        `sources` checked the mapping; returns the demos and the label's name (teacher/actions or actions)."""
        sources, label = self.sources(obs_keys, meta)
        name = "teacher/actions" if label == TEACHER_ACTION else "actions"
        features = sorted({s.feature for s in sources.values() if s.feature} | {label})

        def episodes() -> Iterator[dict[str, np.ndarray]]:
            for row, frames in self.frames(features):
                n = int(row["length"])
                demo = {name: frames[label].astype(np.float32)}
                for k, s in sources.items():
                    if s.feature is None:
                        size = int(meta["obs"][k]["shape"][0])
                        demo[f"obs/{k}"] = np.repeat(encode_text(row["task"], size)[None], n, axis=0)
                        continue
                    x = frames[s.feature][:, s.start : s.stop].reshape(n, *meta["obs"][k]["shape"])
                    demo[f"obs/{k}"] = x if x.dtype == np.uint8 else x.astype(np.float32)
                yield demo

        return episodes(), name


def _episode_starts(episode_index: np.ndarray) -> dict[int, tuple[int, int]]:
    """Episode -> (first row, end row) in a data file whose rows hold each episode contiguously."""
    edges = [0, *(np.flatnonzero(np.diff(episode_index)) + 1).tolist(), len(episode_index)]
    return {int(episode_index[a]): (a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a}


class _VideoFrames:
    """Decodes one camera's video files front to back (episodes lie one after another in a file), so that reading
    every episode decodes every file once."""

    def __init__(self, fps: int):
        self.fps, self.path, self.reader, self.position = fps, None, None, 0

    def read(self, path: Path, start: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
        """Frames start..start+n of the video at `path` (frame i shows time i / fps): (n, H, W, C) uint8."""
        frames = np.empty((n, *shape), np.uint8)
        try:
            if path != self.path or start < self.position:
                self._open(path, shape)
            for _ in range(start - self.position):
                next(self.reader)
            for i in range(n):
                frames[i] = np.frombuffer(next(self.reader), np.uint8).reshape(shape)
        except StopIteration:
            raise DatasetError(f"{path} ends before frame {start + n} (episode frames {start}..{start + n})") from None
        except (OSError, RuntimeError) as exc:  # imageio-ffmpeg: ffmpeg could not open or decode it
            raise DatasetError(f"{path} cannot be decoded (truncated or corrupt?): {exc}") from exc
        self.position = start + n
        return frames

    def _open(self, path: Path, shape: tuple[int, ...]) -> None:
        self.close()
        # passthrough: every decoded frame once, as stored (no frames duplicated or dropped to a constant rate)
        self.reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough"])
        meta = next(self.reader)
        if tuple(meta["size"]) != (shape[1], shape[0]):
            raise DatasetError(f"{path} is {meta['size'][0]}x{meta['size'][1]}, info.json says {shape[1]}x{shape[0]}")
        self.path, self.position = path, 0

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def import_lerobot(src: str | Path, dst: str | Path, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Convert a LeRobot v3.0 directory into a new robomimic-layout HDF5 file `dst`; returns its summary."""
    reader = LeRobotReader(src)
    if Path(dst).resolve() == Path(src).resolve():
        raise UserError(f"{dst} is the dataset being converted: give another output path")
    saved = (reader.env_args or {}).get("shape_meta", {}).get("obs", {})
    names = {feature_for(k, v.get("type", "low_dim")): k for k, v in saved.items()}
    observations = {f: names.get(f, key_for(f)) for f in reader.features if f.startswith(OBSERVATION)}
    texts = {k: int(v["shape"][0]) for k, v in saved.items() if v.get("type") == "text"}
    extra = [f for f in (TEACHER_ACTION, REWARD, DONE, SUCCESS) if f in reader.features]
    if ACTION not in reader.features:
        raise DatasetError(f"LeRobot dataset {src} has no {ACTION} feature; its features: {list(reader.features)}")
    env_args = reader.env_args or {
        "env_name": None,
        "type": 4,  # robomimic's EnvType.GYM_TYPE
        "env_kwargs": {},
        "shape_meta": {
            "obs": {
                k: {"shape": list(reader.shape(f)), "type": "rgb" if f.startswith(IMAGES) else "low_dim"}
                for f, k in observations.items()
            },
            "action": {"shape": list(reader.shape(ACTION))},
        },
    }
    samples = 0
    with new_output(dst, overwrite) as tmp, EpisodeWriter(tmp, env_args) as writer:
        desc = f"{Path(src).name} -> HDF5"
        for row, frames in reader.frames([*observations, ACTION, *extra], progress=progress, desc=desc):
            n, task = int(row["length"]), row["task"]
            obs = {k: frames[f] for f, k in observations.items()}
            obs |= {k: np.repeat(encode_text(task, size)[None], n, axis=0) for k, size in texts.items()}
            episode = {
                "obs": obs,
                "next_obs": {k: np.concatenate([v[1:], v[-1:]]) for k, v in obs.items()},
                "actions": frames[ACTION],
                "rewards": frames[REWARD].reshape(n) if REWARD in frames else np.zeros(n, np.float32),
                "dones": (frames[DONE].reshape(n) if DONE in frames else np.arange(n) == n - 1).astype(np.int64),
                "attrs": {"instruction": task, "lerobot_episode_index": int(row["episode_index"])},
            }
            if TEACHER_ACTION in frames:
                episode["teacher"] = {"actions": frames[TEACHER_ACTION]}
            if SUCCESS in frames:
                episode["attrs"]["success"] = bool(frames[SUCCESS].any())
            writer.write(episode)
            samples += n
    return {"demos": len(reader.episodes), "samples": samples}
