"""Array-like files: multi-page TIFF, .npy (+ JSON sidecar), .npz and single B-scan images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume
from oct_wsss.volume import OctVolume

#: Marker key our own writer puts into TIFF/JSON/NPZ metadata (float32 in [0, 1] is then kept exactly).
MARKER = "oct_wsss"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_UNIT_TO_MM = {"mm": 1.0, "millimeter": 1.0, "micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3,
               "cm": 10.0, "m": 1e3}


def sidecar_fields(info: dict[str, Any]) -> tuple[Any, Any, dict[str, Any], bool]:
    """Spacing, laterality, meta and 'written by us' from a sidecar/metadata dict (volume.json schema)."""
    meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
    return info.get("spacing_mm"), info.get("laterality"), dict(meta), MARKER in info


def read_json(path: Path) -> dict[str, Any]:
    """A sidecar JSON object; a broken sidecar is an error rather than silently ignored spacing."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OctReadError(path, f"sidecar JSON unreadable ({exc})") from exc
    if not isinstance(info, dict):
        raise OctReadError(path, "sidecar JSON must be an object with spacing_mm / laterality / meta")
    return info


def read_tiff(path: Path) -> OctVolume:
    """Multi-page TIFF: spacing from our JSON metadata, else ImageJ spacing + resolution, else default."""
    import tifffile

    from oct_wsss.io.limits import check_tiff_chain

    try:
        check_tiff_chain(path)
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise OctReadError(path, "TIFF without image data")
            series = tif.series[0]
            axes = series.axes
            from oct_wsss.io.limits import check_size, tiff_nbytes

            needed, compressed = tiff_nbytes(tif)
            check_size(path, needed, path.stat().st_size, f"image series {series.shape} {series.dtype}",
                       compressed=compressed)
            # uncompressed and contiguous: memory-mapped (copy-on-write), read B-scan by B-scan when used
            array = tifffile.memmap(path, series=0, mode="c") if series.dataoffset is not None else series.asarray()
            info = _tiff_json(tif)
            ij = tif.imagej_metadata or {}
            resolution = tif.pages[0].resolution if len(tif.pages) else None
    except OctReadError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, OSError, ...
        raise OctReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    rgb = axes.endswith("S") and array.shape[-1] in (3, 4)
    keep_dims = 3 if rgb else 2
    while array.ndim > keep_dims + 1 and array.shape[0] == 1:
        array = array[0]
    spacing, laterality, meta, ours = sidecar_fields(info)
    if spacing is None and ij:
        spacing = _imagej_spacing(ij, resolution)
    meta.pop("spacing_source", None)
    return build_volume(array, path, "tiff", spacing_mm=spacing, laterality=laterality, meta=meta,
                        rgb_last=rgb, keep_unit_float=ours)


def _tiff_json(tif: Any) -> dict[str, Any]:
    candidates = []
    if tif.imagej_metadata and isinstance(tif.imagej_metadata.get("Info"), str):
        candidates.append(tif.imagej_metadata["Info"])
    if tif.pages:
        candidates.append(tif.pages[0].description or "")
    for text in candidates:
        text = text.strip()
        if text.startswith("{"):
            try:
                info = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(info, dict) and ("spacing_mm" in info or MARKER in info):
                return info
    return {}


def _imagej_spacing(ij: dict[str, Any], resolution: Any) -> tuple[float, float, float] | None:
    factor = _UNIT_TO_MM.get(str(ij.get("unit", "")).strip().lower())
    if factor is None or not resolution or "spacing" not in ij:
        return None
    try:
        x_per_unit, y_per_unit = (float(r) for r in resolution)
        return (float(ij["spacing"]) * factor, factor / y_per_unit, factor / x_per_unit)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def read_npy(path: Path) -> OctVolume:
    """A .npy array (no pickles) with an optional ``<stem>.json`` sidecar (spacing_mm, laterality, meta)."""
    try:
        with open(path, "rb") as fh:
            _check_npy_header(path, fh, path.stat().st_size)
        array = np.load(path, mmap_mode="c", allow_pickle=False)  # lazy: B-scans are read when used (copy-on-write)
    except OctReadError:
        raise
    except Exception as exc:  # ValueError (pickled/corrupt), EOFError, OSError
        raise OctReadError(path, f"not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    sidecar = path.with_suffix(".json")
    info = read_json(sidecar) if sidecar.is_file() else {}
    spacing, laterality, meta, ours = sidecar_fields(info)
    meta.pop("spacing_source", None)
    return build_volume(array, path, "npy", spacing_mm=spacing, laterality=laterality, meta=meta,
                        keep_unit_float=ours)


def _check_npy_header(path: Path, fh: Any, size: int, what: str = "array") -> None:
    """Refuse a .npy header whose shape x dtype needs more bytes than follow it (np.load allocates first)."""
    try:  # NumPy 2 keeps the version-generic header reader here; np.lib.format has only per-version ones
        from numpy.lib import _format_impl as npformat
    except ImportError:  # NumPy 1.x
        from numpy.lib import format as npformat  # type: ignore[no-redef]

    from oct_wsss.io.limits import check_size, product

    try:
        version = npformat.read_magic(fh)
        shape, _fortran, dtype = npformat._read_array_header(fh, version, max_header_size=10000)
    except Exception as exc:  # ValueError on a bad magic/header, EOFError, SyntaxError in the header literal
        reason = f"not a readable .npy {what} (header: {type(exc).__name__}: {str(exc)[:200]})"
        raise OctReadError(path, reason) from exc
    if dtype.hasobject:
        raise OctReadError(path, f"{what} holds Python objects (pickles are never loaded)")
    check_size(path, product(shape) * dtype.itemsize, size - fh.tell(), f"{what} of shape {shape} {dtype}")


def read_npz(path: Path) -> OctVolume:
    """A .npz with key ``data`` or ``volume`` (or a single array) and optional ``spacing_mm``/``laterality``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            key = next((k for k in ("data", "volume") if k in keys), None)
            if key is None:
                arrays = [k for k in keys if k not in ("spacing_mm", "laterality", "meta", MARKER)]
                if len(arrays) != 1:
                    raise OctReadError(path, f"no 'data' or 'volume' key and not a single array (keys: {keys})")
                key = arrays[0]
            member = npz.zip.getinfo(key if key.endswith(".npy") else f"{key}.npy") if npz.zip else None
            if member is not None:
                with npz.zip.open(member) as fh:
                    _check_npy_header(path, fh, member.file_size, f"array '{key}'")
            array = npz[key]
            spacing = npz["spacing_mm"] if "spacing_mm" in keys else None
            laterality = str(npz["laterality"]) if "laterality" in keys else None
            meta = json.loads(str(npz["meta"])) if "meta" in keys else {}
            ours = MARKER in keys
    except OctReadError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, OSError, JSONDecodeError
        raise OctReadError(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})") from exc
    if laterality in ("", "None"):
        laterality = None
    meta = meta if isinstance(meta, dict) else {}
    meta.pop("spacing_source", None)
    return build_volume(array, path, "npz", spacing_mm=spacing, laterality=laterality, meta=meta,
                        keep_unit_float=ours)


def read_image(path: Path) -> np.ndarray:
    """One 2-D image file as an array (grey, or with a trailing RGB/RGBA axis)."""
    import imageio.v3 as iio

    from oct_wsss.io.limits import check_image

    check_image(path)  # header only: a few bytes claiming a gigapixel image are refused before decoding
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        return np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as exc:
        raise OctReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from exc


def read_single_image(path: Path) -> OctVolume:
    """A single B-scan image (PNG/JPEG/BMP) becomes a one-B-scan volume."""
    image = read_image(path)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if image.ndim != 2 and not rgb:
        raise OctReadError(path, f"expected a 2-D grey or RGB image, got shape {image.shape}")
    return build_volume(image, path, "image", rgb_last=rgb)


__all__ = ["read_tiff", "read_npy", "read_npz", "read_single_image", "read_image", "MARKER"]
