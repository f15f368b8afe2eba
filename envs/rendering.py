"""Off-screen renderer creation with one clear error when the GL backend is missing."""

from __future__ import annotations

import os

import mujoco

# Debian packages that provide each headless backend MuJoCo supports.
GL_PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
    "glfw": "libglfw3 (and a display)",
}


class RenderingUnavailable(RuntimeError):
    """Raised when MuJoCo cannot open an off-screen GL context."""


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A `mujoco.Renderer`, or a `RenderingUnavailable` naming the Debian package to install."""
    backend = os.environ.get("MUJOCO_GL", "egl").lower()
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # mujoco raises several types depending on backend and stage
        pkg = GL_PACKAGES.get(backend, "libegl1 libegl-mesa0 libgl1-mesa-dri")
        raise RenderingUnavailable(
            f"MuJoCo could not create an off-screen renderer with MUJOCO_GL={backend} ({exc}). "
            f"Install it with `apt-get install -y {pkg}` or try MUJOCO_GL=osmesa (package libosmesa6)."
        ) from exc
