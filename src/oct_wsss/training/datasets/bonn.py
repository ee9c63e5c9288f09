"""B-scans with RPE / BM line maps (the Bonn OCT-Annotation-Tool's drusen data): drusen labels from the lines.

Two forms of one layout: the project's shared copy ``ROOT/bscans/NNN.png`` + ``ROOT/rpe_bm_layers/NNN.png`` and the
tool's own ``ROOT/OCT-Volume-Scan/N-Input.tif`` + ``ROOT/RPE-BM-Layers/N-layers.png`` (paired by the number N). In a
line map the RPE is drawn as 255 (170 in a few B-scans of the Bonn volume), BM as 127, everything else 0;
``rpe_values`` / ``bm_values`` override that. Drusen masks (ontology id 6) are derived per volume with
:func:`~oct_wsss.training.datasets.drusen.drusen_masks`. ``ROOT/OCT-Info.xml`` (a stripped Heyex XML) gives the
physical scale when the folder is opened with ``oct_wsss.io.read_volume``. One folder is one eye: patient = the
folder name (``patient`` overrides), so several such folders split by patient.
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from oct_wsss.classes import DRUSEN
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import check_root, image_files, read_plane
from oct_wsss.training.datasets.drusen import drusen_masks, lines_from_layer_map

FORMS = (("bscans", "rpe_bm_layers"), ("OCT-Volume-Scan", "RPE-BM-Layers"))
RPE_VALUES, BM_VALUES = (255, 170), (127,)
_NUMBER = re.compile(r"(\d+)")


def load_bonn(root: Path, patient: str | None = None, rpe_values: list[int] | None = None,
              bm_values: list[int] | None = None, minimum_height: int = 2) -> LabelledSet:
    """Every B-scan of ``root`` that has a line map, labelled drusen where the derived mask holds any."""
    root = check_root(root, "bonn")
    pairs = line_map_pairs(root)
    rpe_v, bm_v = tuple(rpe_values or RPE_VALUES), tuple(bm_values or BM_VALUES)
    masks = _drusen(tuple(str(m) for _, m, _ in pairs), rpe_v, bm_v, int(minimum_height))
    who, maps = patient or root.name, tuple(str(m) for _, m, _ in pairs)
    samples = [Sample(image, frozenset({DRUSEN}) if masks[i].any() else frozenset(), who,
                      partial(bonn_drusen_mask, maps, rpe_v, bm_v, int(minimum_height), i), volume=who, bscan=n)
               for i, (image, _, n) in enumerate(pairs)]
    return LabelledSet(samples, (DRUSEN,), name=f"bonn:{root.name}",
                       info={"drusen_pixels": int(masks.sum()), "bscans_with_drusen": int(masks.any(axis=(1, 2)).sum()),
                             "rule": "eyepy.quant.drusen.drusen (ideal RPE from the RPE-BM distance histogram)",
                             "minimum_height_px": int(minimum_height)})


def line_map_pairs(root: Path) -> list[tuple[Path, Path, int]]:
    """(B-scan, line map, number) triples of the first form present, in number order."""
    for images_name, lines_name in FORMS:
        images_dir, lines_dir = root / images_name, root / lines_name
        if images_dir.is_dir() and lines_dir.is_dir():
            lines = {_number(p): p for p in image_files(lines_dir)}
            pairs = [(p, lines[_number(p)], _number(p)) for p in image_files(images_dir) if _number(p) in lines]
            if not pairs:
                raise ValueError(f"bonn: no B-scan in {images_dir} has a line map of the same number in {lines_dir}")
            return sorted(pairs, key=lambda t: t[2])
    raise ValueError(f"bonn: {root} has neither bscans/ + rpe_bm_layers/ nor OCT-Volume-Scan/ + RPE-BM-Layers/")


def _number(path: Path) -> int:
    m = _NUMBER.search(path.stem)
    return int(m.group(1)) if m else -1


@lru_cache(maxsize=2)
def _drusen(maps: tuple[str, ...], rpe_values: tuple[int, ...], bm_values: tuple[int, ...],
            minimum_height: int) -> np.ndarray:
    """Drusen masks (n, H, W) of one volume's line maps (the ideal RPE is estimated over the whole volume)."""
    lines = [lines_from_layer_map(read_plane(Path(m)), rpe_values, bm_values) for m in maps]
    heights = {read_plane(Path(m)).shape for m in maps[:1]}
    height = next(iter(heights))[0]
    widths = {len(r) for r, _ in lines}
    if len(widths) != 1:
        raise ValueError(f"bonn: line maps differ in width ({sorted(widths)})")
    rpe, bm = np.stack([r for r, _ in lines]), np.stack([b for _, b in lines])
    try:
        return drusen_masks(rpe, bm, height, minimum_height)
    except ValueError as exc:
        raise ValueError(f"bonn: {Path(maps[0]).parent}: {exc}") from exc


def bonn_drusen_mask(maps: tuple[str, ...], rpe_values: tuple[int, ...], bm_values: tuple[int, ...],
                     minimum_height: int, index: int) -> np.ndarray:
    """Mask loader: the drusen mask of B-scan ``index`` as ontology ids (6)."""
    return _drusen(maps, rpe_values, bm_values, minimum_height)[index].astype(np.uint8) * np.uint8(DRUSEN)
