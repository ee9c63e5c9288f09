"""DFP's parameter-free decoder (paper Sec. 2.2, Eq. 5, Fig. 3 c-f; METHODS.md §2): saliency → soft label.

S_4 = minmax(M); for i = 4, 3, 2, 1: S_{i-1} = R_i ∩ expand(S_i); S_0 is the soft label. One step:

1. expand: U = S_i resized bilinearly to R_i's size, E = grey dilation of U (``kernel`` × ``kernel``);
2. binarise E and R_i at ``threshold`` (a number in [0, 1], or ``"otsu"``: each map's own Otsu level);
3. I = B_E ∧ B_R (Fig. 3e green); the expanded-only part B_E ∧ ¬B_R splits into connected components (8-connected);
   a component is kept when its mean *predicted* value U lies within ``delta`` of I's mean U (red), else it is
   dropped (yellow). U, not E, is compared: the dilation copies I's peak values into the ring around it, so on E
   every ring would look like I and the region would grow by the kernel at every step whatever R_i says;
4. S_{i-1} = (I ∪ kept) ⊙ E: the surviving region carries the propagated soft values.

Where I is empty no component can resemble it, so the step yields zeros: a saliency blob the reference does not
confirm anywhere is dropped. NumPy on the CPU, one B-scan at a time, on purpose: connected-component labelling has no
torch operator, the maps are at most half the network input, and scipy/scikit-image give dilation, labelling and
per-component means directly (a GPU round trip per step would cost more than the work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, transform


@dataclass(frozen=True)
class PropagationParams:
    """Decoder settings: dilation kernel (px, odd, 3-5 in METHODS.md), binarisation threshold, similarity δ."""

    kernel: int = 3
    threshold: float | str = 0.5
    delta: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"the dilation kernel must be an odd number of pixels >= 1; got {self.kernel!r}")
        if isinstance(self.threshold, str):
            if self.threshold != "otsu":
                raise ValueError(f"threshold must be a number in [0, 1] or 'otsu'; got {self.threshold!r}")
        elif not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1] or 'otsu'; got {self.threshold!r}")
        if not 0.0 <= float(self.delta) <= 1.0:
            raise ValueError(f"delta must be in [0, 1]; got {self.delta!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return asdict(self)


def minmax(a: np.ndarray) -> np.ndarray:
    """float32 copy scaled to [0, 1]; a constant map becomes all zeros."""
    a = np.asarray(a, np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def upsample(s: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """U: ``s`` resized bilinearly to ``shape`` (float32)."""
    if tuple(s.shape) == tuple(shape):
        return np.asarray(s, np.float32)
    return transform.resize(s, shape, order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)


def expand(s: np.ndarray, shape: tuple[int, int], kernel: int) -> np.ndarray:
    """E: ``s`` resized bilinearly to ``shape``, then grey-dilated with a ``kernel`` × ``kernel`` square."""
    u = upsample(s, shape)
    return ndi.grey_dilation(u, size=(kernel, kernel)) if kernel > 1 else u


def binarise(a: np.ndarray, threshold: float | str) -> np.ndarray:
    """``a >= t`` with t fixed or the map's Otsu level (a constant map has no foreground); zeros never count."""
    if threshold == "otsu":
        if float(a.max()) <= float(a.min()):
            return np.zeros(a.shape, bool)
        t = float(filters.threshold_otsu(a))
        return a > t
    return (a >= float(threshold)) & (a > 0)


def step(s: np.ndarray, reference: np.ndarray, params: PropagationParams) -> dict[str, np.ndarray]:
    """One propagation step at R_i's size: ``expanded`` E, ``intersection`` I, ``kept`` and ``dropped`` expanded-only
    components, and ``soft`` = S_{i-1}."""
    u = upsample(s, reference.shape)
    e = ndi.grey_dilation(u, size=(params.kernel, params.kernel)) if params.kernel > 1 else u
    b_e, b_r = binarise(e, params.threshold), binarise(reference, params.threshold)
    inter = b_e & b_r
    outside = b_e & ~b_r
    kept = np.zeros_like(inter)
    if inter.any() and outside.any():
        labels, n = measure.label(outside, connectivity=2, return_num=True)
        means = np.asarray(ndi.mean(u, labels, index=np.arange(1, n + 1)))
        similar = np.abs(means - float(u[inter].mean())) <= params.delta
        kept = np.isin(labels, np.flatnonzero(similar) + 1)
    region = inter | kept
    return {"expanded": e, "intersection": inter, "kept": kept, "dropped": outside & ~kept,
            "soft": np.where(region, e, 0.0).astype(np.float32)}


def propagate(saliency: np.ndarray, references: Sequence[np.ndarray], params: PropagationParams | None = None,
              ) -> np.ndarray:
    """S_0 (at R_1's size) from the saliency M (h, w) and reference maps ``[R_1, ..., R_4]`` (R_5 may follow).

    Steps run i = 4..1 (Eq. 5); references should be min-max normalised, and M is min-max normalised here.
    """
    params = params or PropagationParams()
    if len(references) < 4:
        raise ValueError(f"propagation needs reference maps R_1..R_4; got {len(references)}")
    s = minmax(saliency)
    for i in (4, 3, 2, 1):
        if not s.any():
            return np.zeros(references[0].shape, np.float32)
        s = step(s, np.asarray(references[i - 1], np.float32), params)["soft"]
    return s
