"""The weight-free propagation engine's steps: register neighbouring B-scans with TV-L1 optical flow (scikit-image),
warp each class's mask along the flow, and refine it on the target B-scan by the lesion's intensity.

Each step carries the previous B-scan's result one B-scan further, so a lesion that grows, shrinks or drifts is
followed; the intensity model (lesion against a ring around it) comes from the grader's own B-scan and never drifts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.registration import optical_flow_tvl1
from skimage.transform import resize, warp

from oct_wsss.preprocess.inputs import to_unit

#: Below this separation (|mean in - mean out| over the pooled std) the intensity says nothing: warp only.
MIN_CONTRAST = 1.5


@dataclass(frozen=True)
class Appearance:
    """Smoothed intensity of a lesion and of a ring around it on the grader's B-scan (means and stds)."""

    mean_in: float
    std_in: float
    mean_out: float
    std_out: float

    @property
    def contrast(self) -> float:
        return abs(self.mean_in - self.mean_out) / max(np.sqrt((self.std_in ** 2 + self.std_out ** 2) / 2), 1e-6)

    def posterior(self, image: np.ndarray) -> np.ndarray:
        """P(lesion | intensity) per pixel from two Gaussians with equal priors."""
        def log_p(mean: float, std: float) -> np.ndarray:
            s = max(std, 1e-3)
            return -0.5 * ((image - mean) / s) ** 2 - np.log(s)

        return 1.0 / (1.0 + np.exp(np.clip(log_p(self.mean_out, self.std_out) - log_p(self.mean_in, self.std_in),
                                           -50, 50)))


def appearance(image: np.ndarray, mask: np.ndarray, ring: int) -> Appearance:
    """Intensity statistics of ``mask`` and of a ``ring``-pixel band around it on the smoothed ``image``."""
    around = ndi.binary_dilation(mask, iterations=ring) & ~mask
    inside, outside = image[mask], image[around] if around.any() else image[~mask]
    return Appearance(float(inside.mean()), float(inside.std()), float(outside.mean()), float(outside.std()))


def flow_between(reference: np.ndarray, moving: np.ndarray, scale: float) -> np.ndarray:
    """Flow (2, H, W) such that ``moving`` sampled at (rows, cols) + flow matches ``reference``; computed at
    ``scale`` of the size (TV-L1 is the slow part) and brought back to full size."""
    shape = reference.shape
    if scale < 1:
        small = tuple(max(8, round(s * scale)) for s in shape)
        flow = optical_flow_tvl1(resize(reference, small, anti_aliasing=True),
                                 resize(moving, small, anti_aliasing=True))
        return np.stack([resize(f, shape, order=1) * (shape[k] / small[k]) for k, f in enumerate(flow)])
    return optical_flow_tvl1(reference, moving)


def warp_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``mask`` (bool) moved along ``flow`` onto the reference B-scan (bilinear, then thresholded at 0.5)."""
    rows, cols = np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), indexing="ij")
    moved = warp(mask.astype(np.float32), np.array([rows + flow[0], cols + flow[1]]), order=1, mode="edge",
                 preserve_range=True)
    return moved > 0.5


def refine_mask(warped: np.ndarray, image: np.ndarray, look: Appearance, reach: int,
           prior: np.ndarray | None = None) -> np.ndarray:
    """Pixels within ``reach`` of the warped mask that look like the lesion (intensity posterior, averaged with the
    student's probability when given, over 0.5), in components that touch the warped mask, holes filled."""
    cues = [look.posterior(image)] if look.contrast >= MIN_CONTRAST else []
    if prior is not None:
        cues.append(np.asarray(prior, np.float32))
    if not cues:
        return warped
    near = ndi.binary_dilation(warped, iterations=reach) if reach else warped
    kept = near & (np.mean(cues, axis=0) > 0.5)
    kept = ndi.binary_opening(kept, iterations=1) if kept.sum() > 50 else kept
    parts, n = ndi.label(kept)
    if n:
        touching = np.unique(parts[warped & kept])
        kept = np.isin(parts, touching[touching > 0])
    return ndi.binary_fill_holes(kept)


def carry(data: np.ndarray, source: int, seeds: dict[int, np.ndarray], order: Sequence[int], alive: set[int], *,
          smooth: float, scale: float, refine: bool, ring: int, reach: int,
          prior: object = None) -> Iterator[tuple[int, dict[int, np.ndarray], dict[int, float]]]:
    """The flow engine for one direction (see ``propagate.flow_engine``): yield (index, masks, confidences)."""
    def prepared(i: int) -> np.ndarray:
        return ndi.gaussian_filter(to_unit(np.asarray(data[i])), smooth)

    previous, masks = prepared(source), {c: np.asarray(m, bool) for c, m in seeds.items()}
    looks = {c: appearance(previous, m, ring) for c, m in masks.items()}
    for index in order:
        current = prepared(index)
        flow = flow_between(current, previous, scale)
        out, conf = {}, {}
        for c in sorted(alive):
            warped = warp_mask(masks[c], flow)
            p = prior(index, c) if prior is not None else None  # type: ignore[operator]
            mask = refine_mask(warped, current, looks[c], reach, p) if refine else warped
            out[c], conf[c] = mask, _confidence(warped, mask, current, previous, flow, looks[c])
        yield index, out, conf
        masks.update(out)
        previous = current



def _confidence(warped: np.ndarray, mask: np.ndarray, current: np.ndarray, previous: np.ndarray, flow: np.ndarray,
                look: Appearance) -> float:
    """Share of the warped mask the refined one keeps (lesion with contrast), else the normalised correlation of the
    warped previous B-scan with the current one around the mask (how well the registration holds there)."""
    if not warped.any():
        return 0.0
    if look.contrast >= MIN_CONTRAST:
        return float((warped & mask).sum() / warped.sum())
    rows, cols = np.meshgrid(np.arange(current.shape[0]), np.arange(current.shape[1]), indexing="ij")
    moved = warp(previous, np.array([rows + flow[0], cols + flow[1]]), order=1, mode="edge")
    near = ndi.binary_dilation(warped, iterations=8)
    a, b = current[near] - current[near].mean(), moved[near] - moved[near].mean()
    return float(max(0.0, (a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-9)))
