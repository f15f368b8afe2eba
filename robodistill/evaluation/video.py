"""Rollout videos for review: the scene camera with the student's own camera views beside it, a per-step overlay
(step, reward, outcome), streamed to H.264 mp4 (yuv420p, faststart) that browsers play."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAR = (0, 0, 0)
COLOURS = {"SUCCESS": (60, 220, 90), "FAIL": (240, 80, 70), "running": (200, 200, 200)}


@dataclass(frozen=True)
class Filming:
    """What the final evaluation films: `videos` episodes, up to `failures` of them failed ones (filmed first), at
    `size` x `size` pixels for the scene camera (the student's cameras go beside it), `fps` frames per second."""

    videos: int = 4
    failures: int = 2
    size: int = 480
    fps: int = 20

    @classmethod
    def from_config(cls, ev: Mapping[str, Any], videos: int | None = None) -> Filming:
        """From the `eval` config group (`videos`, `videos_failures`, `video_size`, `video_fps`); `videos` overrides."""
        n = int(ev["videos"] if videos is None else videos)
        failures, size, fps = (
            int(ev.get("videos_failures", 0)),
            int(ev.get("video_size", 480)),
            int(ev.get("video_fps", 20)),
        )
        if n < 0 or failures < 0 or size < 16 or fps < 1:
            raise ValueError(
                f"eval: videos={n}, videos_failures={failures}, video_size={size}, video_fps={fps} out of range"
            )
        return cls(n, failures, size, fps)


def choose_filmed(results: Sequence[Mapping[str, Any]], filming: Filming) -> list[int]:
    """The episodes to film, a mix with failures first: up to `filming.failures` failed episodes, then successes
    (or episodes of a task that reports none), then more failures if successes run short; `filming.videos` in all,
    each group in episode order."""
    failed = [r["episode"] for r in results if r["success"] is False]
    others = [r["episode"] for r in results if r["success"] is not False]
    first = failed[: filming.failures]
    return (first + others + failed[len(first) :])[: filming.videos]


def _font(height: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, height // 32))


def overlay(frame: np.ndarray, step: int, reward: float, success: bool | None, done: bool = False) -> np.ndarray:
    """Draw 'step, reward' and the outcome (running, SUCCESS, or FAIL at the episode's end) along the top of a frame."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    font = _font(img.height)
    bar = font.size + 6
    draw.rectangle([0, 0, img.width, bar], fill=BAR)
    draw.text((4, 3), f"step {step:3d}  r {reward:+.3f}", fill=(255, 255, 255), font=font)
    label = "SUCCESS" if success else ("FAIL" if done and success is not None else "running")
    width = draw.textlength(label, font=font)
    draw.text((img.width - width - 6, 3), label, fill=COLOURS[label], font=font)
    return np.asarray(img)


def compose(scene: np.ndarray, obs: Mapping[str, np.ndarray], cameras: Sequence[str], size: int) -> np.ndarray:
    """The scene frame at `size` x `size` with the student's `cameras` (images in `obs`) stacked in a column beside
    it, each scaled (nearest: the pixels the student saw) to a square of size / len(cameras) and labelled."""
    img = Image.fromarray(scene)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    if not cameras:
        return np.asarray(img)
    side = size // len(cameras)
    canvas = Image.new("RGB", (size + side, size))
    canvas.paste(img, (0, 0))
    draw, font = ImageDraw.Draw(canvas), _font(size)
    for k, key in enumerate(cameras):
        view = Image.fromarray(np.asarray(obs[key], dtype=np.uint8)).resize((side, side), Image.NEAREST)
        canvas.paste(view, (size, k * side))
        draw.text((size + 4, k * side + side - font.size - 6), key, fill=(255, 255, 0), font=font)
    return np.asarray(canvas)


def camera_keys(obs: Mapping[str, np.ndarray]) -> list[str]:
    """The image observations (H, W, 3 uint8) of one env's observation, in their order."""
    return [k for k, v in obs.items() if np.ndim(v) == 3 and np.shape(v)[-1] == 3 and np.asarray(v).dtype == np.uint8]


class VideoWriter:
    """One episode's mp4, written frame by frame (no episode is held in memory): H.264, yuv420p, moov atom first."""

    def __init__(self, path: str | Path, fps: int = 20):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(
            self.path,
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=2,  # yuv420p needs even sides; H.264 pads the rest itself
            output_params=["-movflags", "+faststart"],
        )

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)

    def close(self) -> Path:
        self._writer.close()
        return self.path
