"""Accepted layer boundaries: one npz per accepted B-scan, append-only, in ``PROJECT/boundaries/<volume>/``.

Each accept writes ``<bscan>-v<n>.npz`` (``boundaries`` (9, W) float32 rows, ``names``) through the store's atomic
npz writer (temporary name, fsync, rename), so a crash leaves the previous version in effect, never a half file.
The newest version of a B-scan is the one in effect; nothing is overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_FILE = re.compile(r"^(\d+)-v(\d+)\.npz$")


class BoundaryEdits:
    """The accepted boundaries of one project folder (``root``)."""

    def __init__(self, root: Path, write_npz: Callable[[Path, dict[str, np.ndarray]], str]) -> None:
        self.root = Path(root) / "boundaries"
        self._write = write_npz

    def accept(self, volume: str, bscan: int, boundaries: np.ndarray, names: Sequence[str]) -> Path:
        """Store the (len(names), W) boundary rows of one B-scan as its next version; returns the file."""
        rows = np.asarray(boundaries, np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(names):
            raise ValueError(f"boundaries are ({len(names)}, W) rows, one per name; got {rows.shape}")
        versions = self._versions(volume).get(int(bscan), [])
        path = self.root / volume / f"{int(bscan):04d}-v{max(versions, default=0) + 1}.npz"
        self._write(path, {"boundaries": rows, "names": np.asarray(list(names))})
        return path

    def accepted(self, volume: str) -> dict[int, tuple[np.ndarray, tuple[str, ...]]]:
        """B-scan -> (boundary rows, names) of the newest accepted version."""
        out = {}
        for bscan, versions in self._versions(volume).items():
            with np.load(self.root / volume / f"{bscan:04d}-v{max(versions)}.npz", allow_pickle=False) as npz:
                out[bscan] = (npz["boundaries"], tuple(str(n) for n in npz["names"]))
        return out

    def _versions(self, volume: str) -> dict[int, list[int]]:
        """B-scan -> its stored version numbers (temporary ``.partial`` files are not versions)."""
        found: dict[int, list[int]] = {}
        folder = self.root / volume
        for f in folder.iterdir() if folder.is_dir() else ():
            m = _FILE.match(f.name)
            if m:
                found.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        return found
