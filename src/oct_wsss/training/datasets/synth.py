"""The synthetic phantom's layout as ``oct-wsss synth`` writes it: ``labels.csv`` + ``<volume>/bscans|masks``."""

from __future__ import annotations

import csv
from pathlib import Path

from oct_wsss.classes import ONTOLOGY
from oct_wsss.training.data import LabelledSet, Sample

LESION_KEYS = tuple(c.key for c in ONTOLOGY[1:])


def load_synth(root: Path, volumes: list[str] | None = None) -> LabelledSet:
    """Every B-scan listed in ``root/labels.csv`` (optionally only ``volumes``), labels from its class columns."""
    table = root / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{root} is not an `oct-wsss synth` dataset: no labels.csv")
    wanted = None if volumes is None else set(volumes)
    samples = []
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if wanted is not None and row["volume"] not in wanted:
                continue
            labels = frozenset(c.id for c in ONTOLOGY[1:] if row.get(c.key, "0") == "1")
            samples.append(Sample(root / row["image"], labels, row["patient"], root / row["mask"],
                                  row["volume"], int(row["bscan"])))
    if not samples:
        raise ValueError(f"{table}: no B-scans listed")
    return LabelledSet(samples, tuple(c.id for c in ONTOLOGY[1:]), name=f"synth:{root.name}")
