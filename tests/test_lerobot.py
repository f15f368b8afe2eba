"""LeRobot datasets in and out (robodistill/data/lerobot.py, scripts/convert.py): round trips through real collector
datasets, the v3.0 layout lerobot's reader needs, a dataset lerobot itself wrote (tests/data/lerobot_v30, AV1
video), training from a LeRobot directory, and one clear error for every bad input."""

import json
import shutil

import gymnasium as gym
import h5py
import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, one_clear_error, run_script, train_run, user_error
from lerobot_fixture import EPISODES, expected_frame

import envs
from robodistill.data.collector import Collector, make_vector_env
from robodistill.data.dataset import EpisodeWriter, dataset_summary
from robodistill.data.lerobot import LeRobotReader, export_lerobot, import_lerobot
from robodistill.tasks import env_fns, env_meta
from robodistill.teachers import CallableTeacher

LEROBOT_MADE = ROOT / "tests/data/lerobot_v30"  # written by lerobot 0.6.1 (tests/lerobot_fixture.py), AV1 video
TASKS = {
    "state": ({"env_id": "robodistill/PushCube-v0"}, "state"),
    "camera": ({"env_id": "robodistill/Reach-v0", "kwargs": {"image_size": 32}}, "state+rgb"),
}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """name -> an HDF5 of 3 teacher episodes collected by our collector: PushCube states, Reach with two cameras."""
    out = {}
    for name, (task, obs_mode) in TASKS.items():
        env = gym.make(task["env_id"], obs_mode=obs_mode, **task.get("kwargs", {}))
        path = tmp_path_factory.mktemp(name) / f"{name}.hdf5"
        with EpisodeWriter(path, env_meta(env, task, obs_mode)) as writer:
            teacher = CallableTeacher(envs.make_expert(env), ["state"])
            collector = Collector(make_vector_env(env_fns(task, 2, obs_mode)), teacher, None, writer)
            collector.collect(3, beta=1.0, seed=0, progress=False)
        out[name] = path
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_round_trip_keeps_observations_actions_rewards_dones_and_tasks(collected, tmp_path, name):
    src = collected[name]
    export_lerobot(src, tmp_path / "lerobot", progress=False)
    import_lerobot(tmp_path / "lerobot", tmp_path / "back.hdf5", progress=False)
    assert dataset_summary(tmp_path / "back.hdf5") == dataset_summary(src)
    with h5py.File(src) as a, h5py.File(tmp_path / "back.hdf5") as b:
        assert json.loads(b["data"].attrs["env_args"]) == json.loads(a["data"].attrs["env_args"])
        assert list(b["data"]) == list(a["data"]) and list(b["mask/train"]) == list(a["mask/train"])
        for demo in a["data"]:
            x, y = a["data"][demo], b["data"][demo]
            assert y.attrs["instruction"] == x.attrs["instruction"]
            for k in ("actions", "rewards", "dones", "teacher/actions"):  # bit for bit, dtype included
                assert y[k].dtype == x[k].dtype and np.array_equal(y[k][()], x[k][()]), k
            assert sorted(y["obs"]) == sorted(x["obs"])
            for k in x["obs"]:
                before, after = x["obs"][k][()], y["obs"][k][()]
                if before.dtype == np.uint8:  # camera frames through H.264: close, not equal
                    assert after.shape == before.shape
                    assert np.abs(after.astype(int) - before).mean() < 6
                else:
                    assert after.dtype == before.dtype and np.array_equal(after, before), k
                np.testing.assert_array_equal(y["next_obs"][k][:-1], after[1:])  # rebuilt one step on


def test_episodes_spread_over_several_files_read_back(collected, tmp_path):
    """Full files (lerobot's 100 MB data, 200 MB video; here a few bytes) make the next episode start new ones."""
    root = tmp_path / "lerobot"
    info = export_lerobot(collected["camera"], root, progress=False, file_mb=(1e-6, 1e-6))
    assert info["data_files_size_in_mb"] == 1e-6
    assert len(list((root / "data/chunk-000").iterdir())) == 3
    assert len(list((root / "videos/observation.images.wrist/chunk-000").iterdir())) == 3
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["videos/observation.images.wrist/file_index"] for e in episodes] == [0, 1, 2]
    assert [e["videos/observation.images.wrist/from_timestamp"] for e in episodes] == [0.0, 0.0, 0.0]
    import_lerobot(root, tmp_path / "back.hdf5", progress=False)
    with h5py.File(collected["camera"]) as a, h5py.File(tmp_path / "back.hdf5") as b:
        for demo in a["data"]:  # each episode from its own files
            x, y = a[f"data/{demo}"], b[f"data/{demo}"]
            np.testing.assert_array_equal(y["obs/state"][()], x["obs/state"][()])
            np.testing.assert_array_equal(y["actions"][()], x["actions"][()])
            for k in ("front_rgb", "wrist_rgb"):
                assert np.abs(y[f"obs/{k}"][()].astype(int) - x[f"obs/{k}"][()]).mean() < 6


def test_export_has_the_layout_and_schema_lerobots_reader_needs(collected, tmp_path):
    root = tmp_path / "lerobot"
    info = export_lerobot(collected["camera"], root, fps=20, robot_type="panda", progress=False)
    assert json.loads((root / "meta/info.json").read_text()) == info
    frames = dataset_summary(collected["camera"])["samples"]
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "panda" and info["fps"] == 20
    assert (info["total_episodes"], info["total_frames"], info["chunks_size"]) == (3, frames, 1000)
    assert info["total_tasks"] == len(pq.read_table(root / "meta/tasks.parquet"))
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert list(features)[:4] == [
        "observation.state",
        "observation.proprio",
        *(f"observation.images.{c}" for c in ("front", "wrist")),
    ]
    assert features["observation.state"] == {
        "dtype": "float32",
        "shape": [28],
        "names": [f"state_{i}" for i in range(28)],
    }
    front = features["observation.images.front"]
    assert (
        front["dtype"] == "video"
        and front["shape"] == [32, 32, 3]
        and front["names"] == ["height", "width", "channels"]
    )
    assert front["info"]["video.codec"] == "h264" and front["info"]["video.pix_fmt"] == "yuv420p"
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[k]["shape"] == [1]

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")  # what datasets casts to lerobot's features
    types = {f.name: f.type for f in data.schema}
    for k, size in (("observation.state", 28), ("observation.proprio", 22), ("action", 4)):
        assert (
            pa.types.is_fixed_size_list(types[k]) and types[k].list_size == size and types[k].value_type == pa.float32()
        )
    assert (types["timestamp"], types["next.done"], types["index"]) == (pa.float32(), pa.bool_(), pa.int64())
    assert "observation.images.front" not in types  # videos live in mp4 files
    assert data["index"].to_pylist() == list(range(frames))
    np.testing.assert_allclose(data["timestamp"].to_numpy(), data["frame_index"].to_numpy() / 20, atol=1e-6)

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas restores the index
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [int(n) for n in np.bincount(data["episode_index"].to_numpy())]
    assert [e["dataset_from_index"] for e in episodes] == [0, *np.cumsum([e["length"] for e in episodes])[:-1]]
    start = 0.0
    for e in episodes:  # one video per camera, episodes one after another
        assert e["videos/observation.images.front/from_timestamp"] == pytest.approx(start)
        start = e["videos/observation.images.front/to_timestamp"]
        assert start - e["videos/observation.images.front/from_timestamp"] == pytest.approx(e["length"] / 20)
        assert e["tasks"] == [tasks["task"][e["stats/task_index/min"][0]].as_py()]
        assert np.array(e["stats/observation.images.front/mean"]).shape == (3, 1, 1)
        assert e["stats/observation.state/count"] == [e["length"]]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(features) and stats["index"]["count"] == [frames]
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    state = data["observation.state"].to_numpy(zero_copy_only=False)
    state = np.stack(state)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-4, atol=1e-6)

    video = imageio_ffmpeg.read_frames(str(root / "videos/observation.images.front/chunk-000/file-000.mp4"))
    meta = next(video)
    assert meta["codec"].startswith("h264") and tuple(meta["size"]) == (32, 32)
    assert sum(1 for _ in video) == frames


@pytest.mark.parametrize("camera", ["video", "image"])
def test_reads_a_dataset_lerobot_wrote(tmp_path, camera):
    root = LEROBOT_MADE if camera == "video" else LEROBOT_MADE.with_name("lerobot_v30_images")  # PNGs in the parquet
    import_lerobot(root, tmp_path / "lerobot.hdf5", progress=False)
    with h5py.File(tmp_path / "lerobot.hdf5") as f:
        assert len(f["data"]) == len(EPISODES)
        for e, (task, n) in enumerate(EPISODES.items()):
            demo = f[f"data/demo_{e}"]
            assert demo.attrs["instruction"] == task and demo.attrs["num_samples"] == n
            want = [expected_frame(e, i) for i in range(n)]
            np.testing.assert_array_equal(demo["obs/state"][()], [w["observation.state"] for w in want])
            np.testing.assert_array_equal(demo["actions"][()], [w["action"] for w in want])
            np.testing.assert_array_equal(demo["rewards"][()], [w["next.reward"][0] for w in want])
            np.testing.assert_array_equal(demo["dones"][()], [int(w["next.done"][0]) for w in want])
            images = np.stack([w["observation.images.front"] for w in want])
            if camera == "image":  # PNG: lossless
                np.testing.assert_array_equal(demo["obs/front_rgb"][()], images)
            else:  # AV1, as lerobot encodes videos
                assert np.abs(demo["obs/front_rgb"][()].astype(int) - images).mean() < 6


def test_training_keys_come_from_their_features_state_columns_or_the_task():
    meta = {  # a task whose low-dim keys split observation.state (3,) in shape_meta order
        "obs": {
            "front_rgb": {"shape": [32, 32, 3], "type": "rgb"},
            "gripper": {"shape": [1], "type": "low_dim"},
            "joints": {"shape": [2], "type": "low_dim"},
            "instruction": {"shape": [64], "type": "text"},
        },
        "action": {"shape": [2]},
    }
    demos, label = LeRobotReader(LEROBOT_MADE).demos(["instruction", "joints", "front_rgb", "gripper"], meta)
    first = next(demos)
    assert label == "actions"
    np.testing.assert_array_equal(first["obs/gripper"][:, 0], np.zeros(4))  # observation.state[:, :1]
    np.testing.assert_array_equal(first["obs/joints"], [[i, 0.5 * i] for i in range(4)])  # [:, 1:3]
    assert bytes(first["obs/instruction"][0]).rstrip(b"\0") == b"pick the cube"
    assert first["obs/front_rgb"].shape == (4, 32, 32, 3) and first["actions"].dtype == np.float32


def test_train_bc_from_an_exported_lerobot_dataset(collected, tmp_path):
    export_lerobot(collected["state"], tmp_path / "lerobot", progress=False)
    run = tmp_path / "run"
    overrides = ("algo.updates=10", "algo.log_every=5", "eval.episodes=1", "eval.num_envs=1", "eval.videos=0")
    summary = train_run(
        "task=pushcube", "algo=bc", f"algo.dataset={tmp_path / 'lerobot'}", *overrides, "review=false", run=run
    )
    assert summary["teacher_labels"] == dataset_summary(collected["state"])["samples"]
    assert (run / "checkpoints/best.pt").exists()


def test_dataset_that_does_not_fit_the_task_names_each_mismatch(tmp_path):
    with user_error(
        "does not fit the task's shapes",
        "observation.images.wrist is missing (its cameras: front), the task's wrist_rgb needs (32, 32, 3)",
        "observation.state has shape (3,), the task's proprio needs (22,)",
        "action has shape (2,), the task's actions need (4,)",
    ):
        train_run(
            "task=reach",
            "student=cnn",
            "task.kwargs.image_size=32",
            "algo=bc",
            f"algo.dataset={LEROBOT_MADE}",
            run=tmp_path / "r",
        )


def broken(tmp_path, change) -> object:
    """A copy of the lerobot-made fixture with `change(root)` applied."""
    root = tmp_path / "broken"
    shutil.copytree(LEROBOT_MADE, root)
    change(root)
    return root


def set_version(root, version):
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": version}))


def drop_features(root):
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]
    (root / "meta/info.json").write_text(json.dumps(info))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"
BROKEN = {
    "no info.json": (lambda r: (r / "meta/info.json").unlink(), "it has no meta/info.json"),
    "corrupt info.json": (lambda r: (r / "meta/info.json").write_text("{not json"), "not readable JSON"),
    "v2.1": (lambda r: set_version(r, "v2.1"), "codebase_version v2.1; robodistill reads v3.0"),
    "no features": (drop_features, "no 'features'"),
    "truncated tasks": (lambda r: truncate(r / "meta/tasks.parquet"), "tasks.parquet is not a readable parquet file"),
    "no episodes": (lambda r: shutil.rmtree(r / "meta/episodes"), "lacks meta/episodes"),
    "missing video": (lambda r: (r / VIDEO).unlink(), f"lacks {VIDEO}"),
    "truncated video": (lambda r: truncate(r / VIDEO), "file-000.mp4 ends before frame 4"),
    "garbage video": (lambda r: (r / VIDEO).write_bytes(b"not a video" * 50), "file-000.mp4 cannot be decoded"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_missing_or_corrupt_meta_is_one_clear_error(tmp_path, case):
    change, needle = BROKEN[case]
    root = broken(tmp_path, change)
    with user_error(needle):
        import_lerobot(root, tmp_path / "out.hdf5", progress=False)
    assert not (tmp_path / "out.hdf5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]  # no partial output left behind


def test_a_failed_export_leaves_no_output_and_keeps_the_old_one(collected, tmp_path):
    src = tmp_path / "mixed.hdf5"
    shutil.copy(collected["state"], src)
    with h5py.File(src, "a") as f:  # the last demo's state is longer: LeRobot has one schema per dataset
        g = f["data/demo_2/obs"]
        state = g["state"][()]
        del g["state"]
        g["state"] = np.concatenate([state, state], 1)
    with user_error("a LeRobot dataset has one schema"):
        export_lerobot(src, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep").write_text("mine")
    with user_error("one schema"):
        export_lerobot(src, old, overwrite=True, progress=False)
    assert [p.name for p in old.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.hdf5", "old"]


def test_convert_script_detects_direction_and_refuses_to_overwrite(collected, tmp_path):
    lerobot, back = tmp_path / "lerobot", tmp_path / "back.hdf5"
    p = run_script("scripts/convert.py", str(collected["state"]), str(lerobot), "fps=10", "robot_type=panda")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["total_episodes"] == 3
    assert json.loads((lerobot / "meta/info.json").read_text())["fps"] == 10
    p = run_script("scripts/convert.py", str(lerobot), str(back), "progress=false")
    assert p.returncode == 0 and json.loads(p.stdout)["demos"] == 3, p.stderr
    before = back.read_bytes()
    one_clear_error(run_script("scripts/convert.py", str(lerobot), str(back)), "exists; pass overwrite=true")
    assert back.read_bytes() == before
    assert run_script("scripts/convert.py", str(lerobot), str(back), "overwrite=true").returncode == 0
    one_clear_error(
        run_script("scripts/convert.py", str(lerobot), str(back), "fps=30"), "fps= only set HDF5 -> LeRobot"
    )
    one_clear_error(run_script("scripts/convert.py", str(tmp_path / "nope"), str(back)), "does not exist")


NO_HEAVY_IMPORTS = """
import importlib.abc, sys
HEAVY = {"pandas", "datasets", "lerobot", "torch", "torchvision", "mujoco", "hydra"}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Refuse())
from robodistill.data.lerobot import export_lerobot, import_lerobot
export_lerobot(sys.argv[1], sys.argv[2], progress=False)
print(import_lerobot(sys.argv[2], sys.argv[3], progress=False)["samples"])
"""


def test_converting_needs_no_pandas_datasets_lerobot_torch_or_mujoco(collected, tmp_path):
    args = (str(collected["camera"]), str(tmp_path / "lerobot"), str(tmp_path / "back.hdf5"))
    p = run_script("-c", NO_HEAVY_IMPORTS, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert int(p.stdout) == dataset_summary(collected["camera"])["samples"]
