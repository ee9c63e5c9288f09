"""Shape statistics of lesion masks and vessel shadows, to compare the phantom with real scans.

Used by ``training/phantom_realism.py`` (the table in docs/synthetic.md) and by tests/test_synth.py.
"""

from __future__ import annotations

import numpy as np
from skimage import measure


def fluid_stats(mask: np.ndarray) -> dict[str, float]:
    """Pieces, area, largest share, largest piece (px) and area-weighted solidity of one B-scan's fluid mask."""
    pieces = [p for p in measure.regionprops(measure.label(mask, connectivity=2)) if p.area >= 5]
    area = sum(p.area for p in pieces)
    big = [p for p in pieces if p.area >= 30]
    solidity = sum(p.area * p.solidity for p in big) / max(sum(p.area for p in big), 1)
    largest = max((p.area for p in pieces), default=0)
    return {"pieces": len(pieces), "area": area, "largest": largest / max(area, 1), "largest px": largest,
            "solidity": solidity if big else float("nan")}


def drusen_stats(mask: np.ndarray) -> list[tuple[int, int]]:
    """(width, height) in px of each drusen of one B-scan: runs of columns that hold drusen pixels."""
    height = mask.sum(axis=0)
    runs = measure.label(height > 0)
    return [(int((runs == r).sum()), int(height[runs == r].max())) for r in range(1, runs.max() + 1)]


def shadow_share(bscan: np.ndarray, bm: np.ndarray) -> float:
    """Share of columns (with a BM) whose 5-40 px band below BM averages under 0.6 x the median column."""
    rows = np.arange(bscan.shape[0])[:, None]
    ok = np.isfinite(bm)
    band = (rows >= bm[None] + 5) & (rows < bm[None] + 40) & ok[None]
    col = np.where(band, bscan.astype(np.float32), 0).sum(0) / np.maximum(band.sum(0), 1)
    col = col[ok & (band.sum(0) > 20)]
    return float((col < 0.6 * np.median(col)).mean()) if col.size else float("nan")
