"""Helpers the dataset adapters share: root checks, natural ordering, patient ids from names, mask remapping.

Mask loaders here are module-level functions so that ``functools.partial`` of them pickles (DataLoader workers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from natsort import natsorted

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.io.arrays import IMAGE_SUFFIXES

_TRAILING_NUMBER = re.compile(r"^(?P<prefix>.+?)[_-](?P<n>\d+)$")


def check_root(root: Path, layout: str) -> Path:
    """``root`` as a Path, or a one-line error when it is missing (FileNotFoundError) or an empty folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{layout} dataset root {root} does not exist")
    if root.is_dir() and not any(root.iterdir()):
        raise ValueError(f"{layout} dataset root {root} is an empty folder")
    return root


def natural(paths: Iterable[Path]) -> list[Path]:
    """Paths in natural order (``img_2`` before ``img_10``), so sample order is stable and human-readable."""
    return natsorted(paths, key=lambda p: str(p))


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), naturally sorted; hidden files are skipped."""
    return natural(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by stem (so ``x.bmp`` pairs with ``x.png``)."""
    return {p.stem: p for p in image_files(folder)} if folder.is_dir() else {}


def stem_prefix(stem: str) -> str:
    """A patient id from a file stem: the part before a trailing ``_<n>`` / ``-<n>``, else before the last ``_``."""
    m = _TRAILING_NUMBER.match(stem)
    if m:
        return m.group("prefix")
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def trailing_number(stem: str) -> int:
    """The trailing number of a stem (B-scan index), or 0."""
    m = _TRAILING_NUMBER.match(stem)
    return int(m.group("n")) if m else 0


def class_ids(keys: Sequence[str | int], where: str) -> frozenset[int]:
    """Ontology lesion ids for class keys (``"srf"``) or ids; ValueError naming ``where`` for unknown ones."""
    ids = set()
    for key in keys:
        try:
            cls = ONTOLOGY[key] if isinstance(key, int) and not isinstance(key, bool) else by_key(str(key))
        except (KeyError, IndexError):
            raise ValueError(f"{where}: unknown lesion class {key!r}") from None
        if cls.id == 0:
            raise ValueError(f"{where}: background is not a lesion class")
        ids.add(cls.id)
    return frozenset(ids)


def read_plane(path: Path) -> np.ndarray:
    """A 2-D label image: the first channel of an RGB(A) file (label bitmaps are often saved as RGB)."""
    from oct_wsss.io.arrays import read_image

    array = read_image(Path(path))
    return array[..., 0] if array.ndim == 3 else array


def value_mask(path: Path, table: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Mask loader: ``(file value, ontology id)`` pairs from ``table``; every other value becomes background."""
    plane = read_plane(path)
    out = np.zeros(plane.shape, np.uint8)
    for value, class_id in table:
        out[plane == value] = class_id
    return out


def threshold_mask(path: Path, threshold: float, class_id: int) -> np.ndarray:
    """Mask loader: pixels above ``threshold`` become ``class_id``, the rest background."""
    plane = read_plane(path)
    return np.where(plane > threshold, class_id, 0).astype(np.uint8)
