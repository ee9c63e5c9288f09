"""Drusen ground truth (ontology id 6) from RPE and Bruch's membrane (BM) lines: the RPE elevated above its normal
position over BM, computed with eyepy's drusen routine (``eyepy.quant.drusen.drusen``).

eyepy estimates one *ideal RPE* per volume: BM shifted up by the most common RPE-BM distance (a histogram over every
A-scan of the volume), i.e. where the RPE would lie without drusen. Drusen pixels of a column are the rows strictly
between the RPE line and that ideal RPE (``[rpe + 1, ideal)``), and drusen whose largest column height is under
``minimum_height`` px (an en-face connected component) are dropped. So an RPE raised by e px over the normal gap
gives e - 1 drusen pixels in that column. Lines are row positions per column (NaN where a column has no line).
Any adapter with layer lines can use :func:`drusen_masks`; :func:`lines_from_layer_map` reads the one-pixel line
maps of the Bonn annotation tool (and similar ``value per line`` maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def lines_from_layer_map(plane: np.ndarray, rpe_values: Sequence[int], bm_values: Sequence[int]) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    """(rpe, bm) rows per column (float, NaN where the line is absent) from a map drawing each line as a value."""
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"a layer map is 2-D; got shape {plane.shape}")
    return _line(np.isin(plane, list(rpe_values))), _line(np.isin(plane, list(bm_values)))


def _line(hits: np.ndarray) -> np.ndarray:
    """Mean row of the marked pixels of each column; NaN for columns without any."""
    rows = np.arange(hits.shape[0], dtype=np.float64)[:, None]
    count = hits.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (hits * rows).sum(axis=0) / count
    return np.where(count > 0, out, np.nan)


def drusen_masks(rpe: np.ndarray, bm: np.ndarray, height: int, minimum_height: int = 2) -> np.ndarray:
    """Boolean drusen masks (n_bscans, height, width) from RPE and BM rows (n_bscans, width) of one volume."""
    from eyepy.quant.drusen import drusen

    rpe, bm = np.atleast_2d(np.asarray(rpe, np.float64)), np.atleast_2d(np.asarray(bm, np.float64))
    if rpe.shape != bm.shape:
        raise ValueError(f"RPE {rpe.shape} and BM {bm.shape} lines differ in shape")
    if height < 2:
        raise ValueError(f"the B-scan height must be at least 2 px; got {height}")
    both = ~np.isnan(rpe) & ~np.isnan(bm)
    if both.sum() < 3:
        raise ValueError("fewer than 3 A-scans have both an RPE and a BM line: no normal RPE-BM distance to "
                         "estimate drusen from")
    if np.any(rpe[both] > bm[both] + 0.5):
        bad = int((rpe[both] > bm[both] + 0.5).sum())
        raise ValueError(f"the RPE lies below BM in {bad} A-scans: are the two lines swapped?")
    return np.asarray(drusen(rpe, bm, (rpe.shape[0], int(height), rpe.shape[1]), minimum_height=minimum_height),
                      bool)
