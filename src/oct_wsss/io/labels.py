"""Label volumes on disk: the multi-page ``labels.tif`` every proposer and export writes, and mask folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from oct_wsss.classes import ONTOLOGY
from oct_wsss.io.export import atomic_write
from oct_wsss.io.folder import _stack, image_files


def write_labels(path: str | Path, labels: np.ndarray, spacing_mm: tuple[float, float, float] | None = None) -> Path:
    """Write (n_bscans, H, W) ontology ids as a multi-page uint8 TIFF, one page per B-scan."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3:
        raise ValueError(f"labels must be (n_bscans, height, width); got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > max(c.id for c in ONTOLOGY)):
        raise ValueError(f"labels hold ids outside the ontology (0..{max(c.id for c in ONTOLOGY)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ontology": {str(c.id): c.key for c in ONTOLOGY}}
    if spacing_mm is not None:
        meta["spacing_mm"] = [float(s) for s in spacing_mm]
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, np.asarray(labels, np.uint8), photometric="minisblack",
                                               compression="zlib", description=json.dumps(meta), metadata=None))
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """Read a ``labels.tif`` or a folder of mask images (natural sort order) as (n, H, W) uint8 ids."""
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise ValueError(f"{path}: no mask images in this folder")
        labels = _stack(files, path)  # natural order; mixed sizes or bit depths raise, naming the files
    else:
        labels = tifffile.imread(path)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected integer label pages, got {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.uint8)
