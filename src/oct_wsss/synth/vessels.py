"""Blood vessels: superficial retinal vessels (bright cross-sections that shadow everything below,
consistent across neighbouring B-scans because they are drawn en face) and choroidal vessel texture."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import Grid


def plan_vessels(rng: np.random.Generator, grid: Grid) -> list[dict]:
    """Branches of the temporal arcades running from the scan edge toward the fovea (avascular zone
    of ~0.5 mm kept free); quadratic Bezier curves in en-face mm, JSON-serialisable."""
    out = []
    for _ in range(int(rng.integers(6, 11))):
        a0 = rng.uniform(0, 2 * np.pi)
        a1 = a0 + rng.normal(0, 0.5)
        r1 = rng.uniform(0.45, 1.2)
        p0 = [grid.fovea[0] + 4.0 * np.sin(a0), grid.fovea[1] + 4.0 * np.cos(a0)]
        p2 = [grid.fovea[0] + r1 * np.sin(a1), grid.fovea[1] + r1 * np.cos(a1)]
        mid = [(p0[0] + p2[0]) / 2 + rng.normal(0, 0.6), (p0[1] + p2[1]) / 2 + rng.normal(0, 0.6)]
        out.append({"p0": [float(v) for v in p0], "p1": [float(v) for v in mid], "p2": [float(v) for v in p2],
                    "width_mm": float(rng.uniform(0.04, 0.09))})
    return out


def vessel_map(grid: Grid, vessels: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """En-face (n, W) maps: vessel chord fraction (0..1) and vessel diameter (mm) at each A-scan."""
    t = np.linspace(0, 1, 160)[:, None]
    zz = np.broadcast_to(grid.z, (grid.z.shape[0], grid.x.shape[1])).ravel()
    xx = np.broadcast_to(grid.x, (grid.z.shape[0], grid.x.shape[1])).ravel()
    chord = np.zeros(zz.shape, np.float32)
    diam = np.zeros(zz.shape, np.float32)
    for v in vessels:
        p0, p1, p2 = (np.asarray(v[k])[None, :] for k in ("p0", "p1", "p2"))
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (160, 2)
        width = v["width_mm"] * (1.0 - 0.45 * t[:, 0])  # tapers toward the fovea
        d2 = (zz[:, None] - curve[None, :, 0]) ** 2 + (xx[:, None] - curve[None, :, 1]) ** 2
        k = np.argmin(d2, axis=1)
        half = width[k] / 2
        c = np.sqrt(np.clip(1.0 - d2[np.arange(k.size), k] / half**2, 0, 1))
        better = c > chord
        chord[better], diam[better] = c[better], 2 * half[better]
    shape = (grid.z.shape[0], grid.x.shape[1])
    return chord.reshape(shape), diam.reshape(shape)


def choroid_field(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Low-resolution smooth 3-D random field (n, H/4, W/4) whose high values are choroidal lumens."""
    f = rng.standard_normal((n, height // 4 + 1, width // 4 + 1)).astype(np.float32)
    f = ndimage.gaussian_filter(f, (0.8, 1.6, 2.4))
    return f / (f.std() + 1e-6)


def choroid_texture(field: np.ndarray, i: int, height: int, width: int) -> np.ndarray:
    """Stroma/lumen modulation (H, W) for B-scan ``i``: ~1 in stroma, ~0.2 in vessel lumens."""
    up = ndimage.zoom(field[i], (height / field.shape[1], width / field.shape[2]), order=1)[:height, :width]
    lumen = 1.0 / (1.0 + np.exp(-(up - 0.45) / 0.12))
    return (1.0 - 0.85 * lumen).astype(np.float32)
