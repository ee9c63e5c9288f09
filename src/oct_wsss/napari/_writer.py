"""napari writer hooks: Labels layers as ``labels.tif`` (ontology ids), OCT images as TIFF/NPZ."""

from __future__ import annotations

from typing import Any

import numpy as np

from oct_wsss.io import write_labels, write_volume
from oct_wsss.volume import OctVolume


def write_labels_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Labels layer as a multi-page uint8 TIFF of ontology ids (the project's labels.tif)."""
    spacing = _spacing(attributes, np.ndim(data))
    return [str(write_labels(path, np.asarray(data), spacing))]


def write_image_layer(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an OCT Image layer with its physical spacing; metadata stays PHI-free."""
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.dtype not in (np.uint8, np.float32):
        raise ValueError(f"only uint8 or float32 OCT images can be written; this layer is {array.dtype}")
    summary = attributes.get("metadata", {}).get("oct_wsss", {})
    volume = OctVolume(array, spacing_mm=_spacing(attributes, 3), laterality=summary.get("laterality"))
    write_volume(volume, path)
    return [path]


def _spacing(attributes: dict[str, Any], ndim: int) -> tuple[float, float, float] | None:
    scale = list(attributes.get("scale") or [])
    if len(scale) != 3 or ndim != 3:
        return None
    return tuple(float(s) for s in scale)  # type: ignore[return-value]
