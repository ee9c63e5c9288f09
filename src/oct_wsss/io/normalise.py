"""The normalisation policy every reader applies, so that all formats give the same kind of OctVolume."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.errors import OctReadError
from oct_wsss.volume import DEFAULT_SPACING_MM, OctVolume

#: Heidelberg marks invalid pixels with float32 max (3.4028235e38); anything this large is not a reflectivity.
INVALID_MARKER_MIN = 3.0e38

_LATERALITY = {"OD": "OD", "OS": "OS", "R": "OD", "L": "OS", "RIGHT": "OD", "LEFT": "OS"}


def laterality_from(value: Any) -> str | None:
    """Map the many vendor spellings ('OD', 'R', 'Right', enum names like 'R') to 'OD'/'OS' or None."""
    if value is None:
        return None
    text = str(getattr(value, "name", value)).strip().strip("\x00").upper()
    return _LATERALITY.get(text)


def to_grey(image: np.ndarray) -> np.ndarray:
    """RGB/RGBA (last axis 3 or 4) to one channel: a channel if all three are equal, else Rec.601 luminance."""
    rgb = image[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    lum = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(image.dtype, np.integer):
        return np.rint(lum).astype(image.dtype)
    return lum.astype(image.dtype)


def normalise_array(
    array: np.ndarray, path: str | Path, *, rgb_last: bool = False, keep_unit_float: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the policy: shape to (n, H, W), uint8 kept, anything else min–max scaled to float32 [0, 1].

    ``rgb_last`` says the last axis is colour (from an image reader). ``keep_unit_float`` keeps float32
    data already inside [0, 1] unchanged (the project's own files), so round trips are exact.
    Returns the array and the meta entries it adds (source dtype/range, number of non-finite values).
    """
    array = np.asarray(array)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise OctReadError(path, f"unsupported data type {array.dtype}")
    if array.size == 0 or 0 in array.shape:
        raise OctReadError(path, f"empty volume (shape {array.shape})")
    if np.iscomplexobj(array):
        raise OctReadError(path, "complex-valued data is not an OCT intensity volume")
    if rgb_last or (array.ndim == 4 and array.shape[-1] in (3, 4)):
        if array.shape[-1] not in (3, 4) or array.ndim not in (3, 4):
            raise OctReadError(path, f"expected RGB/RGBA image data, got shape {array.shape}")
        array = to_grey(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise OctReadError(path, f"expected (n_bscans, height, width) or a single 2-D B-scan; got shape {array.shape}")
    meta: dict[str, Any] = {}
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array), meta
    if array.dtype == bool:
        return array.astype(np.uint8), meta
    meta["source_dtype"] = str(array.dtype)
    if keep_unit_float and array.dtype == np.float32 and all(np.isfinite(page).all() for page in array):
        lo, hi = float(array.min()), float(array.max())
        if 0.0 <= lo and hi <= 1.0:
            meta["source_range"] = [lo, hi]
            return np.ascontiguousarray(array), meta
    # Per B-scan in float64, written into one float32 output: a 200x496x1024 uint16 volume needs its 400 MB result
    # plus a few MB, not a float64 copy of the whole volume (and its temporaries). Same arithmetic, same results.
    is_float = np.issubdtype(array.dtype, np.floating)
    n_bad, lo, hi = 0, np.inf, -np.inf
    if is_float:
        for page in array:
            p = page.astype(np.float64, copy=False)
            good = p[np.isfinite(p) & (np.abs(p) < INVALID_MARKER_MIN)]
            n_bad += p.size - good.size
            if good.size:
                lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
    else:  # integers cannot be NaN/inf or reach the invalid marker
        lo, hi = float(array.min()), float(array.max())
    if n_bad == array.size:
        raise OctReadError(path, "no finite values (all NaN/inf/invalid markers)")
    if n_bad:
        warnings.warn(
            f"{path}: {n_bad} non-finite or invalid-marker values set to the volume's finite minimum {lo:g}",
            stacklevel=3,
        )
    meta["source_range"] = [lo, hi]
    meta["n_nonfinite"] = n_bad
    out = np.zeros(array.shape, np.float32)  # a constant volume stays all zeros
    if hi > lo:
        for i, page in enumerate(array):
            work = page.astype(np.float64)
            if n_bad:
                work[~np.isfinite(work) | (np.abs(work) >= INVALID_MARKER_MIN)] = lo
            out[i] = (work - lo) / (hi - lo)
    return out, meta


def build_volume(
    array: np.ndarray,
    path: str | Path,
    fmt: str,
    *,
    spacing_mm: Any = None,
    laterality: Any = None,
    meta: dict[str, Any] | None = None,
    patient: dict[str, Any] | None = None,
    rgb_last: bool = False,
    keep_unit_float: bool = False,
) -> OctVolume:
    """Normalise ``array`` and wrap it with spacing (file or default), laterality, source, meta and patient."""
    data, extra = normalise_array(array, path, rgb_last=rgb_last, keep_unit_float=keep_unit_float)
    full_meta = dict(meta or {})
    full_meta.update(extra)
    spacing = _valid_spacing(spacing_mm)
    if spacing is None:
        spacing = DEFAULT_SPACING_MM
        full_meta["spacing_source"] = "default"
    else:
        full_meta.setdefault("spacing_source", "file")
    path = Path(path)
    return OctVolume(
        data=data,
        spacing_mm=spacing,
        laterality=laterality_from(laterality),
        source={"format": fmt, "path": str(path), "name": path.name},
        meta=full_meta,
        patient={k: v for k, v in (patient or {}).items() if v not in (None, "", b"")},
    )


def _valid_spacing(spacing: Any) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        return None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        return None
    return values  # type: ignore[return-value]


def fill_spacing(spacing: Any, default_index_values: tuple[float, float, float] = DEFAULT_SPACING_MM):
    """Per-axis spacing where some axes may be missing: missing/invalid axes take the default value."""
    out, defaulted = [], []
    for i, s in enumerate(spacing):
        try:
            v = float(s)
        except (TypeError, ValueError):
            v = float("nan")
        if not (np.isfinite(v) and v > 0):
            v = default_index_values[i]
            defaulted.append("zyx"[i])
        out.append(v)
    return tuple(out), defaulted
