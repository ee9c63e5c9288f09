"""Healthy macular anatomy of the phantom: per-volume geometry, layer thickness maps and band table.

Thicknesses and band brightness are calibrated on real Spectralis scans by
``training/calibrate_synth.py`` (numbers quoted below and in ``docs/synthetic.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from oct_wsss.volume import DEFAULT_SPACING_MM

#: Axial pixel size the calibration numbers below were measured at (Spectralis, mm).
CALIBRATION_AXIAL_MM = DEFAULT_SPACING_MM[1]

# Duke DME (Chiu 2015), 55 B-scans, fluid-free columns: median layer thickness in px
# (NFL 9, GCL+IPL 16, INL 8, OPL 8, ONL+ISM 20, ISE 8, OS+RPE 7; ILM-BM 77, foveal ~65).
# The phantom splits the Duke bands: GCL+IPL = 9 + 7, ONL+ISM = ONL 17 + myoid 3,
# ISE = EZ 4 + OS 4, OS+RPE = IZ 2 + RPE 5.
PARAFOVEAL_THICKNESS_PX = {
    "NFL": 9.0, "GCL": 9.0, "IPL": 7.0, "INL": 8.0, "OPL": 8.0, "ONL": 17.0,
    "MYOID": 3.0, "EZ": 4.0, "OS": 4.0, "IZ": 2.0, "RPE": 5.0,
}
#: Duke band-core median uint8 intensity (middle half of each band): NFL 132, GCL+IPL 92, INL 70,
#: OPL 78, ONL+ISM 50, ISE 119, OS+RPE 160; fluid (all pixels, rims included) 46 -- the interior is set to 20,
#: i.e. no signal above the noise floor;
#: choroid stroma set so that 0-60 px below BM (with lumens) averages ~53 as in Duke.
#: Thin bands (EZ, RPE) are set above their Duke band-core value because the PSF blurs them down; the
#: OS is darker than the EZ and the RPE so that EZ and IZ+RPE show as two lines with a dark gap.
BAND_P50 = {
    "NFL": 138.0, "GCL": 95.0, "IPL": 105.0, "INL": 78.0, "OPL": 87.0, "ONL": 57.0,
    "MYOID": 60.0, "EZ": 185.0, "OS": 80.0, "IZ": 130.0, "RPE": 194.0, "BM": 130.0,
    "FLUID": 20.0, "CHOROID": 88.0, "SCLERA": 50.0,
}
#: Lateral variation per band (relative sd): thickness on a ~1.5 mm scale, brightness on a ~1 mm scale;
#: irregularity: each interior boundary moves by this share of the thinner neighbouring band on a
#: ~0.2 mm scale. Smooth maps in en-face mm, so neighbouring B-scans agree.
THICKNESS_VARIATION, IRREGULARITY, BRIGHTNESS_VARIATION = 0.08, 0.12, 0.07
#: Display model fitted on the Duke vitreous (mean 25.1, sd 16.3; 12.2 % exact zeros, a separate
#: population: almost no values 1-4; non-zero p5/p50/p95 11/27/51): ``uint8 = clip(A * I**0.25 - O)``
#: with frame-averaged noise of unit mean, gamma shape ``NOISE_SPECKLE_K``; a pixel is exported as 0
#: where its single-frame signal (exponential) falls under ``NOISE_ZERO_THRESHOLD`` x the noise floor.
DISPLAY_A, DISPLAY_O = 98.1, 67.4
NOISE_SPECKLE_K, NOISE_ZERO_THRESHOLD = 4.4, 0.113
#: Tissue speckle gamma shape from Duke layer sd / (median + O) = 0.153.
TISSUE_SPECKLE_K = 2.9
# Bonn drusen volume (70 Spectralis B-scans, expert lines): BM row median 253 of 496; BM edge-vs-centre
# quadratic term median -35 px [p10 -38, p90 -29]; linear tilt median 0.8 px [-0.4, 3.4].
BM_ROW_FRACTION = 253 / 496
BM_CURVATURE_PX = 35.0
#: Attenuation per px (intensity, round trip) per band: weak in the retina, strong in RPE and choroid.
MU_PER_PX = {"retina": 0.004, "RPE": 0.06, "BM": 0.03, "CHOROID": 0.011, "SCLERA": 0.02, "FLUID": 0.0005}

#: Bands from the ILM down. "SRF" and "SUBRPE" are empty in health and filled by lesions.
BANDS = ("NFL", "GCL", "IPL", "INL", "OPL", "ONL", "MYOID", "EZ", "OS", "IZ", "SRF", "RPE", "SUBRPE", "BM", "CHOROID")
#: Boundary names: the top of each band in ``BANDS`` then the choroid-sclera interface.
BOUNDARIES = ("ILM", "NFL_GCL", "GCL_IPL", "IPL_INL", "INL_OPL", "OPL_ONL", "ELM", "EZ", "OS", "IZ",
              "SRF", "RPE", "RPE_BOTTOM", "BM", "BM_BOTTOM", "CSI")


def reflectivity(p50: float) -> float:
    """Linear reflectivity (units of the noise floor) whose speckled display median is about ``p50``
    once the unit-mean noise floor is added (0 for anything as dark as the noise alone)."""
    median_speckle = special.gammaincinv(TISSUE_SPECKLE_K, 0.5) / TISSUE_SPECKLE_K
    return float(max(((p50 + DISPLAY_O) / DISPLAY_A) ** 4 - 1.0, 0.0) / median_speckle)


@dataclass
class Grid:
    """En-face sample positions in mm relative to the scan centre: z (n, 1) and x (1, W)."""

    z: np.ndarray
    x: np.ndarray
    fovea: tuple[float, float]
    nasal_sign: float
    px_per_um: float

    @property
    def r(self) -> np.ndarray:
        """Distance from the fovea (mm), (n, W)."""
        return np.hypot(self.z - self.fovea[0], self.x - self.fovea[1])


def make_grid(n: int, width: int, spacing_mm: tuple[float, float, float], laterality: str,
              fovea: tuple[float, float]) -> Grid:
    """En-face grid of B-scan positions and A-scan positions; OD has nasal to the right (+x)."""
    z = ((np.arange(n) - (n - 1) / 2) * spacing_mm[0])[:, None]
    x = ((np.arange(width) - (width - 1) / 2) * spacing_mm[2])[None, :]
    return Grid(z, x, fovea, 1.0 if laterality == "OD" else -1.0, 1e-3 / spacing_mm[1])


def sample_geometry(rng: np.random.Generator, height: int) -> dict:
    """Per-volume random shape parameters (JSON-serialisable)."""
    return {
        "fovea_mm": [float(rng.normal(0, 0.12)), float(rng.normal(0, 0.15))],
        "bm_row": float(height * np.clip(rng.normal(BM_ROW_FRACTION + 0.04, 0.04), 0.42, 0.66)),
        "curvature_px": float(np.clip(rng.normal(BM_CURVATURE_PX * 0.8, 10), 5, 55)),
        "curvature_z_px": float(np.clip(rng.normal(BM_CURVATURE_PX * 0.6, 8), 0, 45)),
        "tilt_px": float(rng.normal(0, 14)),
        "tilt_z_px": float(rng.normal(0, 10)),
        "thickness_scale": float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15)),
        "band_jitter": {b: float(rng.normal(1.0, 0.06)) for b in PARAFOVEAL_THICKNESS_PX},
        "choroid_px": float(rng.uniform(55, 85)),
        "wobble": [float(v) for v in rng.normal(0, 1.5, 4)],
        "texture_seed": int(rng.integers(2**31)),
    }


def smooth_field(rng: np.random.Generator, grid: Grid, wavelength_mm: float, n_modes: int = 8) -> np.ndarray:
    """Zero-mean, unit-sd smooth random map over the en-face grid (random plane waves in mm), (n, W)."""
    k = 2 * np.pi / wavelength_mm * rng.uniform(0.6, 1.4, (n_modes, 1, 1))
    a, phase = rng.uniform(0, 2 * np.pi, (2, n_modes, 1, 1))
    waves = np.cos(k * (np.cos(a) * grid.x[None] + np.sin(a) * grid.z[None]) + phase)
    return (waves.sum(axis=0) * np.sqrt(2.0 / n_modes)).astype(np.float32)


def texture_maps(grid: Grid, geom: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per band, (n, W) maps: 'thickness' factor, 'irregularity' of its bottom boundary (unit field,
    clipped to +-2) and 'brightness' factor (mean 1, about +-7 %)."""
    rng = np.random.default_rng(geom["texture_seed"])
    out: dict[str, dict[str, np.ndarray]] = {"thickness": {}, "irregularity": {}, "brightness": {}}
    for b in PARAFOVEAL_THICKNESS_PX:
        out["thickness"][b] = np.clip(1.0 + THICKNESS_VARIATION * smooth_field(rng, grid, 1.5), 0.7, 1.3)
        out["irregularity"][b] = np.clip(smooth_field(rng, grid, 0.2, 12), -2, 2)
        out["brightness"][b] = np.clip(1.0 + BRIGHTNESS_VARIATION * smooth_field(rng, grid, 1.0), 0.8, 1.2)
    return out


def thickness_maps(grid: Grid, geom: dict, texture: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Band thickness (px) over the en-face grid: foveal pit, ONL/OS thickening, an NFL thick toward the
    disc (nasal) and along the arcades and thin temporally, lateral variation and boundary irregularity."""
    r = grid.r
    nasal = grid.nasal_sign * (grid.x - grid.fovea[1]) + 0 * grid.z
    arcade = np.exp(-(((np.abs(grid.z - grid.fovea[0]) - 1.8) / 0.8) ** 2)) * np.clip(0.5 - nasal / 3, 0, 1)
    pit = lambda r0: 1.0 - np.exp(-((r / r0) ** 2))  # noqa: E731 - local shape helper
    ring = lambda peak, w: np.exp(-(((r - peak) / w) ** 2))  # noqa: E731
    outer = 1.0 - 0.2 * np.clip((r - 2.0) / 2.0, 0, 1)
    shape = {
        "NFL": pit(0.9) * (0.7 + 0.15 * r) * (1 + 0.8 * np.clip(nasal / 2.5, -0.6, 1.2) + 0.6 * arcade),
        "GCL": pit(0.5) * (1 + 0.5 * ring(1.1, 0.6)) * outer,
        "IPL": pit(0.5) * (1 + 0.2 * ring(1.1, 0.6)) * outer,
        "INL": pit(0.45) * (1 + 0.25 * ring(1.0, 0.6)),
        "OPL": 0.4 + 0.6 * pit(0.6),
        "ONL": 1.0 + 1.1 * np.exp(-((r / 0.55) ** 2)),
        "MYOID": np.ones_like(r),
        "EZ": np.ones_like(r),
        "OS": 1.0 + 0.5 * np.exp(-((r / 0.4) ** 2)),
        "IZ": np.ones_like(r),
        "RPE": np.ones_like(r),
    }
    scale = geom["thickness_scale"] * grid.px_per_um * CALIBRATION_AXIAL_MM * 1e3
    out = {b: (PARAFOVEAL_THICKNESS_PX[b] * geom["band_jitter"][b] * scale * s
               * texture["thickness"][b]).astype(np.float32) for b, s in shape.items()}
    names = list(shape)
    for upper, lower in zip(names[:-1], names[1:], strict=True):  # move the interior boundary; the ILM and BM stay
        shift = IRREGULARITY * np.minimum(out[upper], out[lower]) * texture["irregularity"][upper]
        out[upper], out[lower] = out[upper] + shift, out[lower] - shift
    out["BM"] = np.full_like(r, 1.5 * scale, dtype=np.float32)
    out["CHOROID"] = (geom["choroid_px"] * scale * (1 + 0.15 * np.exp(-((r / 1.5) ** 2)))).astype(np.float32)
    return out


def bm_surface(grid: Grid, geom: dict) -> np.ndarray:
    """Depth (row) of Bruch's membrane: bowl-shaped curvature, tilt and a gentle wobble, (n, W)."""
    half_x = max(float(np.abs(grid.x).max()), 1e-6)
    half_z = max(float(np.abs(grid.z).max()), 1e-6)
    xn, zn = grid.x / half_x, grid.z / half_z
    w = geom["wobble"]
    bm = (geom["bm_row"] - geom["curvature_px"] * xn**2 - geom["curvature_z_px"] * zn**2
          + geom["tilt_px"] * xn + geom["tilt_z_px"] * zn
          + w[0] * np.sin(2.1 * xn + w[1]) + w[2] * np.sin(1.7 * zn + w[3]))
    return bm.astype(np.float32)


#: Share of the remaining sub-RPE lift (drusen, PED) each band above the ELM absorbs by thinning,
#: bottom up: the lift decays upward, so the ILM barely moves over drusen (``boundaries``).
LIFT_ABSORPTION = {"ONL": 0.8, "OPL": 0.5, "INL": 0.5, "IPL": 0.5, "GCL": 0.5, "NFL": 0.5}


def boundaries(bm: np.ndarray, thickness: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stack the bands upward from BM; return each band top. A sub-RPE elevation lifts the RPE and
    the photoreceptors up to the ELM fully; each band above absorbs part of the rest by thinning
    (at most its ``LIFT_ABSORPTION`` share of its thickness), so the displacement decays upward."""
    out: dict[str, np.ndarray] = {}
    top = bm.copy()
    lift = thickness["SUBRPE"]
    for band, name in zip(reversed(BANDS[:BANDS.index("BM")]), reversed(BOUNDARIES[:BOUNDARIES.index("BM")]),
                          strict=False):
        t = thickness[band]
        if band in LIFT_ABSORPTION:
            absorbed = LIFT_ABSORPTION[band] * t * np.tanh(lift / np.maximum(t, 1e-3))
            t, lift = t - absorbed, lift - absorbed
        top = top - t
        out[name] = top
    out["BM"] = bm
    out["BM_BOTTOM"] = bm + thickness["BM"]
    out["CSI"] = out["BM_BOTTOM"] + thickness["CHOROID"]
    return {name: out[name] for name in BOUNDARIES}
