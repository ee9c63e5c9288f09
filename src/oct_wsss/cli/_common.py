"""What every subcommand shares: the user-facing error and argument parsers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def parse_bscans(text: str | None, n_bscans: int) -> list[int] | None:
    """'5', '0-9', '0-9,20' or 'all' (None) -> B-scan indices, each checked against the volume."""
    if text is None or text == "all":
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError as err:
        raise CliError(f"--bscans takes e.g. 5, 0-9 or 0-9,20; got {text!r}") from err
    bad = [i for i in out if not 0 <= i < n_bscans]
    if bad or not out:
        raise CliError(f"--bscans {text!r} is outside the volume's B-scans 0..{n_bscans - 1}")
    return sorted(set(out))


def ints(text: str) -> list[int]:
    """'32,50,64' -> [32, 50, 64], with a one-line error otherwise."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise CliError(f"expected comma-separated integers, got {text!r}") from err


def write_labels_and_provenance(out: Path, labels: np.ndarray, spacing_mm: tuple, provenance: dict) -> list[Path]:
    """``OUT/labels.tif`` and ``OUT/provenance.json`` (each written atomically), the pair every proposal writes."""
    import json

    from oct_wsss.io import atomic_write, write_labels

    out.mkdir(parents=True, exist_ok=True)
    files = [write_labels(out / "labels.tif", labels, tuple(spacing_mm)), out / "provenance.json"]
    atomic_write(files[1], lambda tmp: Path(tmp).write_text(json.dumps(provenance, indent=2)))
    return files
