"""One HRF region from a relevance peak: the crop around it, SAM 2's box-prompted mask, or the classical step.

Classical step (no SAM 2 weights): on the Gaussian-smoothed crop (σ = 1 px), the seed moves to the brightest pixel
within ``box`` px of the peak; the region is the connected set of pixels at or above half-way between the crop's
median (background) and the seed's value (a local half-maximum threshold), capped at ``max_area`` px — larger
regions (the peak sits on a bright layer, not a focus) shrink to the ``box`` square around the seed. SAM 2's mask
gets the same cap (``cap_area``): a mask over ``max_area`` px shrinks to the ``box`` square around the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import filters, measure

from oct_wsss.propose.sam2_backend import Sam2Backend

MAX_AREA = 400  # px; the paper's HRF have a median of ~17 px


@dataclass
class Crop:
    """A square window of the B-scan: top-left (y0, x0) and side; clipped so it lies inside the image."""

    y0: int
    x0: int
    size_y: int
    size_x: int

    @classmethod
    def around(cls, peak: tuple[int, int], size: int, shape: tuple[int, int]) -> Crop:
        """The ``size`` x ``size`` window centred on ``peak``, shifted inside an image of ``shape``."""
        sy, sx = min(size, shape[0]), min(size, shape[1])
        y0 = int(np.clip(peak[0] - sy // 2, 0, shape[0] - sy))
        x0 = int(np.clip(peak[1] - sx // 2, 0, shape[1] - sx))
        return cls(y0, x0, sy, sx)

    def take(self, image: np.ndarray) -> np.ndarray:
        """The window's pixels."""
        return image[self.y0:self.y0 + self.size_y, self.x0:self.x0 + self.size_x]

    def paste(self, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A crop-sized mask placed back into a full-size boolean image."""
        full = np.zeros(shape, bool)
        full[self.y0:self.y0 + self.size_y, self.x0:self.x0 + self.size_x] = mask
        return full


def prompt_box(peak: tuple[int, int], crop: Crop, box: float) -> tuple[float, float, float, float]:
    """Square box of ``box`` px (native scale) centred on the peak, in crop coordinates (x0, y0, x1, y1)."""
    cy, cx = peak[0] - crop.y0 + 0.5, peak[1] - crop.x0 + 0.5
    h = box / 2
    return (cx - h, cy - h, cx + h, cy + h)


def box_square(shape: tuple[int, int], seed: tuple[int, int], box: int) -> np.ndarray:
    """The ``box`` x ``box`` square around ``seed`` (clipped to ``shape``): the fallback for an oversized region."""
    square = np.zeros(shape, bool)
    sy, sx = seed
    square[max(0, sy - box // 2):sy + (box + 1) // 2, max(0, sx - box // 2):sx + (box + 1) // 2] = True
    return square


def cap_area(region: np.ndarray, seed: tuple[int, int], box: int, max_area: int = MAX_AREA) -> np.ndarray:
    """``region`` itself, or the ``box`` square around ``seed`` when it exceeds ``max_area`` px (a layer, not a
    focus); the same cap for the classical step and SAM 2."""
    return box_square(region.shape, seed, box) if int(region.sum()) > max_area else region


def classical_region(crop_image: np.ndarray, seed: tuple[int, int], box: int, max_area: int = MAX_AREA) -> np.ndarray:
    """Half-maximum connected region around the brightest pixel near ``seed`` (crop coordinates); see module doc."""
    g = filters.gaussian(crop_image.astype(np.float32), sigma=1.0, preserve_range=True)
    r = max(1, box)
    ys, xs = slice(max(0, seed[0] - r), seed[0] + r + 1), slice(max(0, seed[1] - r), seed[1] + r + 1)
    local = g[ys, xs]
    dy, dx = np.unravel_index(int(np.argmax(local)), local.shape)
    sy, sx = ys.start + int(dy), xs.start + int(dx)
    background, top = float(np.median(g)), float(g[sy, sx])
    if top <= background:
        return box_square(g.shape, (sy, sx), box)
    labels = measure.label(g >= background + 0.5 * (top - background), connectivity=1)
    return cap_area(labels == labels[sy, sx], (sy, sx), box, max_area)


def sam_region(backend: Sam2Backend, crop_image: np.ndarray, peak: tuple[int, int], crop: Crop,
               box: float, max_area: int = MAX_AREA, where: tuple[str, int] | None = None) -> tuple[np.ndarray, float]:
    """SAM 2's highest-scoring mask for the box prompt at the peak (crop size), capped at ``max_area`` px like the
    classical step, and its predicted IoU (``where``: the embedding's disk cache key, ``Sam2Backend.set_image``)."""
    out = backend.box(crop_image, prompt_box(peak, crop, box), where=where)
    seed = (peak[0] - crop.y0, peak[1] - crop.x0)
    return cap_area(out.mask, seed, max(1, round(box)), max_area), out.score
