"""Rollout videos for review: frames with an overlay (step, reward, success) written as H.264 mp4."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def overlay(frame: np.ndarray, step: int, reward: float, success: bool) -> np.ndarray:
    """Draw 'step, reward, success' in the top-left corner of an RGB frame."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    text = f"step {step:3d}  r {reward:+.3f}"
    draw.rectangle([0, 0, img.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255), font=font)
    label, colour = ("SUCCESS", (60, 220, 90)) if success else ("running", (200, 200, 200))
    draw.text((img.width - 6 * len(label) - 4, 1), label, fill=colour, font=font)
    return np.asarray(img)


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """Write frames as an mp4 (imageio + its bundled ffmpeg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, fps=fps, codec="libx264", macro_block_size=8)
    return path
