"""Device-look randomisation: Spectralis-, Cirrus- and Topcon-like display, speckle, blur, lateral sampling,
vertical placement, shadows, vignetting, padding rows and saturation, each drawn from a seed.

``make_volume(look=...)`` uses it: display and speckle change image formation, shadows and vignetting change the
signal, placement moves the anatomy before rendering (the rows it vacates are real vitreous or choroid), and lateral
resampling and padding act on image and labels together so the mask stays aligned.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import BAND_P50, NOISE_SPECKLE_K, TISSUE_SPECKLE_K

#: The calibrated Spectralis look (``noise.form_image`` defaults): no randomisation.
DEFAULT_LOOK = {"profile": "spectralis", "exponent": 0.25, "gain": 1.0, "offset": 0.0, "snr": 1.0,
                "tissue_k": TISSUE_SPECKLE_K, "noise_k": NOISE_SPECKLE_K, "speckle_scale": 1.0, "psf_scale": 1.0,
                "floor_falloff": 0.65, "zeros": True, "n_ascans": None, "bm_row_fraction": None, "vignetting": 0.0,
                "shadows": 0.0, "padding": 0.0, "fluid_p50": BAND_P50["FLUID"]}
#: Per profile, (low, high) of each randomised quantity (``snr`` log-uniform); fixed values as they are. ``snr``:
#: tissue signal over the noise floor (Bonn and Keshav: dark floor, bright retina). Spectralis: 4th-root display,
#: exact zeros, frame averaging; Cirrus-like: fewer frames (noisier, coarser grain), raised floor, no zeros;
#: Topcon-like: heavy averaging (smooth), more blur, darker floor and brighter tissue.
PROFILES: dict[str, dict] = {
    "spectralis": {"exponent": (0.23, 0.28), "gain": (0.9, 1.2), "offset": (0.0, 32.0), "snr": (0.7, 16.0),
                   "tissue_k": (2.3, 4.0),
                   "noise_k": (3.0, 6.0), "speckle_scale": (0.85, 1.25), "psf_scale": (0.8, 1.4), "zeros": True},
    "cirrus": {"exponent": (0.26, 0.34), "gain": (0.85, 1.15), "offset": (-12.0, 12.0), "snr": (0.6, 3.0),
               "tissue_k": (1.4, 2.4),
               "noise_k": (1.5, 3.0), "speckle_scale": (1.1, 1.6), "psf_scale": (0.9, 1.5), "zeros": False},
    "topcon": {"exponent": (0.22, 0.3), "gain": (0.95, 1.2), "offset": (5.0, 32.0), "snr": (1.0, 10.0),
               "tissue_k": (4.5, 9.0),
               "noise_k": (5.0, 10.0), "speckle_scale": (1.2, 1.8), "psf_scale": (1.2, 2.0), "zeros": True},
}
#: Lateral sampling (A-scans per B-scan), placement of BM as a share of the height, and the per-B-scan artefacts:
#: vignetting depth, probability of a shadow and of 255 padding rows.
N_ASCANS, BM_ROW_FRACTION = (500, 1024), (0.4, 0.85)
VIGNETTING, SHADOW_P, PADDING_P = (0.0, 0.45), 0.5, 0.25
#: Display median of fluid content (SRF, IRF, serous PED): noise-dark (20, the calibrated look) to faintly turbid,
#: as Duke's cysts (fluid median 46 with rims) are barely darker than its ONL (50).
FLUID_P50 = (20.0, 42.0)


def sample_look(rng: np.random.Generator, profile: str | None = None) -> dict:
    """A random device look (JSON-serialisable); ``profile`` None picks one of ``PROFILES``."""
    name = profile or str(rng.choice(list(PROFILES)))
    if name not in PROFILES:
        raise ValueError(f"unknown device look {name!r}; known: {', '.join(PROFILES)} or 'random'")
    look = dict(DEFAULT_LOOK, profile=name)
    for key, value in PROFILES[name].items():
        if key == "snr":
            look[key] = float(np.exp(rng.uniform(*np.log(value))))
        else:
            look[key] = float(rng.uniform(*value)) if isinstance(value, tuple) else value
    look["floor_falloff"] = float(rng.uniform(0.4, 0.8))
    look["n_ascans"] = int(rng.integers(N_ASCANS[0], N_ASCANS[1] + 1))
    look["bm_row_fraction"] = float(rng.uniform(*BM_ROW_FRACTION))
    look["vignetting"] = float(rng.uniform(*VIGNETTING))
    look["shadows"], look["padding"] = SHADOW_P, PADDING_P
    look["fluid_p50"] = float(rng.uniform(*FLUID_P50))
    return look


def resolve(look: str | dict | None, rng: np.random.Generator) -> dict:
    """None: the calibrated Spectralis look; "random" or a profile name: drawn from ``rng``; a dict: as given."""
    if look is None:
        return dict(DEFAULT_LOOK)
    if isinstance(look, dict):
        unknown = set(look) - set(DEFAULT_LOOK)
        if unknown:
            raise ValueError(f"unknown device-look keys {sorted(unknown)}; known: {sorted(DEFAULT_LOOK)}")
        return dict(DEFAULT_LOOK, **look)
    return sample_look(rng, None if look == "random" else look)


def signal_factor(rng: np.random.Generator, look: dict, height: int, ilm: np.ndarray) -> np.ndarray:
    """Multiplicative (H, W) factor on the signal: lateral vignetting and, sometimes, a shadow below the ILM
    (a vessel, floater or media opacity: 0.25-0.8 of the signal over 4-40 columns)."""
    width = ilm.shape[0]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    factor = np.broadcast_to(1.0 - look["vignetting"] * x**4, (height, width)).astype(np.float32)
    if rng.uniform() < look["shadows"]:
        for _ in range(int(rng.integers(1, 4))):
            w = int(rng.integers(4, 41))
            c = int(rng.integers(0, max(width - w, 1)))
            cols = np.zeros(width, np.float32)
            cols[c:c + w] = 1.0 - rng.uniform(0.2, 0.75)
            cols = ndimage.gaussian_filter1d(cols, 1.5)
            below = np.arange(height, dtype=np.float32)[:, None] > ilm[None, :]
            factor = factor * np.where(below, 1.0 - cols[None, :], 1.0)
    return factor


def resample_lateral(image: np.ndarray, labels: np.ndarray, layers: dict[str, np.ndarray],
                     n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """B-scans (..., H, W) to ``n`` A-scans over the same field: image linearly, labels by nearest neighbour,
    layer rows (..., W) linearly, all from the same column positions."""
    width = image.shape[-1]
    pos = (np.arange(n) + 0.5) * width / n - 0.5  # centres of the new columns in old column units
    lo = np.clip(np.floor(pos).astype(int), 0, width - 1)
    hi = np.clip(lo + 1, 0, width - 1)
    t = np.clip(pos - lo, 0.0, 1.0).astype(np.float32)
    near = np.clip(np.rint(pos).astype(int), 0, width - 1)
    img = image[..., lo] * (1 - t) + image[..., hi] * t
    out_image = np.clip(np.rint(img), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else img
    return out_image, labels[..., near], {k: v[..., lo] * (1 - t) + v[..., hi] * t for k, v in layers.items()}


def pad_rows(rng: np.random.Generator, look: dict, image: np.ndarray, labels: np.ndarray) -> None:
    """Sometimes set 2-40 rows at the top or bottom to 255 and background, like Duke's padding (in place)."""
    if rng.uniform() >= look["padding"]:
        return
    k = int(rng.integers(2, 41))
    rows = slice(0, k) if rng.uniform() < 0.5 else slice(image.shape[0] - k, None)
    image[rows], labels[rows] = 255, 0
