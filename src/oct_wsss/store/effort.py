"""Proposal edit effort per model version: how much of what a model proposed graders kept, removed and added.

Counted per class over accepted B-scans that kept their proposal: ``kept`` = proposed pixels the grader left in
that class, ``removed`` = proposed pixels taken out of it, ``added`` = pixels of the class the grader painted that
the proposal did not have. Shares are of the proposed pixels (``added_share`` may pass 1). The honest measure of
how useful a model's proposals are to graders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from oct_wsss.classes import BACKGROUND
from oct_wsss.store.store import Correction


@dataclass(frozen=True)
class Effort:
    """Edit effort of one model version over ``bscans`` B-scans; ``model`` names it (checkpoint id, or the file
    name older records carry)."""

    model: str
    bscans: int
    proposed: int
    kept: int
    removed: int
    added: int

    @property
    def kept_share(self) -> float:
        return self.kept / self.proposed if self.proposed else float("nan")

    @property
    def removed_share(self) -> float:
        return self.removed / self.proposed if self.proposed else float("nan")

    @property
    def added_share(self) -> float:
        return self.added / self.proposed if self.proposed else float("nan")


def bscan_effort(mask: np.ndarray, proposal: np.ndarray) -> tuple[int, int, int, int]:
    """(proposed, kept, removed, added) lesion pixels of one B-scan, class by class."""
    lesion_p, lesion_m = proposal != BACKGROUND, mask != BACKGROUND
    same = proposal == mask
    proposed, kept = int(lesion_p.sum()), int((lesion_p & same).sum())
    return proposed, kept, proposed - kept, int((lesion_m & ~same).sum())


def edit_effort(corrections: Iterable[Correction]) -> list[Effort]:
    """One :class:`Effort` per model version over the accepted corrections; a version is the checkpoint's SHA-256
    (two files with the same weights are one version, a retrained file of the same name is another)."""
    totals: dict[str, list[Any]] = {}
    for c in corrections:
        if c.mask_file is None:
            continue
        arrays = c.arrays()
        if "proposal" not in arrays:
            continue
        key, name = model_version(c.proposal)
        row = totals.setdefault(key, [name, 0, 0, 0, 0, 0])
        row[1] += 1
        for k, v in enumerate(bscan_effort(arrays["mask"], arrays["proposal"]), start=2):
            row[k] += v
    return sorted((Effort(*row) for row in totals.values()), key=lambda e: e.model)


def model_version(info: dict[str, Any]) -> tuple[str, str]:
    """(key, name) of the model behind a proposal's provenance: its checkpoint's SHA-256 and id when recorded (every
    proposal made by this version; a SAM 2 propagation's ``sam2`` checkpoint alike), else the checkpoint's file name,
    or the method and its engine (a weight-free propagation; records made before hashes)."""
    ckpt, sam2 = info.get("checkpoint"), info.get("sam2")
    if not isinstance(ckpt, dict) and isinstance(sam2, dict) and sam2.get("sha256"):
        ckpt = {"sha256": sam2["sha256"], "id": f"sam2-{sam2['sha256'][:12]}"}
    if isinstance(ckpt, dict) and ckpt.get("sha256"):
        return str(ckpt["sha256"]), str(ckpt.get("id") or f"{info.get('method', 'model')}-{ckpt['sha256'][:12]}")
    name = str(ckpt or "-".join(str(info[k]) for k in ("method", "engine") if info.get(k)) or "unknown")
    return name, name
