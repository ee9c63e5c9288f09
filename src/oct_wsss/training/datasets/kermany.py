"""Kermany OCT2017 (``ROOT/{train,test,val}/{CNV,DME,DRUSEN,NORMAL}/<CLASS>-<patient>-<n>.jpeg``) and the AGM
reference's binary re-packing of it (``oct_kaggle/{train,test}/{0.normal,1.abnormal}``). Image-level labels only.

Default mapping, folder -> ontology classes: NORMAL and 0.normal -> none (healthy); DRUSEN -> drusen; DME -> fluid;
CNV -> fluid, because OCT2017's CNV B-scans are exudative (wet) AMD chosen for their subretinal/intraretinal fluid
and the folder does not say which; 1.abnormal -> fluid. The labels are diagnoses of the eye, not an inventory of the
B-scan (a CNV image may also show drusen), so treat them as weak. ``mapping`` overrides entries folder by folder.
Each sample's ``volume`` is its folder name (so a trainer can pick NORMAL only, e.g. for GANomaly), ``bscan`` the
trailing number of its name; patient = the number in ``<CLASS>-<patient>-<n>`` (shared across disease folders).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from oct_wsss.classes import DRUSEN, FLUID, ONTOLOGY
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import (
    check_root,
    class_ids,
    image_files,
    natural,
    stem_prefix,
    trailing_number,
)

DEFAULT_MAPPING: dict[str, frozenset[int]] = {
    "NORMAL": frozenset(), "DRUSEN": frozenset({DRUSEN}), "DME": frozenset({FLUID}), "CNV": frozenset({FLUID}),
    "0.normal": frozenset(), "1.abnormal": frozenset({FLUID}),
}
_NAME = re.compile(r"^[A-Za-z]+-(?P<patient>\d+)-(?P<n>\d+)$")
_SPLITS = ("train", "val", "test")


def load_kermany(root: Path, split: str = "train", mapping: dict[str, list[str]] | None = None,
                 folders: list[str] | None = None) -> LabelledSet:
    """B-scans of ``split`` ("train", "val", "test" or "all"), optionally only the class ``folders`` named."""
    table = dict(DEFAULT_MAPPING)
    for folder, keys in (mapping or {}).items():
        table[str(folder)] = class_ids([keys] if isinstance(keys, str) else list(keys), f"kermany mapping[{folder!r}]")
    root = _base(check_root(root, "kermany"), table)
    if split == "valid":
        split = "val"
    if split != "all" and split not in _SPLITS:
        raise ValueError(f"kermany: split must be one of train, val, test, all; got {split!r}")
    names = [s for s in _SPLITS if (root / s).is_dir()] if split == "all" else [split]
    wanted = None if folders is None else set(folders)
    samples = []
    for name in names:
        split_dir = root / name
        if not split_dir.is_dir():
            raise FileNotFoundError(f"kermany: {split_dir} is missing (have: {', '.join(_present(root)) or 'none'})")
        for class_dir in natural(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if wanted is not None and class_dir.name not in wanted:
                continue
            if class_dir.name not in table:
                raise ValueError(f"kermany: no mapping for folder {class_dir} (known: {', '.join(table)}); "
                                 "pass mapping: {FOLDER: [class keys]}")
            for image in image_files(class_dir):
                samples.append(Sample(image, table[class_dir.name], patient_id(image.stem), None,
                                      volume=class_dir.name, bscan=trailing_number(image.stem)))
    if not samples:
        only = f", folders {folders}" if folders else ""
        raise ValueError(f"kermany: no images under {root} for split {split}{only}")
    classes = tuple(c.id for c in ONTOLOGY[1:] if any(c.id in ids for ids in table.values()))
    info = {"split": split, "folders": dict(Counter(s.volume for s in samples)),
            "mapping": {k: sorted(ONTOLOGY[i].key for i in v) for k, v in table.items()}}
    return LabelledSet(samples, classes, name=f"kermany:{split}", info=info)


def _present(root: Path) -> list[str]:
    return [s for s in _SPLITS if (root / s).is_dir()]


def _base(root: Path, table: dict[str, frozenset[int]]) -> Path:
    """The folder holding the split folders: ROOT, or the one sub-folder (``OCT2017 ``, ``oct_kaggle``) that does."""
    if _present(root):
        return root
    subs = [p for p in natural(root.iterdir()) if p.is_dir() and any(
        (p / s / c).is_dir() for s in _present(p) for c in table)]
    if len(subs) == 1:
        return subs[0]
    raise ValueError(f"kermany: {root} has no train/val/test folders of {', '.join(table)}" +
                     (f" (several candidates: {', '.join(p.name for p in subs)})" if subs else ""))


def patient_id(stem: str) -> str:
    """The patient number of ``CNV-1234567-12``; other names fall back to the stem without its trailing number."""
    m = _NAME.match(stem)
    return m.group("patient") if m else stem_prefix(stem)
