"""Existing segmentations as the proposal of a volume: ``labels.tif`` (this project's output), a folder of
per-B-scan mask images, a ``.npy`` label array, or an eyepy ``.eye`` file.

``read_segmentation(path, volume_shape)`` returns (n_bscans, height, width) uint8 ontology ids, or raises a
:class:`SegmentationError` that names the file and says what is wrong (another shape, ids outside the ontology, a
truncated or foreign file). It reads only: nothing is written, so bad input loses nothing.

From ``.eye`` files it takes what eyepy exposes: each area annotation (voxel map) named by an ontology key or
carrying ``oct_wsss_id`` (what :func:`oct_wsss.io.eye_export.export_eye` writes) becomes that class; RPE and BM
layer lines, when no drusen area is annotated (an empty one counts), give drusen (id 6) through eyepy's own drusen
routine. Other layer lines are retinal boundaries, not lesions, and are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.io.errors import OctReadError

#: what ``read_segmentation`` opens besides a folder of mask images
SEGMENTATION_SUFFIXES = (".tif", ".tiff", ".npy", ".eye")
DRUSEN = by_key("drusen").id


class SegmentationError(OctReadError):
    """A segmentation that cannot be the proposal of this volume; the message names the file and the reason."""


def read_segmentation(path: str | Path, volume_shape: tuple[int, ...]) -> np.ndarray:
    """(n_bscans, H, W) uint8 ontology ids from ``path``, checked against the volume's ``volume_shape``."""
    path = Path(path).expanduser()
    return check_segmentation(_read(path), tuple(volume_shape), path)


def check_segmentation(labels: np.ndarray, volume_shape: tuple[int, ...], path: str | Path) -> np.ndarray:
    """``labels`` as uint8 ids if they fit the volume and the ontology; a SegmentationError saying why not."""
    labels = np.asarray(labels)
    labels = labels[np.newaxis] if labels.ndim == 2 else labels
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise SegmentationError(path, f"holds {labels.dtype} values; a segmentation holds integer ontology ids "
                                      f"({_known()})")
    if labels.shape != volume_shape:
        raise SegmentationError(path, f"is {_shape(labels.shape)}; the volume is {_shape(volume_shape)} — "
                                      "choose the segmentation of this volume")
    unknown = sorted(set(np.unique(labels).tolist()) - {c.id for c in ONTOLOGY})
    if unknown:
        shown = ", ".join(map(str, unknown[:8])) + (", ..." if len(unknown) > 8 else "")
        raise SegmentationError(path, f"holds ids {shown} that are not in the lesion ontology ({_known()})")
    return labels.astype(np.uint8)


def _known() -> str:
    return ", ".join(f"{c.id} {c.key}" for c in ONTOLOGY)


def _shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[0]} B-scans of {shape[1]}x{shape[2]}"
    return f"an array of shape {shape} (expected B-scans, height, width)"


def _read(path: Path) -> np.ndarray:
    """The raw label array of a file or folder; any failure of the underlying reader becomes a SegmentationError."""
    if not path.exists():
        raise SegmentationError(path, "no such file or folder")
    reader = _read_folder if path.is_dir() else _READERS.get(path.suffix.lower())
    if reader is None:
        raise SegmentationError(path, f"unknown segmentation file type '{path.suffix or path.name}' (supported: "
                                      f"{', '.join(SEGMENTATION_SUFFIXES)} or a folder of mask images)")
    if path.is_file() and path.stat().st_size == 0:
        raise SegmentationError(path, "empty file (0 bytes)")
    try:
        return reader(path)
    except SegmentationError:
        raise
    except OctReadError as err:
        raise SegmentationError(path, err.reason) from err
    except Exception as err:  # tifffile, numpy and eyepy raise many kinds for damaged files
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise SegmentationError(path, f"unreadable, truncated or not a segmentation ({type(err).__name__}: "
                                      f"{reason})") from err


def _read_folder(path: Path) -> np.ndarray:
    from oct_wsss.io.folder import _stack, image_files

    files = image_files(path / "masks" if (path / "masks").is_dir() else path)
    if not files:
        raise SegmentationError(path, "no mask images in this folder (one image per B-scan, ontology ids)")
    return _stack(files, path)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    from oct_wsss.io.limits import check_tiff_chain

    check_tiff_chain(path)
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise SegmentationError(path, "TIFF without image data")
        series = tif.series[0]
        return np.stack([page.asarray() for page in series.pages]) if len(series.pages) > 1 else series.asarray()


def _read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def read_eye_labels(path: str | Path) -> np.ndarray:
    """The ontology-id label volume of an eyepy ``.eye`` file (area annotations; drusen from RPE/BM lines)."""
    import eyepy

    path = Path(path)

    volume = eyepy.EyeVolume.load(path)
    labels = np.zeros(volume.shape, np.uint8)
    ids = set()
    for name, annotation in volume.volume_maps.items():
        class_id = _eye_class(path, name, annotation.meta)
        ids.add(class_id)
        labels[np.asarray(annotation.data, bool)] = class_id
    layers = volume.layers
    if DRUSEN not in ids and {"RPE", "BM"} <= set(layers):  # a drusen annotation, even empty, is the grader's say
        labels[_eye_drusen(layers["RPE"].data, layers["BM"].data, volume.shape) & (labels == 0)] = DRUSEN
    if layers and not volume.volume_maps and not {"RPE", "BM"} <= set(layers):  # none at all: lesion-free labels
        raise SegmentationError(path, f"holds only the layer lines {', '.join(sorted(layers))}: no area annotation "
                                      "(voxel map) to import as lesions")
    return labels


def _eye_class(path: Path, name: str, meta: dict[str, Any]) -> int:
    """The ontology id of an .eye area annotation: its ``oct_wsss_id``, else its name as an ontology key."""
    if meta.get("oct_wsss_id") is not None:
        return int(meta["oct_wsss_id"])
    try:
        return by_key(str(meta.get("name") or name)).id
    except KeyError as err:
        raise SegmentationError(path, f"area annotation {name!r} is not a lesion class of the ontology (name it by "
                                      f"a key: {', '.join(c.key for c in ONTOLOGY[1:])})") from err


def _eye_drusen(rpe: np.ndarray, bm: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Drusen voxels from RPE and BM rows per A-scan, by eyepy's drusen routine."""
    from eyepy.quant.drusen import drusen

    return np.asarray(drusen(np.asarray(rpe, float), np.asarray(bm, float), shape), bool)


_READERS: dict[str, Callable[[Path], np.ndarray]] = {".tif": _read_tiff, ".tiff": _read_tiff, ".npy": _read_npy,
                                                     ".eye": read_eye_labels}


def imported_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance of imported labels: method "imported", the source's format and SHA-256 (never its name, which
    may carry the patient's)."""
    import hashlib

    path = Path(path).expanduser()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return {"method": "imported", "source": {"format": "mask folder" if path.is_dir() else path.suffix.lower()[1:],
                                             "sha256": digest.hexdigest(), "files": len(files)}}
