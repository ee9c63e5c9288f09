"""A generic manifest CSV: one row per B-scan, for data in no layout the other adapters know.

Columns (header names are case-insensitive): ``image`` (path relative to the CSV's folder) and ``patient`` are
required; ``mask`` (a label image already in ontology ids), ``volume``, ``bscan`` and ``split`` are optional; one
0/1 column per lesion class key (srf, irf, ped, ez, hrf, drusen, fluid) — the class columns present are the classes
the labels speak about (none present: an all-healthy set). ROOT is the CSV file or a folder with ``manifest.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from oct_wsss.classes import ONTOLOGY
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import check_root

MANIFEST = "manifest.csv"
REQUIRED = ("image", "patient")


def load_csv(root: Path, split: str | None = None) -> LabelledSet:
    """Every row of the manifest (only rows whose ``split`` column equals ``split`` when one is given)."""
    table = _table(check_root(root, "csv"))
    base = table.parent
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{table}: empty file, expected a header with image, patient, ...")
        columns = [h.strip().lower() for h in header]
        dupes = sorted({c for c in columns if c and columns.count(c) > 1})
        if dupes:
            raise ValueError(f"{table}: duplicate column(s) {', '.join(dupes)}")
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"{table}: missing column(s) {', '.join(missing)} (header: {', '.join(columns)})")
        if split is not None and "split" not in columns:
            raise ValueError(f"{table}: split {split!r} asked for but the manifest has no 'split' column")
        class_columns = [(c.key, c.id) for c in ONTOLOGY[1:] if c.key in columns]
        samples = []
        for row_values in reader:
            line = reader.line_num
            if not any(v.strip() for v in row_values):
                continue
            if len(row_values) != len(columns):
                raise ValueError(f"{table}, line {line}: {len(row_values)} fields, header has {len(columns)}")
            row = {c: v.strip() for c, v in zip(columns, row_values, strict=True)}
            if split is not None and row["split"] != split:
                continue
            samples.append(_sample(row, class_columns, base, f"{table}, line {line}"))
    if not samples:
        raise ValueError(f"{table}: no rows" + (f" with split {split!r}" if split is not None else ""))
    info = {"manifest": str(table), "class_columns": [k for k, _ in class_columns]}
    return LabelledSet(samples, tuple(i for _, i in class_columns), name=f"csv:{table.stem}", info=info)


def _table(root: Path) -> Path:
    """The manifest file ``root`` names or holds."""
    if root.is_file():
        return root
    table = root / MANIFEST
    if not table.is_file():
        raise FileNotFoundError(f"csv: {root} has no {MANIFEST} (pass the CSV file itself as root otherwise)")
    return table


def _sample(row: dict[str, str], class_columns: list[tuple[str, int]], base: Path, where: str) -> Sample:
    """One manifest row as a Sample; ValueError naming ``where`` for bad values or missing files."""
    image = _file(row["image"], base, "image", where)
    if not row["patient"]:
        raise ValueError(f"{where}: empty patient")
    mask = _file(row["mask"], base, "mask", where) if row.get("mask") else None
    labels = set()
    for key, class_id in class_columns:
        value = row[key]
        if value not in ("0", "1"):
            raise ValueError(f"{where}: column {key} must be 0 or 1, got {value!r}")
        if value == "1":
            labels.add(class_id)
    bscan = row.get("bscan") or "0"
    if not bscan.isdigit():
        raise ValueError(f"{where}: bscan must be a non-negative integer, got {bscan!r}")
    return Sample(image, frozenset(labels), row["patient"], mask, row.get("volume", ""), int(bscan))


def _file(value: str, base: Path, column: str, where: str) -> Path:
    """A file named relative to the manifest's folder (absolute paths are taken as they are)."""
    if not value:
        raise ValueError(f"{where}: empty {column}")
    path = base / Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"{where}: {column} file {path} does not exist")
    return path
