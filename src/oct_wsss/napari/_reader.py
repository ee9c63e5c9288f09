"""napari reader hook: opens every format ``oct_wsss.io.read_volume`` knows (drag-and-drop).

A volume folder also yields its ground truth (``masks/``, the layout ``oct-wsss synth`` writes) and its proposal
(``labels.tif``, e.g. written there by ``oct-wsss import`` or ``propose``), the latter as "lesions (proposed)" with
provenance "imported", which the widgets' session takes up (each B-scan *proposed* until accepted)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_error, show_warning

from oct_wsss.io import OctReadError, can_read, read_labels, read_volume
from oct_wsss.io.eye_read import read_eye
from oct_wsss.io.segmentation import SegmentationError, imported_provenance, read_segmentation
from oct_wsss.napari._layers import PROPOSED, LayerData, boundary_layer, image_layer, labels_layer
from oct_wsss.volume import OctVolume


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return the reader for ``path`` or ``None`` when it is not an OCT file we know (never raises)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        if str(path).lower().endswith(".eye"):
            return read_eye_file if Path(path).is_file() else None
        return read_oct if can_read(path) else None
    except Exception:  # a hook that raises blocks napari's other readers
        return None


def read_oct(path: str | list[str]) -> list[LayerData]:
    """Read one OCT volume; a synthetic-dataset folder also yields its ground-truth masks.

    An unreadable file shows a notification with the specific reason (napari's own message for a failed
    reader names only the plugin), then raises so napari can offer any other reader for the file.
    """
    path = path[0] if isinstance(path, list) else path
    try:
        volume = read_volume(path)
    except OctReadError as err:
        show_error(str(err))
        raise
    layers = [image_layer(volume)]
    masks = Path(path) / "masks"
    if masks.is_dir():
        truth = read_labels(masks)
        if truth.shape == volume.shape:
            layers.append(labels_layer(truth, volume.spacing_mm, "ground truth"))
    proposal = Path(path) / "labels.tif"
    if proposal.is_file():
        layers += imported_layer(proposal, volume)
    return layers


def imported_layer(path: Path, volume: OctVolume) -> list[LayerData]:
    """``path`` as the volume's proposal layer, its provenance ("imported") in the layer's metadata; none (and a
    warning) when it does not fit the volume."""
    try:
        labels = read_segmentation(path, volume.shape)
    except SegmentationError as err:
        show_warning(f"{err}; the volume is opened without it")
        return []
    data, kwargs, kind = labels_layer(labels, volume.spacing_mm, PROPOSED)
    kwargs["metadata"]["oct_wsss"]["imported"] = {**imported_provenance(path), "source_tool": "napari"}
    return [(data, kwargs, kind)]


def read_eye_file(path: str | list[str]) -> list[LayerData]:
    """An eyepy ``.eye`` file: the volume, its layer lines (the Layers panel's boundary layer) and its area
    annotations (the lesions layer, each B-scan *proposed* by "imported")."""
    path = path[0] if isinstance(path, list) else path
    try:
        scan = read_eye(path)
    except Exception as err:  # eyepy raises many kinds for damaged files; say which file, then let napari go on
        show_error(f"cannot open {Path(path).name} as an eyepy .eye file: {err}")
        raise
    layers = [image_layer(scan.volume)]
    if scan.lines:
        layers.append(boundary_layer(scan.lines, scan.volume.spacing_mm))
    if scan.labels is not None:
        data, kwargs, kind = labels_layer(scan.labels, scan.volume.spacing_mm, PROPOSED)
        kwargs["metadata"]["oct_wsss"]["imported"] = {**imported_provenance(path), "source_tool": "eyepy"}
        layers.append((data, kwargs, kind))
    return layers
