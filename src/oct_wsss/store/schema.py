"""The CorrectionStore's SQLite schema and its migrations: a store written by an older version opens in a newer one."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime

SCHEMA_VERSION = 3

#: version -> the statements that bring a store from version - 1 to it (1 creates it)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE corrections (id INTEGER PRIMARY KEY, volume TEXT NOT NULL, bscan INTEGER NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')), version INTEGER NOT NULL, "
        "labels TEXT NOT NULL, changes TEXT NOT NULL, proposal TEXT NOT NULL, grader TEXT NOT NULL, "
        "time TEXT NOT NULL, mask_file TEXT, sha256 TEXT, UNIQUE (volume, bscan, version))",
        "CREATE INDEX corrections_by_bscan ON corrections (volume, bscan)",
    ),
    # undo and redo: each version remembers the one it replaced (``parent``, 0 = unreviewed); ``heads`` is an
    # append-only log of which version is in effect per B-scan (its last row wins), so undo never deletes anything
    2: (
        "ALTER TABLE corrections ADD COLUMN parent INTEGER NOT NULL DEFAULT 0",
        "UPDATE corrections SET parent = version - 1",
        "CREATE TABLE heads (id INTEGER PRIMARY KEY, volume TEXT NOT NULL, bscan INTEGER NOT NULL, "
        "version INTEGER NOT NULL, action TEXT NOT NULL CHECK (action IN ('decide', 'undo', 'redo', 'migrate')), "
        "time TEXT NOT NULL)",
        "CREATE INDEX heads_by_bscan ON heads (volume, bscan, id)",
        "INSERT INTO heads (volume, bscan, version, action, time) SELECT volume, bscan, MAX(version), 'migrate', "
        "strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now') FROM corrections GROUP BY volume, bscan",
    ),
    # proposed versions (a propagation's pages, kept so that undo, redo and reopening see them) and the run that
    # wrote them; SQLite cannot widen a CHECK in place, so the table is rebuilt with its rows and ids
    3: (
        "CREATE TABLE corrections_v3 (id INTEGER PRIMARY KEY, volume TEXT NOT NULL, bscan INTEGER NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected', 'proposed')), version INTEGER NOT NULL, "
        "labels TEXT NOT NULL, changes TEXT NOT NULL, proposal TEXT NOT NULL, grader TEXT NOT NULL, "
        "time TEXT NOT NULL, mask_file TEXT, sha256 TEXT, parent INTEGER NOT NULL DEFAULT 0, run TEXT, "
        "UNIQUE (volume, bscan, version))",
        "INSERT INTO corrections_v3 (id, volume, bscan, status, version, labels, changes, proposal, grader, time, "
        "mask_file, sha256, parent) SELECT id, volume, bscan, status, version, labels, changes, proposal, grader, "
        "time, mask_file, sha256, parent FROM corrections",
        "DROP TABLE corrections",
        "ALTER TABLE corrections_v3 RENAME TO corrections",
        "CREATE INDEX corrections_by_bscan ON corrections (volume, bscan)",
        "CREATE INDEX corrections_by_run ON corrections (volume, run)",
    ),
}


def migrate(con: sqlite3.Connection) -> int:
    """Create or upgrade the schema in one transaction; refuse a store newer than this code. Returns the version."""
    con.execute("BEGIN IMMEDIATE")
    try:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"this store has schema version {version}; this oct-wsss reads up to "
                                        f"{SCHEMA_VERSION} — update oct-wsss to open it")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                con.execute(statement)
        if version == 0:
            con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                            [("salt", secrets.token_hex(16)), ("created", datetime.now(UTC).isoformat())])
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
