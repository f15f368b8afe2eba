#!/usr/bin/env bash
# Create or refresh .venv from nothing: Debian GL packages for headless rendering, CPU torch first, then the project.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0"   # the CPU build; pinned on every pip line so nothing "upgrades" it to a CUDA build

# Headless rendering: MuJoCo's EGL backend needs libEGL + Mesa's EGL vendor library and DRI drivers.
if ! ldconfig -p | grep -q 'libEGL_mesa.so.0' || ! ldconfig -p | grep -q 'libEGL.so.1'; then
  echo "installing Debian packages for headless rendering: libegl1 libegl-mesa0 libgl1-mesa-dri"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
fi

# The review page's browser test runs Debian's Chromium headless (playwright drives /usr/bin/chromium; it downloads
# no browser of its own).
if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the review page's browser test"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! "$VENV/bin/python" -c "import sys" 2>/dev/null; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install "$TORCH_PIN"
$PIP install "$TORCH_PIN" -e ".[train,serve,dev,ray]"
# robomimic declares torchvision, whose registry build does not import beside the CPU torch: install it without
# dependencies, with the two its dataset loaders need that the project does not (termcolor, six).
$PIP install --no-deps "robomimic==0.3.0" termcolor six
"$VENV/bin/python" -c "import torch, mujoco, gymnasium, robomimic.utils.dataset; print('robodistill env ready: torch', torch.__version__, 'mujoco', mujoco.__version__)"
touch "$VENV/.installed"
