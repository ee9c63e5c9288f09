"""Turn library objects (OctVolume, label volumes) into napari layer-data tuples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from oct_wsss.classes import ONTOLOGY, colormap
from oct_wsss.volume import OctVolume

LayerData = tuple[Any, dict[str, Any], str]
AXES = ("B-scan", "depth", "lateral")
#: the layer every method but HRF fills with its proposals, and imported segmentations go into
PROPOSED = "lesions (proposed)"

def display_name(volume: OctVolume) -> str:
    """A layer name from the file name, unless the file name carries the patient's name or an id."""
    stem = Path(str(volume.source.get("name") or "")).stem
    low, digits = stem.lower(), re.sub(r"\D", "", stem)
    if not stem or any(token in (digits if token.isdigit() else low) for token in _identifying(volume.patient)):
        return f"OCT ({volume.source.get('format', 'volume')})"
    return stem


def _identifying(patient: dict[str, Any]) -> set[str]:
    """Parts of the patient fields a file name may carry: words (``Doe^Jane`` -> doe, jane) and digit runs
    (``1943-08-17`` -> 19430817), so a name or date in another order or spelling is still recognised."""
    tokens: set[str] = set()
    for value in patient.values():
        text = str(value).lower()
        tokens.update(t for t in re.split(r"[^0-9a-z]+", text) if len(t) >= 3 and not t.isdigit())
        tokens.update(t for t in (re.sub(r"\D", "", text), *re.findall(r"\d+", text)) if len(t) >= 4)
    return tokens


def is_synthetic(layer: Any) -> bool:
    """Whether an image layer shows the synthetic phantom: its metadata says format "synthetic" (the sample data and
    phantom volumes), or its name says "synth" (synthetic, synth_0000) or "phantom". Anything else, a plain array
    included, counts as real, so the widgets offer the real-data checkpoints first."""
    if layer is None:
        return False
    info = (getattr(layer, "metadata", None) or {}).get("oct_wsss") or {}
    name = str(getattr(layer, "name", "")).lower()
    return info.get("format") == "synthetic" or "synth" in name or "phantom" in name


def image_layer(volume: OctVolume, name: str | None = None) -> LayerData:
    """The OCT image layer: physical scale in mm, robust contrast limits, PHI-free metadata."""
    return (
        volume.data,
        {
            "name": name or display_name(volume),
            "scale": volume.spacing_mm,
            "units": ("mm", "mm", "mm"),
            "axis_labels": AXES,
            "contrast_limits": volume.contrast_limits(),
            "colormap": "gray",
            "metadata": {"oct_wsss": volume.summary()},
        },
        "image",
    )


def labels_layer(labels: np.ndarray, spacing_mm: tuple[float, float, float], name: str) -> LayerData:
    """A Labels layer in the ontology's ids, names and colours."""
    return (
        np.asarray(labels, dtype=np.uint8),
        {
            "name": name,
            "scale": spacing_mm,
            "units": ("mm", "mm", "mm"),
            "axis_labels": AXES,
            "colormap": DirectLabelColormap(color_dict=colormap()),
            "opacity": 0.6,
            "metadata": {"oct_wsss": {"ontology": {c.id: c.name for c in ONTOLOGY}}},
        },
        "labels",
    )


def refresh_bscan(viewer: Any, layer: Any, index: int) -> None:
    """Redraw ``layer`` after its B-scan ``index`` was written in place, only if that B-scan is on screen: a B-scan
    napari does not show is read from the array when the grader steps to it. The extent is unchanged by an in-place
    write, so it is not recomputed (that re-emits through the whole layer list)."""
    dims = viewer.dims
    shown = dims.ndisplay == 3 or tuple(dims.displayed) != tuple(range(dims.ndim))[-2:]
    if shown or int(np.round(layer.world_to_data(dims.point)[0])) == index:
        layer.refresh(extent=False, highlight=False)


def write_page(layer: Any, index: int, page: np.ndarray) -> None:
    """Set B-scan ``index`` of a Labels layer to ``page``, changed pixels only, through ``data_setitem`` (so napari's
    own Ctrl-Z undoes it and the canvas redraws)."""
    rows, cols = np.nonzero(np.asarray(layer.data[index]) != page)
    if len(rows):
        layer.data_setitem((np.full(len(rows), index), rows, cols), np.asarray(page)[rows, cols])
