"""The SJTU few-shot SRF B-scans (Zhang et al. 2023) in the project's shared form: ``index.csv`` + ``images/`` +
``labels/`` (1 = SRF). Only SRF is labelled; visible intraretinal cysts are not, so the labels speak about SRF alone.
Patient = the eye (``eye`` column).
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

from oct_wsss.classes import SRF
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import check_root, value_mask

COLUMNS = ("image", "label", "eye", "bscan_index", "has_srf")


def load_sjtu(root: Path) -> LabelledSet:
    """Every row of ``root/index.csv``: SRF present per ``has_srf``, SRF masks from ``labels/``."""
    table = check_root(root, "sjtu") / "index.csv"
    if not table.is_file():
        raise ValueError(f"sjtu: {table} is missing (expected index.csv with {', '.join(COLUMNS)})")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"sjtu: {table} has no rows or lacks column(s) {', '.join(missing)}")
    samples = []
    for line, r in enumerate(rows, start=2):
        if r["has_srf"] not in ("0", "1"):
            raise ValueError(f"{table}, line {line}: has_srf must be 0 or 1, got {r['has_srf']!r}")
        image, label = root / r["image"], root / r["label"]
        samples.append(Sample(image, frozenset({SRF}) if r["has_srf"] == "1" else frozenset(), r["eye"],
                              partial(value_mask, label, ((1, SRF),)), volume=r["eye"], bscan=int(r["bscan_index"])))
    return LabelledSet(samples, (SRF,), name=f"sjtu:{root.name}")
