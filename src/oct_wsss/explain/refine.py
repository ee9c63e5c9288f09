"""AGM's iterative anomaly-guided refinement input (paper Eq. 11-12; METHODS.md §1).

The prediction-weighted ROI map M = Σ_c ŷ_c · CAM_c is min-max scaled to SM, and the backbone's image channels
become min-max(SM ⊙ x): regions the classifier already finds lesion-like are enhanced, the rest damped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from oct_wsss.explain.gradcam import minmax


def roi_map(cams: Tensor, weights: Tensor) -> Tensor:
    """SM (B, 1, H, W): min-max of Σ_c weights[b, c] · minmax(cams[b, c]) for CAMs (B, C, H, W) and weights (B, C).

    Where M is flat (no CAM evidence at all, e.g. every CAM zero) SM is 1: the image is kept as it is rather than
    blacked out, which would teach the classifier lesion labels on empty inputs.
    """
    if cams.ndim != 4 or weights.shape != cams.shape[:2]:
        raise ValueError(f"cams (B, C, H, W) and weights (B, C) expected; got {tuple(cams.shape)}, "
                         f"{tuple(weights.shape)}")
    m = (minmax(cams) * weights[:, :, None, None].to(cams.dtype)).sum(dim=1, keepdim=True)
    flat = m.amax(dim=(2, 3), keepdim=True) <= m.amin(dim=(2, 3), keepdim=True)
    return torch.where(flat, torch.ones_like(m), minmax(m))


def enhance(x: Tensor, cams: Tensor, weights: Tensor) -> Tensor:
    """min-max(SM ⊙ x) per image, for images x (B, ch, H, W) and CAMs at the same H, W."""
    return minmax(roi_map(cams, weights) * x)
