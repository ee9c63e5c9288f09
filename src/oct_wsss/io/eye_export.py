"""eyepy's ``.eye`` file with the lesion annotations attached, so eyepy and eyelab users open the grader's work.

Each lesion class present becomes one eyepy pixel annotation (a boolean voxel map named by the class key, with the
ontology id and colour in its meta) on an ``EyeVolume`` holding the OCT B-scans and their spacing in mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oct_wsss.classes import BACKGROUND, ONTOLOGY
from oct_wsss.io.export import atomic_write


def export_eye(labels: np.ndarray, image: np.ndarray, path: str | Path,
               spacing_mm: tuple[float, float, float] | None = None,
               lines: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``path`` (.eye): the OCT ``image`` (n, H, W) with one pixel annotation per lesion class in ``labels``
    and, when given, layer lines (name -> (n, W) rows; NaN where absent), plus then a drusen annotation even when
    empty, so readers take the grader's drusen instead of deriving them from the RPE and BM lines."""
    import eyepy
    from eyepy.core.eyemeta import EyeBscanMeta, EyeVolumeMeta

    labels, image = np.asarray(labels, np.uint8), np.asarray(image)
    if labels.ndim != 3 or labels.shape != image.shape:
        raise ValueError(f"an .eye export needs the labels and the OCT B-scans in one shape (n, H, W); got labels "
                         f"{labels.shape} and image {image.shape}")
    n, _, width = labels.shape
    z, y, x = (float(s) for s in spacing_mm) if spacing_mm is not None else (1.0, 1.0, 1.0)
    unit = "mm" if spacing_mm is not None else "pixel"
    bscans = [EyeBscanMeta(start_pos=(0.0, (n - 1 - i) * z), end_pos=((width - 1) * x, (n - 1 - i) * z),
                           pos_unit=unit) for i in range(n)]
    meta = EyeVolumeMeta(scale_z=z, scale_x=x, scale_y=y, scale_unit=unit, bscan_meta=bscans)
    volume = eyepy.EyeVolume(image.astype(np.float32), meta=meta)
    for c in ONTOLOGY:
        if c.id != BACKGROUND and ((labels == c.id).any() or (lines and c.key == "drusen")):
            colour = "".join(f"{round(255 * v):02x}" for v in c.colour[:3])
            volume.add_pixel_annotation(labels == c.id, meta={"name": c.key, "oct_wsss_id": c.id, "current_color":
                                                              colour})
    for name, rows in (lines or {}).items():
        volume.add_layer_annotation(np.asarray(rows, np.float64), meta={"name": name})
    path = Path(path)
    atomic_write(path, lambda tmp: volume.save(tmp), ".eye")
    return path

