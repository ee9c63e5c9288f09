"""Turn library objects (OctVolume, label volumes) into napari layer-data tuples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from oct_wsss.classes import ONTOLOGY, colormap
from oct_wsss.volume import OctVolume, is_phantom

LayerData = tuple[Any, dict[str, Any], str]
AXES = ("B-scan", "depth", "lateral")
#: the layer every method but HRF fills with its proposals, and imported segmentations go into
PROPOSED = "lesions (proposed)"


def follow_proposals(viewer: Any, chooser: Any) -> None:
    """Point a lesion-labels chooser at the proposal layer now and whenever one is added: graders review, carry and
    measure the proposals, not the first Labels layer in the list (in the demo that is the ground truth)."""
    def pick(event: Any = None) -> None:
        layer = event.value if event is not None else viewer.layers[PROPOSED] if PROPOSED in viewer.layers else None
        if layer is not None and layer.name == PROPOSED:
            chooser.reset_choices()
            chooser.value = layer

    viewer.layers.events.inserted.connect(pick)
    pick()

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
    """Whether an image layer shows the synthetic phantom, by the rule ``oct-wsss propose`` applies to a volume
    (``volume.is_phantom``: its metadata, or "synth" / "phantom" in its name). Anything else, a plain array included,
    counts as real, so the widgets offer the real-data checkpoints first (and warn about phantom-only ones)."""
    if layer is None:
        return False
    info = (getattr(layer, "metadata", None) or {}).get("oct_wsss") or {}
    return is_phantom(info, str(getattr(layer, "name", "")))


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


#: the Shapes layer holding layer boundaries as editable paths (the Layers panel and the .eye reader fill it)
BOUNDARY_LAYER = "layer boundaries"
#: one colour per boundary, top to bottom (cycled when a file has more lines)
BOUNDARY_COLOURS = ("#ff4040", "#ff9f40", "#ffff40", "#80ff40", "#40ffbf", "#40bfff", "#4060ff", "#bf40ff", "#ff40bf")
#: most vertices per boundary path a grader drags (rows between vertices are interpolated)
PATH_VERTICES = 64


def boundary_paths(lines: dict[str, np.ndarray], bscans: list[int] | None = None) -> tuple[list[np.ndarray],
                                                                                            dict[str, list[Any]]]:
    """Paths (bscan, row, ascan) of every named line (name -> (n, W) rows) on ``bscans`` (default all), and their
    features: ``bscan``, ``boundary`` (name) and ``colour``."""
    from oct_wsss.propose.layer_geometry import paths_from_boundaries

    names = list(lines)
    stacked = np.stack([np.asarray(lines[k], np.float64) for k in names], axis=1)  # (n, k, W)
    step = max(1, stacked.shape[2] // PATH_VERTICES)
    paths, features = [], {"bscan": [], "boundary": [], "colour": []}
    for i in range(stacked.shape[0]) if bscans is None else bscans:
        for k, path in enumerate(paths_from_boundaries(stacked[i], i, step)):
            if len(path) >= 2:
                paths.append(path)
                features["bscan"].append(i)
                features["boundary"].append(names[k])
                features["colour"].append(BOUNDARY_COLOURS[k % len(BOUNDARY_COLOURS)])
    return paths, features


def boundary_layer(lines: dict[str, np.ndarray], spacing_mm: tuple[float, float, float]) -> LayerData:
    """Layer boundaries (name -> (n, W) rows) as a Shapes layer of paths the grader can drag, one per line and
    B-scan."""
    paths, features = boundary_paths(lines)
    kwargs = boundary_kwargs(spacing_mm, list(lines))
    return paths, {**kwargs, "shape_type": "path", "edge_color": features["colour"], "features": features}, "shapes"


def boundary_kwargs(spacing_mm: tuple[float, float, float], names: list[str]) -> dict[str, Any]:
    """The boundary Shapes layer's name, scale, axes, line width and metadata (its ``names`` in order)."""
    return {"name": BOUNDARY_LAYER, "scale": spacing_mm, "units": ("mm",) * 3, "axis_labels": AXES, "edge_width": 1.5,
            "metadata": {"oct_wsss": {"boundaries": names}}}
