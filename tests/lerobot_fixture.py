"""Writes tests/data/lerobot_v30 and lerobot_v30_images: tiny datasets made by lerobot itself (LeRobotDataset.create,
add_frame, save_episode), the camera as lerobot's default AV1 video or as PNG images in the parquet, read by
tests/test_lerobot.py. Needs lerobot, which robodistill does not:

    python3.12 -m venv /tmp/lerobot && /tmp/lerobot/bin/pip install 'lerobot[dataset]==0.6.1'
    /tmp/lerobot/bin/python tests/lerobot_fixture.py

Every value follows from the frame (`expected_frame`), so the test checks what it reads without lerobot.
"""

import shutil
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "data"
EPISODES = {"pick the cube": 4, "push the cube": 5}  # task -> frames
SIZE = 32


def expected_frame(episode: int, i: int) -> dict[str, np.ndarray]:
    """Frame i of episode `episode`: its state, action, reward, done and camera image (a moving gradient)."""
    y, x = np.mgrid[:SIZE, :SIZE]
    image = np.stack([(x * 8 + i * 16) % 256, y * 8, np.full_like(x, 60 * episode + 30)], -1).astype(np.uint8)
    n = list(EPISODES.values())[episode]
    return {
        "observation.state": np.array([episode, i, 0.5 * i], np.float32),
        "action": np.array([0.1 * i, -0.1 * episode], np.float32),
        "next.reward": np.array([i / 10], np.float32),
        "next.done": np.array([i == n - 1]),
        "observation.images.front": image,
    }


if __name__ == "__main__":
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "observation.images.front": {
            "dtype": "video",
            "shape": (SIZE, SIZE, 3),
            "names": ["height", "width", "channels"],
        },
    }
    for name, video in (("lerobot_v30", True), ("lerobot_v30_images", False)):
        camera = {**features["observation.images.front"], "dtype": "video" if video else "image"}
        root = OUT / name
        shutil.rmtree(root, ignore_errors=True)
        dataset = LeRobotDataset.create(
            "robodistill/fixture",
            fps=10,
            features={**features, "observation.images.front": camera},
            root=root,
            robot_type="panda",
            use_videos=video,
        )
        for episode, (task, n) in enumerate(EPISODES.items()):
            for i in range(n):
                dataset.add_frame({**expected_frame(episode, i), "task": task})
            dataset.save_episode()
        dataset.finalize()
