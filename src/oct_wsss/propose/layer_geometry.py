"""Geometry the Layers panel draws and edits: boundary rows <-> editable paths, the ETDRS grid's lines.

Paths are (m, 3) arrays of data coordinates ``(bscan, row, ascan)``, one per boundary, as napari's Shapes layer
holds them. The ETDRS grid is drawn on the en-face map, whose axes are (B-scan index, A-scan index).
"""

from __future__ import annotations

import numpy as np

#: ETDRS ring radii in mm (the 1, 3 and 6 mm circles)
RING_RADII_MM = (0.5, 1.5, 3.0)


def paths_from_boundaries(boundaries: np.ndarray, bscan: int, step: int = 1) -> list[np.ndarray]:
    """(k, W) boundary rows of one B-scan -> k paths of (bscan, row, ascan) vertices every ``step`` A-scans (NaN
    rows are left out; the last A-scan is always a vertex)."""
    rows = np.asarray(boundaries, np.float64)
    xs = np.unique(np.r_[np.arange(0, rows.shape[1], max(1, step)), rows.shape[1] - 1])
    paths = []
    for row in rows:
        keep = xs[np.isfinite(row[xs])]
        paths.append(np.column_stack([np.full(len(keep), float(bscan)), row[keep], keep.astype(np.float64)]))
    return paths


def boundaries_from_paths(paths: list[np.ndarray], width: int) -> np.ndarray:
    """k paths of (bscan, row, ascan) vertices -> (k, width) rows, linearly interpolated between vertices and held
    flat past the ends, then ordered top to bottom (each boundary at or below the one before)."""
    xs = np.arange(width, dtype=np.float64)
    rows = []
    for path in paths:
        p = np.asarray(path, np.float64)
        order = np.argsort(p[:, 2], kind="stable")
        rows.append(np.interp(xs, p[order, 2], p[order, 1]))
    return np.maximum.accumulate(np.vstack(rows), axis=0)


def etdrs_grid_lines(centre: tuple[float, float], spacing_mm: tuple[float, float, float],
                     n_points: int = 73) -> list[np.ndarray]:
    """The ETDRS grid as (m, 2) polylines in en-face (B-scan, A-scan) index coordinates: the three rings, then the
    four sector borders (diagonals from the 1 mm to the 6 mm ring)."""
    dz, dx = spacing_mm[0], spacing_mm[2]
    angles = np.linspace(0.0, 2.0 * np.pi, n_points)
    lines = [np.column_stack([centre[0] + r * np.sin(angles) / dz, centre[1] + r * np.cos(angles) / dx])
             for r in RING_RADII_MM]
    for angle in np.pi / 4 + np.arange(4) * np.pi / 2:
        r = np.array(RING_RADII_MM[::2])
        lines.append(np.column_stack([centre[0] + r * np.sin(angle) / dz, centre[1] + r * np.cos(angle) / dx]))
    return lines
