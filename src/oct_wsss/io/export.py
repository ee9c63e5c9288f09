"""write_volume: TIFF, NPY (+ JSON sidecar), NPZ or a PNG folder; exact round trips, never patient fields."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.arrays import IMAGE_SUFFIXES, MARKER
from oct_wsss.volume import OctVolume

WRITE_SUFFIXES = (".tif", ".tiff", ".npy", ".npz")


def volume_info(volume: OctVolume) -> dict[str, Any]:
    """The PHI-free description written next to the voxels (the ``volume.json`` schema)."""
    from oct_wsss import __version__
    from oct_wsss.volume import _is_plain

    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in volume.meta.items() if _is_plain(v)}
    meta["source_format"] = volume.source.get("format")
    return {MARKER: __version__, "spacing_mm": [float(s) for s in volume.spacing_mm],
            "laterality": volume.laterality, "meta": meta}


def write_volume(volume: OctVolume, path: str | Path) -> Path:
    """Write ``volume`` by suffix: .tif/.tiff, .npy (+ <stem>.json), .npz, or a folder (no suffix).

    A folder holds NNN.png per B-scan plus volume.json and takes uint8 only (PNG cannot hold float32
    exactly); write float volumes as TIFF/NPY/NPZ. ``volume.patient`` and the source path are never written.
    Raises ValueError for an unknown suffix, a float folder or a folder that already holds images.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    info = volume_info(volume)
    data = np.ascontiguousarray(volume.data)
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, data, volume, info)
    elif suffix == ".npy":
        atomic_write(path, lambda tmp: np.save(tmp, data, allow_pickle=False), ".npy")
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
    elif suffix == ".npz":
        arrays = {"data": data, "spacing_mm": np.asarray(volume.spacing_mm, np.float64),
                  "laterality": np.asarray(volume.laterality or ""), "meta": np.asarray(json.dumps(info["meta"])),
                  MARKER: np.asarray(info[MARKER])}
        atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), ".npz")
    elif suffix == "" or path.is_dir():
        _write_folder(path, data, info)
    else:
        raise ValueError(f"{path}: cannot write volumes as '{suffix}' (use {', '.join(WRITE_SUFFIXES)} or a folder)")
    return path


def atomic_write(path: Path, write: Any, keep_suffix: str = "") -> None:
    """Call ``write(tmp)`` on a hidden file beside ``path``, then rename it over ``path``: no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{keep_suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_tiff(path: Path, data: np.ndarray, volume: OctVolume, info: dict[str, Any]) -> None:
    import tifffile

    z, y, x = volume.spacing_mm
    ij = {"spacing": z, "unit": "mm", "axes": "ZYX", "Info": json.dumps(info)}
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / x, 1.0 / y),
                                               metadata=ij, photometric="minisblack"))


def _write_folder(path: Path, data: np.ndarray, info: dict[str, Any]) -> None:
    import imageio.v3 as iio

    if data.dtype != np.uint8:
        raise ValueError(f"{path}: a PNG folder holds uint8 B-scans only; this volume is {data.dtype} "
                         "(write it as .tif, .npy or .npz to keep the values exactly)")
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        raise ValueError(f"{path}: folder already holds images; write into an empty or new folder")
    path.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(data))))
    for i, page in enumerate(data):
        target = path / f"{i:0{width}d}.png"
        atomic_write(target, lambda tmp, page=page: iio.imwrite(tmp, page, extension=".png"), ".png")
    (path / "volume.json").write_text(json.dumps(info, indent=2))
