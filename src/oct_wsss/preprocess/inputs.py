"""Turning a B-scan into network input: intensities in [0, 1], resizing both ways, and the retina mask.

Training and proposing share these functions so that a checkpoint sees the same preprocessing in both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, transform

#: Pixels this bright are border artefacts (METHODS.md §1, 250 of 255).
SATURATED = 250 / 255
#: Outside-retina weight of the soft mask (the paper's 0.5).
OUTSIDE_WEIGHT = 0.5
#: Tissue threshold as a fraction of the smoothed B-scan's Otsu level (scale-free, unlike the reference's fixed 30).
LEVEL = 0.75


def to_unit(bscan: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 / 255, other integers / their dtype's range in use, floats clipped; NaN -> 0."""
    a = np.asarray(bscan)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(np.asarray(bscan).dtype, np.integer):
        top = float(a.max()) if a.size else 0.0
        return a / top if top > 0 else a
    return np.clip(a, 0.0, 1.0)


def resize(image: np.ndarray, size: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize the last two axes to ``size`` (order 1 = bilinear for images and scores, 0 = nearest for labels)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = transform.resize(image, (*image.shape[:-2], *size), order=order, preserve_range=True,
                           anti_aliasing=order > 0 and any(s < t for s, t in zip(size, image.shape[-2:], strict=True)))
    return out.astype(image.dtype)


def retina_mask(bscan: np.ndarray) -> np.ndarray:
    """Boolean mask of the tissue band (retina down to the choroid) of one B-scan in [0, 1] (or uint8).

    The reference recipe re-expressed with scikit-image and made scale-free: drop saturated border pixels,
    3x3 minimum filter, median 5x5, a threshold at ``LEVEL`` x the Otsu level of the smoothed image (the reference's
    fixed 30 after x2 contrast lets speckled vitreous through on Spectralis and the phantom), 15x15 closing, then the
    largest connected region with its holes filled.
    """
    x = to_unit(bscan)
    if x.ndim != 2:
        raise ValueError(f"retina_mask takes one 2-D B-scan; got shape {x.shape}")
    if x.size == 0 or float(x.max()) <= 0:
        return np.zeros(x.shape, bool)
    x = np.where(x > SATURATED, 0.0, x)
    x = ndi.minimum_filter(x, size=3)
    x = ndi.median_filter(x, size=5)
    if float(x.max()) <= float(x.min()):
        return np.zeros(x.shape, bool)
    level = LEVEL * filters.threshold_otsu(x)
    mask = morphology.closing(x > level, morphology.footprint_rectangle((15, 15)))
    labelled = measure.label(mask)
    if labelled.max() == 0:
        return mask
    largest = np.argmax(np.bincount(labelled.ravel())[1:]) + 1
    return ndi.binary_fill_holes(labelled == largest)


def soft_mask(mask: np.ndarray) -> np.ndarray:
    """float32 weight map: 1 inside the retina, 0.5 outside (CAMs outside are damped, not erased)."""
    return np.where(mask, 1.0, OUTSIDE_WEIGHT).astype(np.float32)
