"""Measurements a reading centre reports from a label volume: area per class per B-scan (mm²), volume per class
(mm³, B-scan area × B-scan spacing), and hyper-reflective foci as counted instances with their sizes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage import measure

from oct_wsss.classes import BACKGROUND, HRF, ONTOLOGY


@dataclass(frozen=True)
class Measurements:
    """``bscans``: one row per (B-scan, class present); ``volume``: one row per class; ``hrf``: one row per focus."""

    bscans: list[dict[str, float | int | str]]
    volume: list[dict[str, float | int | str]]
    hrf: list[dict[str, float | int]]


def measure_labels(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> Measurements:
    """Measure (n, H, W) ontology ids with spacing (z between B-scans, y depth, x lateral) in mm."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (n_bscans, height, width); got {labels.shape}")
    z, y, x = (float(s) for s in spacing_mm)
    if min(z, y, x) <= 0:
        raise ValueError(f"spacing must be positive; got {spacing_mm}")
    pixel_mm2 = y * x
    counts = np.stack([np.bincount(page.ravel(), minlength=len(ONTOLOGY))[:len(ONTOLOGY)] for page in labels]) \
        if len(labels) else np.zeros((0, len(ONTOLOGY)), int)
    bscans, volume = [], []
    for c in ONTOLOGY:
        if c.id == BACKGROUND or not counts[:, c.id].any():
            continue
        for i in np.flatnonzero(counts[:, c.id]):
            bscans.append({"bscan": int(i), "class": c.key, "pixels": int(counts[i, c.id]),
                           "area_mm2": round(float(counts[i, c.id]) * pixel_mm2, 6)})
        volume.append({"class": c.key, "bscans": int((counts[:, c.id] > 0).sum()),
                       "pixels": int(counts[:, c.id].sum()),
                       "volume_mm3": round(float(counts[:, c.id].sum()) * pixel_mm2 * z, 6)})
    hrf = []
    for i, page in enumerate(labels):
        if not (page == HRF).any():
            continue
        for region in measure.regionprops(measure.label(page == HRF, connectivity=2)):
            cy, cx = region.centroid
            hrf.append({"bscan": i, "centroid_row": round(cy, 2), "centroid_col": round(cx, 2),
                        "pixels": int(region.area), "area_um2": round(region.area * pixel_mm2 * 1e6, 2)})
    return Measurements(bscans, volume, hrf)


def write_measurements(m: Measurements, out: str | Path, name: str) -> list[Path]:
    """``out/<name>_bscans.csv``, ``<name>_volume.csv`` and ``<name>_hrf.csv`` (header only when empty)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"bscans": (m.bscans, ["bscan", "class", "pixels", "area_mm2"]),
              "volume": (m.volume, ["class", "bscans", "pixels", "volume_mm3"]),
              "hrf": (m.hrf, ["bscan", "centroid_row", "centroid_col", "pixels", "area_um2"])}
    paths = []
    for part, (rows, header) in tables.items():
        path = out / f"{name}_{part}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths
