"""Camera labels under a memory budget: a buffer whose images moved to its temporary file returns the same samples
as one holding every frame in memory, holds no more image bytes than its budget however many labels arrive, leaves
low-dim (state) buffers as they were; a dataset recorded with other cameras than the student reads is refused."""

import json

import numpy as np
import torch
from conftest import checkpoint_tensors, train_run, user_error

from robodistill.benchmarks.pixels_memory import fill_and_sample
from robodistill.data.buffer import MB, LabelBuffer
from robodistill.data.dataset import EpisodeWriter
from robodistill.data.labels import LABEL, load_labels, sequence_labels
from robodistill.learners.demos import merge

SIZE = 16  # small frames: the mechanism does not depend on their size
META = {
    "obs": {
        "front_rgb": {"shape": [SIZE, SIZE, 3], "type": "rgb"},
        "wrist_rgb": {"shape": [SIZE, SIZE, 3], "type": "rgb"},
        "proprio": {"shape": [5], "type": "low_dim"},
    },
    "action": {"shape": [3]},
}


def _episode(n: int, rng: np.random.Generator, cameras=("front_rgb", "wrist_rgb")) -> dict:
    obs = {c: rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8) for c in cameras}
    obs["proprio"] = rng.normal(size=(n, 5)).astype(np.float32)
    return {
        "obs": obs,
        "next_obs": obs,
        "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "dones": np.eye(1, n, n - 1, dtype=np.int64)[0],
        "teacher": {"actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32)},
    }


def _samples(episode: dict) -> dict[str, np.ndarray]:
    return {**episode["obs"], LABEL: episode["teacher"]["actions"]}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_file_backed_buffer_returns_the_in_memory_samples(tmp_path):
    rng = np.random.default_rng(0)
    memory, budgeted = LabelBuffer(), LabelBuffer(image_memory_mb=0.5, spill_dir=tmp_path)
    for n in (37, 60, 1, 500, 900, 60):
        episode = _samples(_episode(n, rng))
        memory.add(episode)
        budgeted.add(episode)
    assert set(budgeted.files) == {"front_rgb", "wrist_rgb"}  # the images moved to the file...
    assert set(budgeted.arrays) == {"proprio", LABEL} and not memory.files  # ...the low-dim arrays did not
    assert len(memory) == len(budgeted) == 1558
    for seed in range(3):  # the same generator draws the same samples
        _same(memory.sample(64, np.random.default_rng(seed)), budgeted.sample(64, np.random.default_rng(seed)))
    _same(memory.take(np.array([0, 1557, 5, 5, 998])), budgeted.take(np.array([0, 1557, 5, 5, 998])))
    _same(memory.rows(30, 1200), budgeted.rows(30, 1200))
    for k in memory.keys:
        assert np.array_equal(memory.view(k), budgeted.view(k))
    # merging buffers (several demonstration sets) into a budgeted one keeps every sample, in order
    merged = merge([memory, budgeted], LabelBuffer(image_memory_mb=0.5, spill_dir=tmp_path), chunk=400)
    assert len(merged) == 2 * 1558 and merged.files
    _same(merged.rows(1558, 3116), memory.rows(0, 1558))


def test_images_in_memory_stay_within_the_budget_as_labels_grow(tmp_path):
    rng = np.random.default_rng(1)
    budget_mb = 1.0
    budgeted, unbounded = LabelBuffer(budget_mb, tmp_path), LabelBuffer()
    frame = 2 * SIZE * SIZE * 3
    for _ in range(60):
        episode = _samples(_episode(60, rng))
        budgeted.add(episode)
        unbounded.add(episode)
        assert budgeted.image_bytes <= budget_mb * MB
    assert len(budgeted) * frame > 4 * budget_mb * MB  # the labels hold four budgets of images
    assert unbounded.image_bytes >= len(unbounded) * frame  # without a budget every frame stays in memory
    # windows of frames (diffusion students) are images too
    windows = LabelBuffer(budget_mb, tmp_path)
    for _ in range(20):
        e = _episode(60, rng)
        windows.add(sequence_labels(e["obs"], e["teacher"]["actions"], list(META["obs"]), (2, 8, 1)))
        assert windows.image_bytes <= budget_mb * MB
    assert set(windows.files) == {"front_rgb", "wrist_rgb"}
    # the benchmark's fill (what `pixels_memory.memory_growth` runs per process) honours the budget too
    assert fill_and_sample(2000, 0.5, size=SIZE, batches=3)["held_image_mb"] <= 0.5


def test_state_buffer_is_untouched_by_the_budget(tmp_path):
    rng = np.random.default_rng(2)
    budgeted, plain = LabelBuffer(0.001, tmp_path), LabelBuffer()
    for n in (60, 3000):
        batch = {"state": rng.normal(size=(n, 28)).astype(np.float32), LABEL: rng.normal(size=(n, 4)).astype("f4")}
        budgeted.add(batch)
        plain.add(batch)
    assert not budgeted.files and budgeted.image_bytes == 0
    assert {k: a.shape for k, a in budgeted.arrays.items()} == {k: a.shape for k, a in plain.arrays.items()}
    _same(budgeted.sample(256, np.random.default_rng(0)), plain.sample(256, np.random.default_rng(0)))


def test_labels_read_from_a_dataset_under_a_budget(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "d.hdf5"
    with EpisodeWriter(path, {}) as w:
        for n in (120, 200, 90):
            w.write(_episode(n, rng))
    keys = ["front_rgb", "wrist_rgb", "proprio"]
    plain = load_labels(path, keys, META)
    budgeted = load_labels(path, keys, META, into=LabelBuffer(0.2, tmp_path))
    assert budgeted.files and budgeted.image_bytes <= 0.2 * MB
    _same(plain.rows(0, len(plain)), budgeted.rows(0, len(budgeted)))
    _same(plain.sample(64, np.random.default_rng(4)), budgeted.sample(64, np.random.default_rng(4)))


def test_dataset_recorded_with_other_cameras_is_refused(tmp_path):
    path = tmp_path / "front_only.hdf5"
    with EpisodeWriter(path, {}) as w:
        w.write(_episode(20, np.random.default_rng(5), cameras=("front_rgb",)))
    with user_error("recorded with cameras [front_rgb]", "reads cameras [front_rgb, wrist_rgb]", "obs/wrist_rgb"):
        load_labels(path, ["front_rgb", "wrist_rgb", "proprio"], META)
    # a student reading fewer cameras than recorded is fine
    assert len(load_labels(path, ["front_rgb", "proprio"], META)) == 20


def test_zero_budget_keeps_no_image_in_memory(tmp_path):
    buffer = LabelBuffer(0.0, tmp_path)
    buffer.add(_samples(_episode(5, np.random.default_rng(6))))
    assert buffer.image_bytes == 0 and set(buffer.files) == {"front_rgb", "wrist_rgb"}
    assert buffer.take(np.array([4]))["front_rgb"].shape == (1, SIZE, SIZE, 3)


def test_camera_dagger_reading_images_from_the_file_trains_as_in_memory(tmp_path):
    """A two-camera DAgger run with no image memory (every minibatch's frames read from the file) computes the same
    losses and weights as one holding every frame in memory."""
    runs = {}
    for mb in ("0", "null"):
        train_run(
            "task=reach",
            "student=cnn",
            "algo.rounds=2",
            "algo.episodes_per_round=2",
            "algo.updates_per_round=5",
            "algo.batch_size=16",
            "eval.episodes=1",
            "eval.num_envs=1",
            "eval.videos=0",
            "collector.num_envs=2",
            f"collector.image_memory_mb={mb}",
            run=tmp_path / mb,
        )
        lines = (tmp_path / mb / "metrics.jsonl").read_text().splitlines()
        losses = [{k: v for k, v in json.loads(line).items() if k.startswith("loss/")} for line in lines]
        ckpt = torch.load(tmp_path / mb / "checkpoints" / "last.pt", weights_only=False)
        runs[mb] = [x for x in losses if x], dict(checkpoint_tensors(ckpt))
    (losses_file, weights_file), (losses_memory, weights_memory) = runs["0"], runs["null"]
    assert len(losses_file) == 2 and losses_file == losses_memory
    assert weights_file.keys() == weights_memory.keys()
    for k, v in weights_file.items():
        assert torch.equal(v, weights_memory[k]), k
