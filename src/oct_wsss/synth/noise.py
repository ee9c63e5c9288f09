"""Image formation: depth attenuation (shadows), optical blur, speckle, noise floor, 4th-root compression.

Works on one B-scan at a time (cache-friendly, bounded memory); all steps are vectorised numpy/scipy.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import DISPLAY_A, DISPLAY_O, NOISE_ZERO_THRESHOLD

#: Optical point-spread function (Gaussian sigma in px: axial, lateral).
PSF_SIGMA_PX = (0.6, 0.8)
#: Speckle grain (Gaussian correlation sigma in px: axial, lateral), chosen so that the display-domain
#: autocorrelation at lags 1 and 2 px comes near Duke's (vitreous 0.73/0.38 axial, 0.65/0.40 lateral;
#: ONL 0.87/0.65 axial, 0.90/0.77 lateral: the tissue grain is coarser and elongated laterally).
TISSUE_SPECKLE_SIGMA_PX = (1.3, 1.8)
NOISE_SPECKLE_SIGMA_PX = (1.1, 1.0)
#: Intensity (noise-floor units) a changed display exponent keeps at its Spectralis value (mid-retina).
I_REF = 13.0


@functools.cache
def _unit_gain(sigma: tuple[float, float]) -> np.float32:
    """1 / sqrt(sum of squared weights) of the Gaussian smoothing: restores unit variance."""
    delta = np.zeros((41, 41))
    delta[20, 20] = 1.0
    return np.float32(1.0 / np.sqrt(np.sum(ndimage.gaussian_filter(delta, sigma, truncate=2.5) ** 2)))


def _unit_field(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian random field with unit variance and a Gaussian correlation of ``sigma`` px."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, truncate=2.5)
    return field * _unit_gain(sigma)


def _gamma(g: np.ndarray, k: float) -> np.ndarray:
    """Unit-mean gamma(k) from a standard normal field (Wilson-Hilferty transform; keeps the correlation)."""
    c = np.float32(1.0 / (9.0 * k))
    return np.maximum(1.0 - c + np.sqrt(c) * g, 0.0) ** 3


def attenuate(refl: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Beer-Lambert depth attenuation along each A-scan: what lies below dense tissue is shadowed."""
    depth = np.cumsum(mu, axis=0, dtype=np.float32) - mu * np.float32(0.5)
    return refl * np.exp(-depth)


def form_image(rng: np.random.Generator, refl: np.ndarray, noise_floor: np.ndarray, look: dict) -> np.ndarray:
    """Blur, speckle, add the noise floor and compress like a device export (``look``: ``synth.look``; the
    calibrated Spectralis look is uint8 = A*I**0.25 - O with sub-threshold single-frame pixels exported as 0)."""
    shape = refl.shape
    psf = tuple(s * look["psf_scale"] for s in PSF_SIGMA_PX)
    grain = tuple(s * look["speckle_scale"] for s in TISSUE_SPECKLE_SIGMA_PX)
    signal = ndimage.gaussian_filter(refl, psf, mode="nearest", truncate=2.5)
    signal *= _gamma(_unit_field(rng, shape, grain), look["tissue_k"])
    g1 = _unit_field(rng, shape, NOISE_SPECKLE_SIGMA_PX)
    g2 = _unit_field(rng, shape, NOISE_SPECKLE_SIGMA_PX)
    frame = signal / noise_floor + _gamma(np.float32(0.5) * g1 + np.float32(0.75 ** 0.5) * g2, 1.0)
    intensity = np.maximum(signal + noise_floor * _gamma(g1, look["noise_k"]), 0.0)  # band sums may round below 0
    e = look["exponent"]
    if e == 0.25:
        compressed = np.sqrt(np.sqrt(intensity))
    else:
        compressed = intensity ** np.float32(e) * np.float32(I_REF ** (0.25 - e))
    out = compressed * np.float32(DISPLAY_A * look["gain"]) - np.float32(DISPLAY_O + look["offset"])
    if look["zeros"]:
        out[frame < NOISE_ZERO_THRESHOLD] = 0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def noise_floor_profile(height: int, falloff: float = 0.65) -> np.ndarray:
    """Noise floor vs depth (column vector): flat over the top third, falling by ``falloff`` to the bottom
    (Duke: vitreous mean 24-29 at rows 0-200, deep choroid/sclera mean 10-15 at rows 350-496)."""
    y = np.arange(height, dtype=np.float32) / max(height - 1, 1)
    return (1.0 - falloff * np.clip((y - 0.35) / 0.65, 0, 1))[:, None].astype(np.float32)
