"""RESC (AI Challenger 2018 retinal edema) in the layout the AGM reference code reads.

``ROOT/{train,valid}/original_images/*.bmp|png`` (optionally one sub-folder per patient), the matching
``ROOT/{train,valid}/label_images/*`` bitmaps (0 background, 128 PED, 191 SRF, 255 retinal edema area — counted as
background, as the paper does) and optional image labels ``ROOT/resc_cls_labels.npy`` (a dict stem -> [SRF, PED]).

Patient ids: the sub-folder of ``original_images`` when images sit in one, else the stem without its trailing
``_<n>`` (``<patient>_<n>``), else the stem before its last ``_``; ``patient_pattern`` (a regex with one group,
matched against the path relative to ``original_images``) overrides both.
"""

from __future__ import annotations

import re
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from oct_wsss.classes import PED, SRF
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import (
    check_root,
    image_files,
    natural,
    read_plane,
    stem_prefix,
    trailing_number,
    value_mask,
)

SPLITS = ("train", "valid")
LABEL_FILE = "resc_cls_labels.npy"
#: Bitmap value -> ontology id. 255 (retinal edema area) is deliberately absent: it becomes background.
ENCODING: tuple[tuple[int, int], ...] = ((191, SRF), (128, PED))


def load_resc(root: Path, split: str = "train", trust_pickle: bool = False,
              patient_pattern: str | None = None) -> LabelledSet:
    """RESC B-scans of ``split`` ("train", "valid" or "all") with [SRF, PED] labels and bitmap masks."""
    root = check_root(root, "resc")
    splits = SPLITS if split == "all" else (split,)
    if split != "all" and split not in SPLITS:
        raise ValueError(f"resc: split must be one of train, valid, all; got {split!r}")
    table, source = _npy_labels(root / LABEL_FILE, trust_pickle)
    pattern = re.compile(patient_pattern) if patient_pattern else None
    samples = []
    for name in splits:
        images_dir = root / name / "original_images"
        if not images_dir.is_dir():
            raise FileNotFoundError(f"{root} is not a RESC folder: {images_dir} is missing")
        labels_dir = root / name / "label_images"
        bitmaps = {p.relative_to(labels_dir).with_suffix("").as_posix(): p
                   for p in _images_below(labels_dir)} if labels_dir.is_dir() else {}
        images = _images_below(images_dir)
        if not images:
            raise ValueError(f"{images_dir}: no .bmp/.png images")
        for image in images:
            key = image.relative_to(images_dir).with_suffix("").as_posix()
            bitmap = bitmaps.get(key)
            labels = _labels(image, key, bitmap, table)
            mask = None if bitmap is None else partial(value_mask, bitmap, ENCODING)
            patient = _patient(image.relative_to(images_dir), pattern)
            samples.append(Sample(image, labels, patient, mask, volume=f"{name}/{patient}",
                                  bscan=trailing_number(image.stem)))
    info = {"labels_from": source if table is not None else "label_images", "split": split,
            "encoding": {"191": "srf", "128": "ped", "255": "background (retinal edema area)"}}
    return LabelledSet(samples, (SRF, PED), name=f"resc:{split}", info=info)


def _images_below(folder: Path) -> list[Path]:
    """Images directly in ``folder`` plus those in one level of sub-folders (per-patient folders)."""
    found = image_files(folder)
    for sub in natural(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(image_files(sub))
    return found


def _patient(relative: Path, pattern: re.Pattern[str] | None) -> str:
    """Patient id of an image given its path relative to ``original_images``."""
    if pattern is not None:
        m = pattern.search(relative.as_posix())
        if not m or not m.groups():
            raise ValueError(f"resc: patient_pattern {pattern.pattern!r} has no group matching {relative}")
        return m.group(1)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return stem_prefix(relative.stem)


def _labels(image: Path, key: str, bitmap: Path | None, table: dict[str, np.ndarray] | None) -> frozenset[int]:
    """Image labels from the npy table when there is one, else from the label bitmap's values."""
    if table is not None:
        row = table.get(Path(key).name)
        if row is None:
            raise ValueError(f"resc: {image} has no entry in {LABEL_FILE}")
        values = np.asarray(row).ravel()
        if values.size < 2:
            raise ValueError(f"resc: {LABEL_FILE} entry for {image.stem} is {row!r}, expected [SRF, PED]")
        return frozenset(c for c, v in zip((SRF, PED), values[:2], strict=True) if v > 0)
    if bitmap is None:
        raise ValueError(f"resc: {image} has no label bitmap in label_images/ and no usable {LABEL_FILE} "
                         "(a pickled one is read only with trust_pickle=True)")
    present = set(np.unique(read_plane(bitmap)).tolist())
    return frozenset(c for value, c in ENCODING if value in present)


def _npy_labels(path: Path, trust_pickle: bool) -> tuple[dict[str, np.ndarray] | None, str]:
    """The image-label table of ``resc_cls_labels.npy``; None when absent or when it is a pickle not trusted."""
    if not path.is_file():
        return None, ""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError:  # object array: the reference saves a dict, which only unpickling can read
        if not trust_pickle:
            warnings.warn(f"{path} is a pickled dict; not unpickled (pass trust_pickle=True if you trust the file). "
                          "Image labels are derived from label_images/ instead.", stacklevel=3)
            return None, ""
        array = np.load(path, allow_pickle=True)
    if array.dtype == object and array.shape == ():
        array = array.item()
    if not isinstance(array, dict):
        raise ValueError(f"{path}: expected a dict name -> [SRF, PED], got {type(array).__name__}")
    return {str(k): np.asarray(v) for k, v in array.items()}, LABEL_FILE
