"""Turning a B-scan into network input: intensities in [0, 1], resizing both ways, and the retina mask.

Training and proposing share these functions so that a checkpoint sees the same preprocessing in both.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage import filters, morphology, transform

#: Pixels this bright are border artefacts (METHODS.md §1, 250 of 255).
SATURATED = 250 / 255
#: Outside-retina weight of the soft mask (the paper's 0.5).
OUTSIDE_WEIGHT = 0.5
#: Tissue threshold as a fraction of the smoothed B-scan's Otsu level (scale-free, unlike the reference's fixed 30).
LEVEL = 0.75
#: Histogram bins of the Otsu level (scikit-image's default).
OTSU_BINS = 256


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
    largest connected region with its holes filled. :func:`retina_masks` does the same for a batch.
    """
    x = to_unit(bscan)
    if x.ndim != 2:
        raise ValueError(f"retina_mask takes one 2-D B-scan; got shape {x.shape}")
    return retina_masks(torch.from_numpy(np.ascontiguousarray(x))[None, None])[0]


def retina_masks(x: torch.Tensor) -> np.ndarray:
    """Boolean masks (n, h, w) of :func:`retina_mask` for B-scans ``x`` (n, 1, h, w) in [0, 1] on any device. On a
    GPU the window filters run as tensor ops there (nearly free; scipy's 5x5 median takes ~200 ms per 512 x 512
    B-scan); on the CPU scipy and scikit-image run them (faster there than torch). Same masks either way."""
    if x.numel() == 0:
        return np.zeros((x.shape[0], *x.shape[-2:]), bool)
    on_tensors = x.device.type != "cpu"
    smooth = _smoothed(torch.where(x.float() > SATURATED, 0.0, x.float()), on_tensors)
    levels = _tissue_levels(smooth, on_tensors)
    tissue = smooth.double() > torch.tensor(levels, dtype=torch.float64, device=smooth.device)[:, None, None, None]
    return np.stack([_largest_filled(c) for c in _closed(tissue, on_tensors)])


def _smoothed(x: torch.Tensor, on_tensors: bool) -> torch.Tensor:
    """3x3 minimum then 5x5 median filter of (n, 1, h, w), "reflect" borders, as tensor ops or with scipy."""
    if on_tensors:
        return torch.cat([_median(-F.max_pool2d(-_symmetric(xi[None], 1), 3, stride=1), 5) for xi in x])
    return torch.from_numpy(np.stack([ndi.median_filter(ndi.minimum_filter(xi, size=3), size=5)
                                      for xi in x[:, 0].numpy()]))[:, None]


def _tissue_levels(smooth: torch.Tensor, on_tensors: bool) -> list[float]:
    """``LEVEL`` x the Otsu level of each smoothed B-scan (n, 1, h, w); inf for a flat one. As tensor ops only the
    256-bin histograms leave the device: numpy's own bin edges, then scikit-image's formula, so the same levels."""
    if not on_tensors:
        return [LEVEL * filters.threshold_otsu(f) if f.max() > f.min() else np.inf for f in smooth[:, 0].numpy()]
    flat = smooth.flatten(1)
    bounds = torch.stack([flat.amin(1), flat.amax(1)], 1).cpu().numpy()
    edges = [np.linspace(lo, hi, OTSU_BINS + 1, endpoint=True, dtype=lo.dtype) for lo, hi in bounds]
    counts = torch.stack([_histogram(v, e) for v, e in zip(flat, edges, strict=True)]).cpu().numpy()
    return [LEVEL * filters.threshold_otsu(hist=(c, (e[:-1] + e[1:]) / 2.0)) if hi > lo else np.inf
            for c, e, (lo, hi) in zip(counts, edges, bounds, strict=True)]


def _histogram(values: torch.Tensor, edges: np.ndarray) -> torch.Tensor:
    """``np.histogram``'s counts of ``values`` over ``edges`` (each bin half-open, the last closed), on their device."""
    bins = torch.bucketize(values, torch.from_numpy(edges).to(values.device), right=True) - 1
    return torch.bincount(bins.clamp_(0, len(edges) - 2), minlength=len(edges) - 1)


def _closed(tissue: torch.Tensor, on_tensors: bool) -> np.ndarray:
    """15 x 15 binary closing of (n, 1, h, w) masks, "reflect" borders (``skimage.morphology.closing``): (n, h, w)."""
    if on_tensors:
        dilated = F.max_pool2d(_symmetric(tissue.float(), 7), 15, stride=1)
        return (-F.max_pool2d(-_symmetric(dilated, 7), 15, stride=1))[:, 0].cpu().numpy() > 0.5
    square = morphology.footprint_rectangle((15, 15))
    return np.stack([morphology.closing(t, square) for t in tissue[:, 0].numpy()])


def _symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """Pad the last two axes by ``p`` mirroring the edge pixels too (scipy.ndimage's and skimage's "reflect")."""
    x = torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], -1)
    return torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], -2)


def _median(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median over ``size`` x ``size`` windows of (1, 1, h, w), "reflect" borders (``ndimage.median_filter``)."""
    h, w = x.shape[-2:]
    windows = F.unfold(_symmetric(x, size // 2), size)  # (1, size², h·w); an odd count, so the middle value
    return windows.median(dim=1).values.reshape(1, 1, h, w)


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of ``mask`` with its holes filled (``ndimage.binary_fill_holes``: background
    not 4-connected to the image border)."""
    labelled, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    region = labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1
    background, m = ndi.label(~region)
    inside = np.ones(m + 1, bool)  # per background label: a hole (not touching the border); 0 is the region itself
    inside[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    inside[0] = True
    return inside[background]


def soft_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """float32 weight map: 1 inside the retina, 0.5 outside (CAMs outside are damped, not erased); a tensor stays one,
    on its device."""
    if isinstance(mask, torch.Tensor):
        return torch.where(mask, 1.0, OUTSIDE_WEIGHT).float()
    return np.where(mask, 1.0, OUTSIDE_WEIGHT).astype(np.float32)


def resize_nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of the last two axes on the tensor's device, picking the very pixels that
    :func:`resize` with ``order=0`` picks (the index maps come from scikit-image itself)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    rows = torch.from_numpy(_nearest_index(masks.shape[-2], int(size[0]))).to(masks.device)
    cols = torch.from_numpy(_nearest_index(masks.shape[-1], int(size[1]))).to(masks.device)
    return masks.index_select(-2, rows).index_select(-1, cols)


@functools.lru_cache(maxsize=64)
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` positions when scikit-image resizes ``n_in`` pixels with order 0."""
    source = np.arange(n_in, dtype=np.float64)[:, None]
    return resize(source, (n_out, 1), order=0)[:, 0].round().astype(np.int64)
