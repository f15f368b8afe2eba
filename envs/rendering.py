"""MuJoCo's GL backend: a guarded import and renderer creation, each failing with one line naming the fix."""

from __future__ import annotations

import logging
import os

# Debian packages that provide each headless backend MuJoCo supports.
GL_PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
    "glfw": "libglfw3 (and a display)",
}


class RenderingUnavailable(RuntimeError):
    """MuJoCo cannot load or open its off-screen GL backend."""

    user_facing = True  # entry points print it as one line


def _fix(backend: str) -> str:
    pkg = GL_PACKAGES.get(backend, GL_PACKAGES["egl"])
    return f"install it with `apt-get install -y {pkg}`, or use MUJOCO_GL=egl (packages {GL_PACKAGES['egl']})"


def import_mujoco():
    """Import mujoco with MUJOCO_GL defaulting to egl; a missing GL library becomes RenderingUnavailable."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL logs every library it fails to find
    backend = os.environ["MUJOCO_GL"].lower()
    try:
        import mujoco
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        raise RenderingUnavailable(
            f"MuJoCo could not load its GL backend MUJOCO_GL={backend} ({type(exc).__name__}: {exc}); {_fix(backend)}"
        ) from exc
    return mujoco


def make_renderer(model, height: int, width: int):
    """A `mujoco.Renderer`, or RenderingUnavailable naming the Debian package to install."""
    mujoco = import_mujoco()
    backend = os.environ["MUJOCO_GL"].lower()
    glob = model.vis.global_  # the off-screen framebuffer must hold the frame
    glob.offwidth, glob.offheight = max(glob.offwidth, width), max(glob.offheight, height)
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # mujoco raises several types depending on backend and stage
        raise RenderingUnavailable(
            f"MuJoCo could not create an off-screen renderer with MUJOCO_GL={backend} ({exc}); {_fix(backend)}"
        ) from exc
