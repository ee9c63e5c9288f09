"""Proposed versions in the CorrectionStore: a propagation's pages are kept as one run, undone and redone together,
never written over an accepted B-scan, left out of what fine-tuning reads, and a schema-2 store opens unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from oct_wsss.store import ACCEPTED, PROPOSED, CorrectionStore, StoreError, edit_effort
from oct_wsss.store.schema import MIGRATIONS


def _page(value: int) -> np.ndarray:
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = value
    return m


def _propagate(store: CorrectionStore, bscans: range, run: str) -> None:
    for b in bscans:
        store.propose("vol", b, _page(2), run=run, previous={"page": _page(0)}, proposal_info={"method": "propagate"})


def test_a_run_is_undone_and_redone_together_and_decisions_since_are_left(tmp_path: Path) -> None:
    store = CorrectionStore(tmp_path)
    store.accept("vol", 2, _page(1))
    with pytest.raises(StoreError, match="accepted; a proposal does not overwrite it"):
        store.propose("vol", 2, _page(2), run="r1")
    assert [c.status for c in store.versions("vol", 2)] == [ACCEPTED]  # nothing written
    _propagate(store, range(0, 2), "r1")
    _propagate(store, range(3, 5), "r1")
    assert store.status("vol") == {0: PROPOSED, 1: PROPOSED, 2: ACCEPTED, 3: PROPOSED, 4: PROPOSED}
    assert [c.bscan for c in store.corrections("vol")] == [2] and list(store.accepted_masks("vol")) == [2]
    assert store.last_run("vol") == "r1" and store.last_run("other") is None
    proposed = store.versions("vol", 1)[0]
    assert proposed.run == "r1" and (proposed.arrays()["previous_page"] == 0).all()
    store.accept("vol", 1, _page(3), proposal=proposed.arrays()["mask"], proposal_info=proposed.proposal)
    assert store.versions("vol", 1)[1].parent == proposed.version
    [effort] = edit_effort(store.corrections())  # the accepted B-scan 1 counts; proposed pages do not
    assert effort.bscans == 1 and effort.proposed == 9 and effort.kept == 0
    assert store.run_moves("vol", "r1") == (3, 0)
    undone = store.undo_run("vol", "r1")
    assert undone == {0: None, 3: None, 4: None}  # B-scan 1, accepted since, is left
    assert store.status("vol") == {1: ACCEPTED, 2: ACCEPTED} and store.run_moves("vol", "r1") == (0, 3)
    again = CorrectionStore(tmp_path)  # a reopened project sees the same state
    assert again.status("vol") == store.status("vol")
    redone = again.redo_run("vol", "r1")
    assert sorted(redone) == [0, 3, 4] and all(c.status == PROPOSED and c.run == "r1" for c in redone.values())
    assert store.undo("vol", 1).version == proposed.version  # the accept's undo puts the proposed page back
    assert store.status("vol")[1] == PROPOSED and store.run_moves("vol", "r1") == (4, 0)



def test_a_proposed_page_is_checked_like_an_accepted_one(tmp_path: Path) -> None:
    store = CorrectionStore(tmp_path)
    with pytest.raises(ValueError, match="ontology ids"):
        store.propose("vol", 0, np.full((4, 4), 99, np.int32), run="r")
    with pytest.raises(ValueError, match="previous_page is"):
        store.propose("vol", 0, _page(2), run="r", previous={"page": np.zeros((3, 3), np.uint8)})
    assert store.status("vol") == {} and store.last_run("vol") is None


def test_a_schema_2_store_opens_with_its_rows_ids_and_heads(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "corrections.sqlite", isolation_level=None)
    for statement in (*MIGRATIONS[1], *MIGRATIONS[2]):
        con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('salt', 'abc')")
    rows = [(7, "vol", 2, ACCEPTED, 1, 0), (9, "vol", 2, "rejected", 2, 1)]
    con.executemany("INSERT INTO corrections (id, volume, bscan, status, version, labels, changes, proposal, grader,"
                    " time, parent) VALUES (?, ?, ?, ?, ?, '[]', '{}', '{}', '', '', ?)", rows)
    con.execute("INSERT INTO heads (volume, bscan, version, action, time) VALUES ('vol', 2, 2, 'decide', '')")
    con.execute("PRAGMA user_version = 2")
    con.close()
    store = CorrectionStore(tmp_path)
    assert store.status("vol") == {2: "rejected"} and store.undo("vol", 2).version == 1
    con = sqlite3.connect(tmp_path / "corrections.sqlite")
    assert con.execute("SELECT id, run FROM corrections ORDER BY id").fetchall() == [(7, None), (9, None)]
    assert con.execute("PRAGMA user_version").fetchone()[0] == 3
    con.close()
    store.propose("vol", 3, _page(2), run="r")  # the widened status check takes proposed pages
    assert store.status("vol") == {2: ACCEPTED, 3: PROPOSED}
