"""The CorrectionStore's SQLite schema and its migrations: a store written by an older version opens in a newer one."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime

SCHEMA_VERSION = 1

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
