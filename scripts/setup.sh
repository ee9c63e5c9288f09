#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine with Python 3.11: the system libraries napari's canvas
# needs under Xvfb (Mesa, the Qt xcb set), then .venv with the plugin and its test/GUI extras.
# Safe to re-run: it installs only what is missing. Last, it converts the eyesegpy layer networks (needs the package
# index once; see scripts/convert_eyesegpy.py).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
libxcb-xkb1 libdbus-1-3 libfontconfig1"
missing=""
for pkg in $APT_PACKAGES; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# sam2 (an sdist) builds against the venv's torch: torch first, then sam2 without build isolation
# (else pip pulls a second torch into the build env) and without its optional CUDA extension.
.venv/bin/python -m pip install -q "torch>=2.5.1" "torchvision>=0.20" setuptools wheel
SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install -q --no-build-isolation "sam2>=1.1"
.venv/bin/python -m pip install -q -e ".[test]"
# The Bonn group's trained layer networks (eyesegpy, MIT): fetch its wheel once (never installed: it needs Python < 3.11
# and TensorFlow 2.11) and convert the Keras weights for PyTorch into ~/.cache/oct-wsss/eyesegpy. Offline, this says
# how to do it later and set-up goes on; a rerun skips the download when the wheel is there.
.venv/bin/python scripts/convert_eyesegpy.py --setup
echo "setup: ready ($(.venv/bin/python --version), .venv)"
