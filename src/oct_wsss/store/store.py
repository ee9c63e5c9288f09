"""``CorrectionStore``: the grader's accepted (and rejected) B-scans in a project folder, crash-safe.

Layout: ``PROJECT/corrections.sqlite`` (WAL) indexes every decision; ``PROJECT/masks/<volume>/<bscan>-v<n>.npz``
holds the accepted mask, the B-scan's pixels (so fine-tuning needs nothing else) and the proposal it started from.
The mask file is written and fsync'ed under a temporary name and renamed before its row commits, so an acknowledged
accept is always complete and a crash leaves at most an orphan file, never a row without its mask. Re-accepting a
B-scan adds a version; nothing is overwritten. Volume ids are salted hashes of the voxels: no PHI is stored.
``PROJECT/sam2-embeddings/`` (``EMBEDDINGS_DIR``) is SAM 2's embedding cache, which the store itself never reads.

Undo and redo move which version is in effect (the *head*) per B-scan: each version records the one it replaced
(its ``parent``, 0 = unreviewed), and every move is a row appended to ``heads`` in the same transaction as the
decision it concerns. Undo goes to the parent, redo to the newest version made from the head; a new decision after an
undo starts a new branch, so redo then follows it. Nothing is ever deleted, so an undone accept is still on disk.
A propagation's pages are *proposed* versions sharing a ``run`` id: in effect until the grader decides, undone and
redone together (``undo_run`` / ``redo_run``), never written over an accepted B-scan, and back when a project reopens.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY
from oct_wsss.store.boundaries import BoundaryEdits
from oct_wsss.store.masks import changes, checked_mask, derived_labels, version_arrays
from oct_wsss.store.schema import SCHEMA_VERSION, migrate
from oct_wsss.volume import OctVolume

DB_FILE = "corrections.sqlite"
#: the project's SAM 2 embeddings on disk (``propose.sam2_cache``; the SAM 2 widgets and HRF proposals fill it)
EMBEDDINGS_DIR = "sam2-embeddings"
COLUMNS = ("c.volume, c.bscan, c.status, c.version, c.labels, c.changes, c.proposal, c.grader, c.time, c.mask_file, "
           "c.sha256, c.parent, c.run")
ACCEPTED, REJECTED, PROPOSED = "accepted", "rejected", "proposed"


class StoreError(RuntimeError):
    """The project folder cannot be used (not writable, damaged mask file, newer schema); says what to do."""


@dataclass(frozen=True)
class Correction:
    """One decision on one B-scan (the latest version of it, when listed)."""

    volume: str
    bscan: int
    status: str
    version: int
    labels: tuple[int, ...]
    changes: dict[str, dict[str, int]]
    proposal: dict[str, Any]
    grader: str
    time: str
    mask_file: Path | None
    sha256: str | None
    parent: int = 0  # the version this one replaced (0: the B-scan was unreviewed)
    run: str | None = None  # the propagation run that proposed it (proposed versions only)

    def arrays(self) -> dict[str, np.ndarray]:
        """``mask`` (H, W) uint8 ontology ids, ``image`` (the B-scan), ``proposal`` when kept; checksum-verified."""
        if self.mask_file is None:
            raise StoreError(f"B-scan {self.bscan} of volume {self.volume} was rejected; it has no mask")
        data = self.mask_file.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise StoreError(f"{self.mask_file} does not match its checksum; the file was changed or damaged")
        with np.load(self.mask_file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


class CorrectionStore:
    """The corrections of one project folder; every method opens its own connection (safe across threads/processes)."""

    def __init__(self, project_dir: str | Path) -> None:
        self.root = Path(project_dir)
        try:
            (self.root / "masks").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the project folder {self.root}: {err.strerror}") from err
        self.db = self.root / DB_FILE
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            migrate(con)
            row = con.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        self._salt = row[0]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.db, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")
            yield con
        except sqlite3.DatabaseError as err:
            advice = "; nothing was recorded (free disk space and try again)" if "full" in str(err) else ""
            raise StoreError(f"{self.db}: {err}{advice}") from err
        finally:
            con.close()

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def volume_id(self, volume: OctVolume | np.ndarray) -> str:
        """A salted hash of the voxels: the same scan gets the same id in this project, and the id reveals nothing."""
        data = np.ascontiguousarray(volume.data if isinstance(volume, OctVolume) else volume)
        digest = hashlib.sha256(self._salt.encode())
        digest.update(repr((data.shape, str(data.dtype))).encode())
        digest.update(memoryview(data.reshape(-1).view(np.uint8)))
        return digest.hexdigest()[:24]

    def accept(self, volume: str, bscan: int, mask: np.ndarray, *, image: np.ndarray | None = None,
               proposal: np.ndarray | None = None, proposal_info: dict[str, Any] | None = None,
               grader: str = "", labels: tuple[int, ...] | None = None) -> Correction:
        """Record the grader's mask for one B-scan; returns once it is durable (file fsync'ed, row committed).

        ``labels``: the image-level labels as the grader set them; by default derived from the mask.
        """
        mask = checked_mask(mask)
        if labels is not None and not set(labels) <= set(range(1, len(ONTOLOGY))):
            raise ValueError(f"image-level labels are lesion ids 1..{len(ONTOLOGY) - 1}; got {sorted(labels)}")
        labels = derived_labels(mask) if labels is None else tuple(sorted(int(c) for c in set(labels)))
        kept = None if proposal is None else np.asarray(proposal, np.uint8)
        arrays = version_arrays(mask, image=image, proposal=kept)
        return self._record(volume, bscan, ACCEPTED, arrays, labels, changes(mask, proposal), proposal_info, grader)

    def propose(self, volume: str, bscan: int, mask: np.ndarray, *, run: str, image: np.ndarray | None = None,
                previous: dict[str, np.ndarray] | None = None, proposal_info: dict[str, Any] | None = None,
                grader: str = "") -> Correction:
        """Record a *proposed* version of one B-scan (a page a propagation wrote), so that undo, redo and reopening
        see it; ``run`` groups the pages of one propagation (:meth:`undo_run`), ``previous`` keeps, as
        ``previous_<key>``, what the page was before. Refused on an accepted B-scan: proposals never overwrite the
        grader's work."""
        mask = checked_mask(mask)
        arrays = version_arrays(mask, image=image, **{f"previous_{k}": v for k, v in (previous or {}).items()})
        return self._record(volume, bscan, PROPOSED, arrays, derived_labels(mask), changes(mask, None),
                            proposal_info, grader, run=run)

    def _record(self, volume: str, bscan: int, status: str, arrays: dict[str, np.ndarray], labels: tuple[int, ...],
                change: dict[str, dict[str, int]], info: dict[str, Any] | None, grader: str,
                run: str | None = None) -> Correction:
        """Write a new version's mask file, then its row and the head move in one transaction."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            version, parent = self._next_version(con, volume, bscan), self._head(con, volume, bscan)
            head = self._version_row(con, volume, bscan, parent) if status == PROPOSED else None
            if head is not None and head.status == ACCEPTED:
                con.execute("ROLLBACK")
                raise StoreError(f"B-scan {int(bscan)} is accepted; a proposal does not overwrite it")
            rel = Path("masks") / volume / f"{int(bscan):04d}-v{version}.npz"
            sha = self._write_npz(self.root / rel, arrays)
            row = Correction(volume, int(bscan), status, version, labels, change, info or {}, grader, _now(),
                             self.root / rel, sha, parent, run)
            self._insert(con, row, rel.as_posix())
            self._move_head(con, volume, bscan, version, "decide")
            con.execute("COMMIT")
        return row

    def accept_boundaries(self, volume: str, bscan: int, boundaries: np.ndarray, names: tuple[str, ...]) -> Path:
        """Keep the grader's edited layer boundaries of one B-scan (a new version; see ``store.boundaries``)."""
        return BoundaryEdits(self.root, self._write_npz).accept(volume, bscan, boundaries, names)

    def accepted_boundaries(self, volume: str) -> dict[int, tuple[np.ndarray, tuple[str, ...]]]:
        """B-scan -> (boundary rows (n, W), names) of the newest accepted boundaries of ``volume``."""
        return BoundaryEdits(self.root, self._write_npz).accepted(volume)

    def reject(self, volume: str, bscan: int, *, grader: str = "") -> Correction:
        """Record that the grader rejected the proposal of one B-scan (no mask is kept)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = Correction(volume, int(bscan), REJECTED, self._next_version(con, volume, bscan), (), {}, {},
                             grader, _now(), None, None, self._head(con, volume, bscan), None)
            self._insert(con, row, None)
            self._move_head(con, volume, bscan, row.version, "decide")
            con.execute("COMMIT")
        return row

    def undo(self, volume: str, bscan: int) -> Correction | None:
        """Put back the decision the B-scan's current one replaced; returns it (None: unreviewed again)."""
        return self._step(volume, bscan, "undo")

    def redo(self, volume: str, bscan: int) -> Correction | None:
        """Bring back the newest decision undone on the B-scan (after a new decision, that one); returns it."""
        return self._step(volume, bscan, "redo")

    def current(self, volume: str, bscan: int) -> Correction | None:
        """The version in effect on the B-scan (None: unreviewed)."""
        with self._connect() as con:
            return self._version_row(con, volume, bscan, self._head(con, volume, bscan))

    def can_undo(self, volume: str, bscan: int) -> bool:
        """Whether the B-scan has a decision in effect that :meth:`undo` would take back."""
        with self._connect() as con:
            return self._head(con, volume, bscan) > 0

    def can_redo(self, volume: str, bscan: int) -> bool:
        """Whether :meth:`redo` has an undone decision of the B-scan to bring back."""
        with self._connect() as con:
            return self._redo_target(con, volume, bscan) is not None

    def _step(self, volume: str, bscan: int, action: str) -> Correction | None:
        """Move the B-scan's head to its parent (undo) or newest child (redo) in one transaction."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            if action == "redo":
                target = self._redo_target(con, volume, bscan)
            else:
                target = self._parent(con, volume, bscan, self._head(con, volume, bscan))
            if target is None:
                con.execute("ROLLBACK")
                raise StoreError(f"B-scan {int(bscan)} has nothing to {action}")
            self._move_head(con, volume, bscan, target, action)
            con.execute("COMMIT")
            return self._version_row(con, volume, bscan, target)

    def undo_run(self, volume: str, run: str) -> dict[int, Correction | None]:
        """Take back the pages of propagation ``run`` still in effect, in one transaction; returns B-scan -> the
        version in effect now (None: unreviewed). B-scans decided since are left as they are, and absent."""
        return self._step_run(volume, run, "undo")

    def redo_run(self, volume: str, run: str) -> dict[int, Correction | None]:
        """Bring back the pages of ``run`` where the version each replaced is in effect again (after ``undo_run``)."""
        return self._step_run(volume, run, "redo")

    def run_moves(self, volume: str, run: str) -> tuple[int, int]:
        """(B-scans :meth:`undo_run` would take back, B-scans :meth:`redo_run` would bring back) for ``run``."""
        with self._connect() as con:
            return len(self._run_moves(con, volume, run, "undo")), len(self._run_moves(con, volume, run, "redo"))

    def last_run(self, volume: str) -> str | None:
        """The newest propagation run recorded on ``volume``, or None."""
        with self._connect() as con:
            row = con.execute("SELECT run FROM corrections WHERE volume = ? AND run IS NOT NULL ORDER BY id DESC "
                              "LIMIT 1", (volume,)).fetchone()
        return None if row is None else str(row[0])

    def _step_run(self, volume: str, run: str, action: str) -> dict[int, Correction | None]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            moves = self._run_moves(con, volume, run, action)
            for bscan, version in moves.items():
                self._move_head(con, volume, bscan, version, action)
            con.execute("COMMIT")
            return {b: self._version_row(con, volume, b, v) for b, v in moves.items()}

    def _run_moves(self, con: sqlite3.Connection, volume: str, run: str, action: str) -> dict[int, int]:
        """B-scan -> the version ``action`` would put in effect: undo where the run's page is in effect (its parent),
        redo where that parent is in effect again (the run's page)."""
        rows = con.execute("SELECT bscan, version, parent FROM corrections WHERE volume = ? AND run = ? ORDER BY bscan",
                           (volume, run)).fetchall()
        frm, to = (1, 2) if action == "undo" else (2, 1)
        return {r[0]: r[to] for r in rows if self._head(con, volume, r[0]) == r[frm]}

    def status(self, volume: str) -> dict[int, str]:
        """B-scan index -> the version in effect (``accepted`` / ``rejected`` / ``proposed``); unreviewed B-scans are
        absent."""
        return {c.bscan: c.status for c in self.corrections(volume, status=None)}

    def accepted_masks(self, volume: str) -> dict[int, np.ndarray]:
        """B-scan -> the grader's latest accepted mask of ``volume``: what a new proposal must not overwrite."""
        return {c.bscan: c.arrays()["mask"] for c in self.corrections(volume)}

    def corrections(self, volume: str | None = None, *, status: str | None = ACCEPTED) -> list[Correction]:
        """The decision in effect per B-scan (optionally of one volume and one status), in (volume, B-scan) order;
        B-scans whose every decision was undone are absent."""
        query = (f"SELECT {COLUMNS} FROM corrections c JOIN heads h ON h.volume = c.volume AND h.bscan = c.bscan "
                 "AND h.version = c.version WHERE h.id = (SELECT MAX(id) FROM heads g "
                 "WHERE g.volume = c.volume AND g.bscan = c.bscan)")
        args: list[Any] = []
        if volume is not None:
            query, args = query + " AND c.volume = ?", [volume]
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY c.volume, c.bscan", args).fetchall()
        out = [self._correction(r) for r in rows]
        return [c for c in out if status is None or c.status == status]

    def versions(self, volume: str, bscan: int) -> list[Correction]:
        """Every decision ever recorded on the B-scan, undone ones included, oldest first."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {COLUMNS} FROM corrections c WHERE volume = ? AND bscan = ? ORDER BY version",
                               (volume, int(bscan))).fetchall()
        return [self._correction(r) for r in rows]

    def _correction(self, r: tuple[Any, ...]) -> Correction:
        return Correction(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), json.loads(r[5]), json.loads(r[6]), r[7],
                          r[8], None if r[9] is None else self.root / r[9], r[10], r[11], r[12])

    def _version_row(self, con: sqlite3.Connection, volume: str, bscan: int, version: int) -> Correction | None:
        row = con.execute(f"SELECT {COLUMNS} FROM corrections c WHERE volume = ? AND bscan = ? AND version = ?",
                          (volume, int(bscan), version)).fetchone()
        return None if row is None else self._correction(row)

    @staticmethod
    def _head(con: sqlite3.Connection, volume: str, bscan: int) -> int:
        """The version in effect (0: none, the B-scan is unreviewed)."""
        row = con.execute("SELECT version FROM heads WHERE volume = ? AND bscan = ? ORDER BY id DESC LIMIT 1",
                          (volume, int(bscan))).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _parent(con: sqlite3.Connection, volume: str, bscan: int, version: int) -> int | None:
        """The version ``version`` replaced; None for version 0 (nothing to undo)."""
        row = con.execute("SELECT parent FROM corrections WHERE volume = ? AND bscan = ? AND version = ?",
                          (volume, int(bscan), version)).fetchone()
        return None if row is None else int(row[0])

    def _redo_target(self, con: sqlite3.Connection, volume: str, bscan: int) -> int | None:
        """The newest version made from the head, or None."""
        row = con.execute("SELECT MAX(version) FROM corrections WHERE volume = ? AND bscan = ? AND parent = ?",
                          (volume, int(bscan), self._head(con, volume, bscan))).fetchone()
        return None if row[0] is None else int(row[0])

    @staticmethod
    def _move_head(con: sqlite3.Connection, volume: str, bscan: int, version: int, action: str) -> None:
        con.execute("INSERT INTO heads (volume, bscan, version, action, time) VALUES (?, ?, ?, ?, ?)",
                    (volume, int(bscan), version, action, _now()))

    @staticmethod
    def _next_version(con: sqlite3.Connection, volume: str, bscan: int) -> int:
        row = con.execute("SELECT MAX(version) FROM corrections WHERE volume = ? AND bscan = ?",
                          (volume, int(bscan))).fetchone()
        return (row[0] or 0) + 1

    @staticmethod
    def _insert(con: sqlite3.Connection, c: Correction, rel: str | None) -> None:
        con.execute("INSERT INTO corrections (volume, bscan, status, version, labels, changes, proposal, grader, time,"
                    " mask_file, sha256, parent, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.volume, c.bscan, c.status, c.version, json.dumps(list(c.labels)), json.dumps(c.changes),
                     json.dumps(c.proposal), c.grader, c.time, rel, c.sha256, c.parent, c.run))

    @staticmethod
    def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
        """Compressed npz under a temporary name, fsync'ed, renamed into place; returns its sha256."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"could not write {path.name} into {path.parent}: {err.strerror}; nothing was recorded "
                             "(free disk space and accept again)") from err
        return hashlib.sha256(path.read_bytes()).hexdigest()


def new_run_id() -> str:
    """A fresh id for one propagation's proposed versions (``CorrectionStore.propose(run=...)``)."""
    return uuid.uuid4().hex[:12]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
