"""Batch proposals for reading centres: a folder of volumes or a CSV manifest, one output folder per volume,
resumable (a volume is done once its output folder exists: it is written beside it and renamed into place), and
``--shard i/n`` so a Slurm job array or several GPUs split one cohort.
"""

from __future__ import annotations

import csv
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oct_wsss.cli._common import CliError


@dataclass(frozen=True)
class Item:
    """One volume of a batch: where it is and the name of its output folder."""

    id: str
    path: Path


def is_batch(path: Path) -> bool:
    """A CSV manifest, or a folder holding volumes (files or sub-folders) that the reader would not open as one
    volume (B-scan images here or in ``bscans/``, a HEYEX XML export, RETOUCH): the same test as ``read_volume``."""
    from oct_wsss.io.folder import is_volume_folder

    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    return any(not p.name.startswith(".") for p in path.iterdir()) and not is_volume_folder(path)


def batch_items(path: Path) -> list[Item]:
    """The volumes of a folder (each sub-folder, and each file of an OCT type: a dataset's labels.csv or
    generation.json is not a volume) or of a CSV manifest (``path`` column, optional ``id``; relative paths are
    relative to the manifest), sorted by id; ids must be unique."""
    from oct_wsss.io import SUPPORTED_SUFFIXES
    from oct_wsss.io.label_export import safe_name

    if path.is_dir():
        items = [Item(safe_name(p.stem if p.is_file() else p.name), p) for p in sorted(path.iterdir())
                 if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in SUPPORTED_SUFFIXES)]
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "path" not in rows[0]:
            raise CliError(f"{path}: a manifest is a CSV with a 'path' column (and optionally 'id')")
        items = []
        for row in rows:
            p = Path(row["path"])
            p = p if p.is_absolute() else path.parent / p
            items.append(Item(safe_name(row.get("id") or p.stem), p))
    ids = [i.id for i in items]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CliError(f"{path}: volume ids {dupes[:5]} occur twice; give unique ids in the manifest's 'id' column")
    return sorted(items, key=lambda i: i.id)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise CliError(f"--shard takes i/n, e.g. 0/4 (i from 0 to n - 1); got {text!r}") from err
    if not 0 <= i < n:
        raise CliError(f"--shard {text}: i must be in 0..{n - 1}")
    return i, n


def shard(items: list[Item], i: int, n: int) -> list[Item]:
    """Every n-th volume starting at i (ids sorted, so every shard sees the same order)."""
    return items[i::n]


def is_done(out: Path, item: Item) -> bool:
    """True when the volume's output folder is in place (it only appears, renamed, once complete)."""
    return (out / item.id / "labels.tif").is_file()


def run_batch(items: list[Item], out: Path, propose_one: Callable[[Path, Path], dict[str, Any]],
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Propose every item not done yet into ``out/<id>/``; a volume that fails is reported and the rest go on."""
    out.mkdir(parents=True, exist_ok=True)
    done, skipped, failed = [], [], []
    t0 = time.perf_counter()
    for n, item in enumerate(items, start=1):
        if is_done(out, item):
            skipped.append(item.id)
            continue
        partial = out / f".{item.id}.partial"
        shutil.rmtree(partial, ignore_errors=True)  # left by a crash: start that volume again
        try:
            info = propose_one(item.path, partial)
        except Exception as err:  # one bad volume must not stop a cohort; the reason is reported
            shutil.rmtree(partial, ignore_errors=True)
            failed.append({"id": item.id, "path": str(item.path), "error": f"{type(err).__name__}: {err}"})
            log(f"[{n}/{len(items)}] {item.id}: failed ({type(err).__name__}: {err})")
            continue
        partial.rename(out / item.id)
        done.append(item.id)
        log(f"[{n}/{len(items)}] {item.id}: {info.get('bscans', '?')} B-scans in {info.get('seconds', 0):.1f} s")
    seconds = time.perf_counter() - t0
    return {"proposed": done, "skipped": skipped, "failed": failed, "seconds": round(seconds, 2),
            "volumes_per_hour": round(3600 * len(done) / seconds, 1) if done and seconds > 0 else None}


def write_failures(out: Path, failed: list[dict[str, str]], i: int, n: int) -> Path | None:
    """``out/failed-<i>-of-<n>.csv`` listing the volumes that failed (id, path, error), or None when none did."""
    if not failed:
        return None
    from oct_wsss.io import atomic_write

    path = out / f"failed-{i}-of-{n}.csv"

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "path", "error"])
            writer.writeheader()
            writer.writerows(failed)

    atomic_write(path, write, ".csv")
    return path


def report(summary: dict[str, Any]) -> None:
    """One summary line on stdout; failures on stderr."""
    print(f"batch: {len(summary['proposed'])} proposed, {len(summary['skipped'])} already done, "
          f"{len(summary['failed'])} failed in {summary['seconds']:.1f} s"
          + (f" ({summary['volumes_per_hour']} volumes/hour)" if summary["volumes_per_hour"] else ""))
    for f in summary["failed"]:
        print(f"failed: {f['id']}: {f['error']}", file=sys.stderr)
