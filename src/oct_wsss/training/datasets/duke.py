"""Duke DME (Chiu et al. 2015) in any of three forms, told apart by what the folder holds.

- ``reference``: the AGM code's ``2015_BOE_Chiu/segment_annotation/{images,labels}`` with ``train.csv`` /
  ``valid.csv`` (columns index, path, label); label maps are 255 = fluid (``> 150`` counts, as the code does).
  The paper's Duke training set adds RESC fluid and Kermany healthy B-scans, so CSV paths (relative to the code's
  working directory) may point outside ``images/``; those rows get the CSV label and no mask.
- ``mat``: the original ``Subject_XX.mat`` files (``images`` and ``manualFluid1``, both (H, W, N); B-scans whose
  fluid map is all NaN were not annotated and are skipped; fluid = ``manualFluid1 > 0``).
- ``shared``: the project's copy (``index.csv`` + ``images/`` + ``labels/`` dense maps, 9 = fluid, 0-8 = layers).

ROOT may be the datasets root, ``2015_BOE_Chiu`` or ``segment_annotation``. Duke marks fluid without telling IRF
from SRF, so fluid maps to ontology id 7 (fluid, type not distinguished). Patient = subject number (``Subject_XX``).
"""

from __future__ import annotations

import csv
import re
from functools import partial
from pathlib import Path

from natsort import natsorted

from oct_wsss.classes import FLUID
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import (
    by_stem,
    check_root,
    natural,
    threshold_mask,
    trailing_number,
    value_mask,
)
from oct_wsss.training.datasets.duke_mat import mat_samples
from oct_wsss.training.datasets.kermany import patient_id

_SUBJECT = re.compile(r"subject[_-]?(\d+)", re.IGNORECASE)
_SHARED_SPLITS = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def load_duke(root: Path, split: str = "all", grader: int = 1, form: str | None = None) -> LabelledSet:
    """Annotated Duke DME B-scans with a fluid label and fluid masks; ``form`` forces reference, mat or shared."""
    root = check_root(root, "duke")
    form, folder = _detect(root, form)
    if form == "reference":
        samples = _reference(folder, split)
    elif form == "shared":
        samples = _shared(folder, split)
    else:
        if split != "all":
            raise ValueError(f"duke: {folder} holds raw Subject_XX.mat files, which have no splits; use split: all")
        files = [folder] if folder.is_file() else natural(folder.glob("*.mat"))
        samples = mat_samples(files, f"manualFluid{grader}", _patient)
    if not samples:
        raise ValueError(f"duke: no annotated B-scans in {folder} (split {split})")
    return LabelledSet(samples, (FLUID,), name=f"duke:{form}:{split}", info={"form": form, "folder": str(folder)})


_FORMS = {
    "shared": lambda f: (f / "index.csv").is_file() and (f / "labels").is_dir(),
    "reference": lambda f: (f / "images").is_dir() and any((f / f"{s}.csv").is_file() for s in ("train", "valid")),
    "mat": lambda f: f.is_dir() and any(f.glob("*.mat")),
}


def _detect(root: Path, form: str | None) -> tuple[str, Path]:
    """Which form ``root`` (or its usual sub-folders) is in, and that folder; forms are tried in _FORMS order."""
    if form is not None and form not in _FORMS:
        raise ValueError(f"duke: form must be one of {', '.join(_FORMS)}; got {form!r}")
    if root.is_file():
        if root.suffix.lower() == ".mat" and form in (None, "mat"):
            return "mat", root
        raise ValueError(f"duke: {root} is a file but not a .mat volume")
    sub = root / "2015_BOE_Chiu"
    folders = (root, root / "segment_annotation", sub, sub / "segment_annotation")
    for name, test in _FORMS.items():
        if form in (None, name):
            for folder in folders:
                if test(folder):
                    return name, folder
    raise ValueError(f"duke: {root} holds none of segment_annotation/{{images,labels,train.csv}}, Subject_XX.mat "
                     "or index.csv + labels/" + (f" (form {form})" if form else ""))


def _patient(text: str) -> str:
    """``Subject_XX`` from a file name (else path) with a subject number; else Kermany's id or the stem prefix."""
    m = _SUBJECT.search(Path(text).name) or _SUBJECT.search(text)
    return f"Subject_{int(m.group(1)):02d}" if m else patient_id(Path(text).stem)


def _rows(table: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV; ValueError naming the file when a required column is missing."""
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: missing column(s) {', '.join(missing)}")
        return [(reader.line_num, row) for row in reader]


def _reference(folder: Path, split: str) -> list[Sample]:
    """Samples listed in the reference code's train.csv / valid.csv."""
    names = {"train": ("train",), "valid": ("valid",), "all": ("train", "valid")}.get(split)
    if names is None:
        raise ValueError(f"duke: split must be train, valid or all for the reference layout; got {split!r}")
    labels, images_dir = by_stem(folder / "labels"), (folder / "images").resolve()
    seen: dict[Path, Sample] = {}
    for name in names:
        table = folder / f"{name}.csv"
        if not table.is_file():
            if split == "all":
                continue
            raise FileNotFoundError(f"duke: {table} is missing")
        for line, row in _rows(table, ("path", "label")):
            image = _resolve(folder, table, row["path"], line)
            try:
                flag = float(row["label"])
            except ValueError:
                flag = -1.0
            if flag not in (0.0, 1.0):
                raise ValueError(f"{table}, line {line}: label must be 0 or 1, got {row['label']!r}")
            mask_path = labels.get(image.stem) if image.parent.resolve() == images_dir else None
            mask = None if mask_path is None else partial(threshold_mask, mask_path, 150, FLUID)
            seen.setdefault(image, Sample(image, frozenset({FLUID}) if flag else frozenset(), _patient(row["path"]),
                                          mask, volume=_patient(row["path"]), bscan=trailing_number(image.stem)))
    return [seen[p] for p in natural(seen)]


def _resolve(folder: Path, table: Path, value: str, line: int) -> Path:
    """The image a reference CSV ``path`` names: relative to the code's working directory (an ancestor of the
    CSV's folder), or, failing that, the file of that name in ``images/``."""
    given = Path(value.strip())
    bases = [] if given.is_absolute() else [table.parent, *table.parent.parents]
    for candidate in [*(b / given for b in bases), given, folder / "images" / given.name]:
        if candidate.is_file():
            return candidate
    raise ValueError(f"{table}, line {line}: image {value!r} not found (nor under {folder / 'images'})")


def _shared(folder: Path, split: str) -> list[Sample]:
    """Samples of the project's shared copy (index.csv; labels 9 = fluid, 0-8 layers -> background)."""
    table = folder / "index.csv"
    if split != "all" and split not in _SHARED_SPLITS:
        raise ValueError(f"duke: split must be all, train, valid or test for {folder}; got {split!r}")
    samples = []
    for line, row in _rows(table, ("image", "label", "subject", "has_fluid")):
        if split != "all" and row.get("source_split") != _SHARED_SPLITS[split]:
            continue
        image, label = folder / row["image"], folder / row["label"]
        for path in (image, label):
            if not path.is_file():
                raise ValueError(f"{table}, line {line}: {path} does not exist")
        if row["has_fluid"] not in ("0", "1"):
            raise ValueError(f"{table}, line {line}: has_fluid must be 0 or 1, got {row['has_fluid']!r}")
        order = row.get("annotated_bscan_order") or trailing_number(image.stem)
        samples.append(Sample(image, frozenset({FLUID}) if row["has_fluid"] == "1" else frozenset(),
                              _patient(row["subject"]), partial(value_mask, label, ((9, FLUID),)),
                              volume=_patient(row["subject"]), bscan=int(order)))
    return natsorted(samples, key=lambda s: str(s.image))
