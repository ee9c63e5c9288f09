"""Reproducible seeding and a per-epoch metrics log (a CSV file, plus TensorBoard scalars when it is installed)."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

METRICS_FILE = "metrics.csv"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global generators, so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class MetricLog:
    """One row per epoch in a CSV file: ``path`` itself if it ends in ``.csv``, else ``path/metrics.csv``.

    Rows need an ``epoch`` key. A fresh log truncates the file; ``resume=True`` keeps the rows already there — only
    those with epoch < ``start_epoch`` when that is given, so epochs the resumed run repeats are not listed twice.
    A row with keys the header lacks rewrites the file with the wider header; keys a row lacks stay empty.
    TensorBoard scalars go to ``<folder>/tensorboard/<file stem>`` only if ``torch.utils.tensorboard`` imports.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, start_epoch: int | None = None,
                 tensorboard: bool = True) -> None:
        path = Path(path)
        self.path = path if path.suffix == ".csv" else path / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if start_epoch is None or _epoch(r) < start_epoch]
        self.header: list[str] = list(self.rows[0]) if self.rows else []
        self._rewrite()
        first = (start_epoch or 0) if resume else 0
        self._writer = _tensorboard(self.path.parent / "tensorboard" / self.path.stem, first) if tensorboard else None

    def log(self, row: Mapping[str, Any]) -> None:
        """Write one epoch's values (numbers, strings or None) and flush, so the file is current after a crash."""
        if "epoch" not in row:
            raise ValueError(f"a metrics row needs an 'epoch' key; got {sorted(row)}")
        row = dict(row)
        self.rows.append(row)
        new = [k for k in row if k not in self.header]
        if new or not self.header:
            self.header += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, self.header).writerow(_cells(row))
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, _epoch(row))
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (the CSV is never held open)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _rewrite(self) -> None:
        """Write header and all rows from scratch (fresh start, resume, or a widened header)."""
        with self.path.open("w", newline="") as f:
            if self.header:
                writer = csv.DictWriter(f, self.header)
                writer.writeheader()
                writer.writerows(_cells(r) for r in self.rows)


def _epoch(row: Mapping[str, Any]) -> int:
    """The row's epoch as an int (rows read back from the CSV hold strings)."""
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"metrics row without a valid epoch: {dict(row)}") from e


def _cells(row: Mapping[str, Any]) -> dict[str, Any]:
    """CSV cells: None as empty, floats in full precision (repr), everything else as is."""
    return {k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()}


def _tensorboard(log_dir: Path, first_epoch: int) -> Any:
    """A SummaryWriter that drops earlier events from ``first_epoch`` on (a resumed run rewrites them), or None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=first_epoch)
