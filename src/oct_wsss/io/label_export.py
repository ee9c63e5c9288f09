"""Exporting a label volume for other tools: multi-page TIFF, NPY, one PNG per B-scan, eyepy .eye; names made safe."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oct_wsss.io.export import atomic_write
from oct_wsss.io.labels import write_labels

FORMATS = ("tiff", "npy", "png", "eye")
DEFAULT_FORMATS = ("tiff", "npy", "png")  # eye also needs the scan itself


def safe_name(name: str) -> str:
    """A file-name stem without folders, traversal or odd characters (``../a b`` -> ``a_b``); never empty."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).name).strip("._")
    return stem or "labels"


class ExportCancelled(RuntimeError):
    """``cancel()`` turned true during an export; nothing was written under the final names."""


def export_labels(labels: np.ndarray, out: str | Path, name: str, formats: tuple[str, ...] = DEFAULT_FORMATS,
                  spacing_mm: tuple[float, float, float] | None = None, image: np.ndarray | None = None,
                  cancel: Callable[[], bool] | None = None) -> list[Path]:
    """Write ``labels`` (n, H, W) ontology ids into ``out`` in each format; returns the paths written.

    ``eye`` (eyepy's format, annotations attached to the scan) needs the OCT ``image`` the labels belong to.
    Files are written into a hidden staging folder in ``out`` and moved into place at the end, so a cancel (or a
    failure) leaves the previous export, if any, as it was.
    """
    import imageio.v3 as iio

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    if "eye" in formats and image is None:
        raise ValueError("the eye format holds the OCT scan with its annotations: give the volume (--volume SCAN)")
    labels = np.asarray(labels, np.uint8)
    out, stem = Path(out), safe_name(name)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))

    def check() -> None:
        if cancel is not None and cancel():
            raise ExportCancelled("export cancelled; nothing was written")

    try:
        staged = []
        if "tiff" in formats:
            check()
            staged.append(write_labels(staging / f"{stem}.tif", labels, spacing_mm))
        if "npy" in formats:
            check()
            staged.append(staging / f"{stem}.npy")
            atomic_write(staged[-1], lambda tmp: np.save(tmp, labels, allow_pickle=False), ".npy")
        if "png" in formats:
            (staging / f"{stem}_png").mkdir()
            for i, page in enumerate(labels):
                check()
                staged.append(staging / f"{stem}_png" / f"{i:03d}.png")
                atomic_write(staged[-1], lambda tmp, p=page: iio.imwrite(tmp, p, extension=".png"), ".png")
        if "eye" in formats:
            from oct_wsss.io.eye_export import export_eye

            check()
            staged.append(export_eye(labels, image, staging / f"{stem}.eye", spacing_mm))
        check()
        paths = []
        for path in staged:
            final = out / path.relative_to(staging)
            final.parent.mkdir(exist_ok=True)
            os.replace(path, final)
            paths.append(final)
        return paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)
