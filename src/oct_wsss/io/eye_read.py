"""eyepy ``.eye`` files opened whole: the OCT volume, its layer lines and its area annotations as lesion labels.

eyepy does the reading; the labels come from :func:`oct_wsss.io.segmentation.read_eye_labels` (the same rules
``oct-wsss import`` uses), the spacing from the file's scale when its unit is mm (else the default, marked so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oct_wsss.io.normalise import build_volume
from oct_wsss.volume import OctVolume


@dataclass
class EyeScan:
    """An opened ``.eye`` file: ``volume``, ``labels`` (n, H, W) ontology ids or None, ``lines`` name -> (n, W)."""

    volume: OctVolume
    labels: np.ndarray | None
    lines: dict[str, np.ndarray]


def read_eye(path: str | Path) -> EyeScan:
    """Open an eyepy ``.eye`` file: volume, layer lines (rows per A-scan, NaN where absent), lesion labels (None
    when the file has no area annotation and no RPE/BM lines to derive drusen from)."""
    import eyepy

    from oct_wsss.io.segmentation import read_eye_labels

    eye = eyepy.EyeVolume.load(Path(path))
    mm = str(eye.meta["scale_unit"]).lower() == "mm"
    spacing = (eye.scale_z, eye.scale_y, eye.scale_x) if mm else None
    volume = build_volume(np.asarray(eye.data), path, "eye", spacing_mm=spacing)
    lines = {str(layer.meta.get("name") or name): np.asarray(layer.data, np.float64)
             for name, layer in eye.layers.items()}
    annotated = bool(eye.volume_maps) or {"RPE", "BM"} <= set(lines)
    return EyeScan(volume, read_eye_labels(path) if annotated else None, lines)
