"""Exporting a label volume for other tools: multi-page TIFF, NPY, one PNG per B-scan, eyepy .eye; names made safe."""

from __future__ import annotations

import re
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


def export_labels(labels: np.ndarray, out: str | Path, name: str, formats: tuple[str, ...] = DEFAULT_FORMATS,
                  spacing_mm: tuple[float, float, float] | None = None, image: np.ndarray | None = None) -> list[Path]:
    """Write ``labels`` (n, H, W) ontology ids into ``out`` in each format; returns the paths written.

    ``eye`` (eyepy's format, annotations attached to the scan) needs the OCT ``image`` the labels belong to.
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
    paths = []
    if "tiff" in formats:
        paths.append(write_labels(out / f"{stem}.tif", labels, spacing_mm))
    if "npy" in formats:
        path = out / f"{stem}.npy"
        atomic_write(path, lambda tmp: np.save(tmp, labels, allow_pickle=False), ".npy")
        paths.append(path)
    if "png" in formats:
        folder = out / f"{stem}_png"
        folder.mkdir(exist_ok=True)
        for i, page in enumerate(labels):
            path = folder / f"{i:03d}.png"
            atomic_write(path, lambda tmp, p=page: iio.imwrite(tmp, p, extension=".png"), ".png")
            paths.append(path)
    if "eye" in formats:
        from oct_wsss.io.eye_export import export_eye

        paths.append(export_eye(labels, image, out / f"{stem}.eye", spacing_mm))
    return paths
