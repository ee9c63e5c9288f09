"""Regenerate the napari screenshots in docs/images/ (run under xvfb-run; real viewer, real plugin).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import numpy as np
from skimage.io import imsave

from oct_wsss.cli import populate_demo

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
SHARED = REPO.parent / "shared" / "data"


def _shoot(viewer: napari.Viewer, name: str, zoom: float = 1.0) -> None:
    viewer.window._qt_window.resize(1500, 900)
    viewer.reset_view()
    viewer.camera.zoom *= zoom
    napari.qt.get_qapp().processEvents()
    imsave(OUT / name, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print("wrote", OUT / name)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-oct-wsss")
    populate_demo(viewer)
    truth = viewer.layers["ground truth"].data
    busiest = int(np.argmax([len(np.unique(b)) for b in truth]))
    viewer.dims.set_current_step(0, busiest)
    _shoot(viewer, "napari_sample_lesions.png", zoom=1.5)

    bonn = SHARED / "bonn_drusen_volume"
    if bonn.is_dir():
        viewer.layers.clear()
        viewer.open(str(bonn), plugin="napari-oct-wsss")
        viewer.dims.set_current_step(0, 59)
        _shoot(viewer, "napari_open_bonn.png", zoom=1.5)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
