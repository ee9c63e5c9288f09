"""DME-like cyst clusters: large confluent, septated intraretinal cysts between the ILM and the ELM.

Each cluster is 2-6 overlapping ellipsoids in (x mm, z mm, v) where v is the depth as a share of the ILM-ELM
thickness, so a cyst stays inside the retina however much it swells; lobes meet at thin bright septa.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import Grid

#: Clusters per volume that holds them.
DME_CLUSTERS = (1, 3)
#: Lobes per cluster, and the depth share (v) a lobe keeps clear of the ILM and of the ELM.
DME_LOBES, V_MARGIN = (3, 6), 0.05
#: Septum half-width in px where two lobes' normalised distances meet (then closed by one px, so it separates).
SEPTUM_PX = 1.2


def plan_dme(rng: np.random.Generator, grid: Grid, h: float) -> list[dict]:
    """Draw 1-3 clusters near the fovea (JSON-serialisable); ``h`` scales px heights to the axial spacing."""
    zmax, xmax = float(np.abs(grid.z).max()), float(np.abs(grid.x).max())
    dz = float(grid.z[1, 0] - grid.z[0, 0]) if grid.z.shape[0] > 1 else 0.12
    out = []
    for c in range(int(rng.integers(DME_CLUSTERS[0], DME_CLUSTERS[1] + 1))):
        r, a = (0.2 if c == 0 else 1.0) * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        zc = float(np.clip(grid.fovea[0] + r * np.sin(a), -0.8 * zmax, 0.8 * zmax))
        xc = float(np.clip(grid.fovea[1] + r * np.cos(a), -0.8 * xmax, 0.8 * xmax))
        severe = rng.uniform() < 0.35  # a central cyst filling most of the retinal thickness
        rx = float(rng.uniform(0.25, 0.6) if severe else rng.uniform(0.12, 0.35))
        lobes = [{"z_mm": zc, "x_mm": xc, "rx_mm": rx, "rz_mm": float(max(rx * rng.uniform(0.6, 1.2), 1.5 * dz)),
                  "v": float(rng.uniform(0.45, 0.6)), "hv": float(rng.uniform(0.33, 0.45) if severe
                                                             else rng.uniform(0.15, 0.3))}]
        for _ in range(int(rng.integers(DME_LOBES[0], DME_LOBES[1] + 1)) - 1):
            s, a = rng.uniform(0.55, 1.0), rng.uniform(0, 2 * np.pi)
            d = rx * rng.uniform(0.8, 1.4)
            lobes.append({"z_mm": float(zc + 0.15 * d * np.sin(a)), "x_mm": float(xc + d * np.cos(a)),
                          "rx_mm": rx * s, "rz_mm": float(max(lobes[0]["rz_mm"] * rng.uniform(0.6, 1.0), 1.2 * dz)),
                          "v": float(rng.uniform(0.25, 0.75)), "hv": float(lobes[0]["hv"] * rng.uniform(0.4, 0.9))})
        for lobe in lobes:  # keep every lobe strictly between the ILM and the ELM
            lobe["hv"] = float(min(lobe["hv"], lobe["v"] - V_MARGIN, 1 - V_MARGIN - lobe["v"]))
        swell = float(rng.uniform(50, 130) if severe else rng.uniform(15, 50)) * h
        out.append({"kind": "dme", "z_mm": zc, "x_mm": xc, "rx_mm": rx, "swell_px": swell, "lobes": lobes})
    return out


def swelling(grid: Grid, cluster: dict) -> np.ndarray:
    """Extra retinal thickness (px) the cluster causes: a smooth bump over its lobes, (n, W)."""
    out = np.zeros((grid.z.shape[0], grid.x.shape[1]), np.float32)
    for lobe in cluster["lobes"]:
        rho2 = (((grid.x - lobe["x_mm"]) / (1.5 * lobe["rx_mm"])) ** 2
                + ((grid.z - lobe["z_mm"]) / (1.5 * lobe["rz_mm"])) ** 2)
        out = np.maximum(out, cluster["swell_px"] * lobe["hv"] / cluster["lobes"][0]["hv"] * np.exp(-1.5 * rho2))
    return out


def masks(i: int, height: int, surf: dict[str, np.ndarray], clusters: list[dict],
          grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(cyst, septum) masks (H, W) of B-scan ``i``: cyst pixels are inside a lobe and off every septum."""
    y = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    ilm, elm = surf["ILM"][i], surf["ELM"][i]
    v = (y - ilm) / np.maximum(elm - ilm, 1.0)
    thick = np.maximum(elm - ilm, 1.0)
    cyst = np.zeros((height, grid.x.shape[1]), bool)
    septum = np.zeros_like(cyst)
    z = float(grid.z[i, 0])
    for cluster in clusters:
        qs = []
        for lobe in cluster["lobes"]:
            dz2 = ((z - lobe["z_mm"]) / lobe["rz_mm"]) ** 2
            if dz2 >= 1:
                continue
            lat = ((grid.x[0] - lobe["x_mm"]) / lobe["rx_mm"]) ** 2 + dz2
            q = np.sqrt(lat[None, :] + ((v - lobe["v"]) / lobe["hv"]) ** 2)
            qs.append((q, lobe["hv"] * thick[None, :]))
        if not qs:
            continue
        inside = [q < 1 for q, _ in qs]
        cyst |= np.logical_or.reduce(inside)
        for a in range(len(qs)):
            for b in range(a + 1, len(qs)):
                (qa, ha), (qb, hb) = qs[a], qs[b]
                near = np.abs(qa - qb) * np.minimum(ha, hb) < SEPTUM_PX
                septum |= near & inside[a] & inside[b]
    inner = (v > 0) & (v < 1)
    septum = ndimage.binary_dilation(septum) & cyst & inner
    return cyst & ~septum & inner, septum
