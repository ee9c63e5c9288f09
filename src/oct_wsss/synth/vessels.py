"""Blood vessels: superficial retinal vessels (bright cross-sections that shadow everything below,
consistent across neighbouring B-scans because they are drawn en face) and choroidal vessel texture."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import Grid


def plan_vessels(rng: np.random.Generator, grid: Grid) -> list[dict]:
    """Branches of the superior and inferior arcades (alternating) running from beyond the scan edge
    toward the fovea (avascular zone of ~0.5 mm kept free); quadratic Bezier curves in en-face mm."""
    out = []
    for j in range(int(rng.integers(8, 13))):
        a0 = (1 if j % 2 else -1) * np.pi / 2 + rng.normal(0, 0.7)
        a1 = a0 + rng.normal(0, 0.5)
        r1 = rng.uniform(0.45, 1.2)
        p0 = [grid.fovea[0] + 4.0 * np.sin(a0), grid.fovea[1] + 4.0 * np.cos(a0)]
        p2 = [grid.fovea[0] + r1 * np.sin(a1), grid.fovea[1] + r1 * np.cos(a1)]
        mid = [(p0[0] + p2[0]) / 2 + rng.normal(0, 0.6), (p0[1] + p2[1]) / 2 + rng.normal(0, 0.6)]
        out.append({"p0": [float(v) for v in p0], "p1": [float(v) for v in mid], "p2": [float(v) for v in p2],
                    "width_mm": float(rng.uniform(0.035, 0.09))})
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


def choroid_field(rng: np.random.Generator, n: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth 3-D random fields whose high values are choroidal lumens: coarse (n, H/8, W/8) for the
    large Haller vessels, fine (n, H/4, W/4) for the small Sattler vessels; continuous across B-scans."""
    out = []
    for step, sigma in ((8, (0.7, 0.9, 1.2)), (4, (0.7, 0.8, 1.1))):
        noise = rng.standard_normal((n, height // step + 2, width // step + 2)).astype(np.float32)
        f = ndimage.gaussian_filter(noise, sigma)
        out.append(f / (f.std() + 1e-6))
    return out[0], out[1]


@functools.cache
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear-interpolation matrix (n_out, n_in) from a coarse grid spanning the same extent."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in - 1) / n_out, 0, n_in - 1)
    lo = np.minimum(pos.astype(int), n_in - 2)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1 - (pos - lo)
    m[np.arange(n_out), lo + 1] = pos - lo
    return m


def _upsample(field: np.ndarray, height: int, width: int, rows: slice) -> np.ndarray:
    return _interp_matrix(height, field.shape[0])[rows] @ field @ _interp_matrix(width, field.shape[1]).T


def choroid_texture(fields: tuple[np.ndarray, np.ndarray], i: int, top: np.ndarray, bottom: np.ndarray,
                    height: int) -> np.ndarray:
    """Choroid reflectivity modulation (H, W) for B-scan ``i`` between rows ``top`` (below BM) and
    ``bottom`` (sclera): a bright choriocapillaris, then small, deeper large lumens (~0.15 x stroma) with
    soft walls (sharp for the large Haller lumens); 1 outside the choroid."""
    width = top.shape[0]
    r0 = int(np.clip(np.floor(top.min()) - 1, 0, height))
    r1 = int(np.clip(np.ceil(bottom.max()) + 2, r0, height))
    out = np.ones((height, width), np.float32)
    if r1 <= r0:
        return out
    rows = slice(r0, r1)
    d = np.clip((np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - top) / np.maximum(bottom - top, 1.0), 0, 1)
    lumen = lambda f, thr, w: 1.0 / (1.0 + np.exp(-(f - thr) / w))  # noqa: E731 - vessel wall
    big = lumen(_upsample(fields[0][i], height, width, rows), 0.3, 0.08) * np.clip((d - 0.22) / 0.25, 0, 1)
    small = lumen(_upsample(fields[1][i], height, width, rows), 0.5, 0.15) * np.clip((d - 0.07) / 0.1, 0, 1) \
        * np.clip((0.6 - d) / 0.25, 0, 1)
    cc = np.exp(-((d / 0.07) ** 2))
    out[rows] = (1.0 + 0.6 * cc) * (1.0 - 0.85 * np.maximum(big, small))
    return out
