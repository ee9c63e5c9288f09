"""Image formation: depth attenuation (shadows), optical blur, speckle, noise floor, 4th-root compression.

Works on one B-scan at a time (cache-friendly, bounded memory); all steps are vectorised numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oct_wsss.synth.anatomy import DISPLAY_A, DISPLAY_O, NOISE_SPECKLE_K, TISSUE_SPECKLE_K

#: Optical point-spread function (Gaussian sigma in px: axial, lateral).
PSF_SIGMA_PX = (0.9, 1.1)
#: Speckle grain: Gaussian correlation of the speckle field (sigma px: axial, lateral).
SPECKLE_SIGMA_PX = (0.6, 0.9)


def _variance_factor(sigma: tuple[float, float]) -> float:
    """Factor by which a Gaussian smoothing of white noise divides its variance (sum of squared weights)."""
    f = 1.0
    for s in sigma:
        delta = np.zeros(41)
        delta[20] = 1.0
        f *= float(np.sum(ndimage.gaussian_filter1d(delta, s) ** 2))
    return f


_SPECKLE_VAR = _variance_factor(SPECKLE_SIGMA_PX)


def correlated_gamma(rng: np.random.Generator, shape: tuple[int, int], k: float) -> np.ndarray:
    """Unit-mean speckle with variance 1/k and a grain of ``SPECKLE_SIGMA_PX`` (smoothed white gamma)."""
    k_raw = k * _SPECKLE_VAR
    field = rng.standard_gamma(k_raw, size=shape, dtype=np.float32) / np.float32(k_raw)
    return ndimage.gaussian_filter(field, SPECKLE_SIGMA_PX, mode="reflect", truncate=3.0)


def attenuate(refl: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Beer-Lambert depth attenuation along each A-scan: what lies below dense tissue is shadowed."""
    depth = np.cumsum(mu, axis=0, dtype=np.float32) - mu * np.float32(0.5)
    return refl * np.exp(-depth)


def form_image(rng: np.random.Generator, refl: np.ndarray, noise_floor: np.ndarray,
               gain: float, offset: float) -> np.ndarray:
    """Blur, speckle, add the noise floor and compress like a Spectralis export (uint8 = A*I**0.25 - O)."""
    signal = ndimage.gaussian_filter(refl, PSF_SIGMA_PX, mode="nearest", truncate=3.0)
    intensity = signal * correlated_gamma(rng, refl.shape, TISSUE_SPECKLE_K)
    intensity += noise_floor * correlated_gamma(rng, refl.shape, NOISE_SPECKLE_K)
    out = np.sqrt(np.sqrt(intensity)) * np.float32(DISPLAY_A * gain) - np.float32(DISPLAY_O + offset)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def noise_floor_profile(height: int) -> np.ndarray:
    """Noise floor vs depth (column vector): flat over the top third, falling to 0.35 at the bottom
    (Duke: vitreous mean 24-29 at rows 0-200, deep choroid/sclera mean 10-15 at rows 350-496)."""
    y = np.arange(height, dtype=np.float32) / max(height - 1, 1)
    return (1.0 - 0.65 * np.clip((y - 0.35) / 0.65, 0, 1))[:, None].astype(np.float32)
