"""CorrectionStore: durable accepts, versions instead of overwrites, checksums, schema versions, two writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from oct_wsss.store import ACCEPTED, REJECTED, CorrectionStore, StoreError, changes, derived_labels
from oct_wsss.synth import make_volume


def _mask() -> np.ndarray:
    m = np.zeros((12, 10), np.uint8)
    m[2:4, 2:5] = 1
    m[8:10, 1:3] = 3
    return m


def test_accept_records_labels_changes_and_restores_after_reopening(tmp_path) -> None:
    store = CorrectionStore(tmp_path)
    proposal = np.zeros((12, 10), np.uint8)
    proposal[2:4, 2:6] = 1  # one SRF column too many, PED missed
    image = np.arange(120, dtype=np.uint16).reshape(12, 10)
    c = store.accept("vol", 5, _mask(), image=image, proposal=proposal, proposal_info={"method": "agm"},
                     grader="grader-a")
    assert c.labels == (1, 3) and c.changes == {"srf": {"added": 0, "removed": 2}, "ped": {"added": 4, "removed": 0}}
    store.reject("vol", 6)
    again = CorrectionStore(tmp_path)
    assert again.status("vol") == {5: ACCEPTED, 6: REJECTED}
    (kept,) = again.corrections("vol")
    arrays = kept.arrays()
    np.testing.assert_array_equal(arrays["mask"], _mask())
    np.testing.assert_array_equal(arrays["image"], image)
    assert arrays["image"].dtype == np.uint16 and kept.proposal == {"method": "agm"} and kept.grader == "grader-a"


def test_reaccepting_adds_a_version_and_keeps_the_old_file(tmp_path) -> None:
    store = CorrectionStore(tmp_path)
    first = store.accept("v", 0, _mask())
    second = store.accept("v", 0, np.zeros((12, 10), np.uint8))
    assert (first.version, second.version) == (1, 2) and first.mask_file.is_file()
    (latest,) = store.corrections()
    assert latest.version == 2 and latest.labels == ()
    store.reject("v", 0)
    assert store.corrections() == [] and store.status("v") == {0: REJECTED}


def test_damaged_mask_file_is_detected(tmp_path) -> None:
    c = CorrectionStore(tmp_path).accept("v", 0, _mask())
    c.mask_file.write_bytes(c.mask_file.read_bytes()[:-3] + b"xyz")
    with pytest.raises(StoreError, match="checksum"):
        c.arrays()


def test_bad_masks_are_refused_before_anything_is_written(tmp_path) -> None:
    store = CorrectionStore(tmp_path)
    with pytest.raises(ValueError, match="ontology ids"):
        store.accept("v", 0, np.full((4, 4), 9, np.uint8))
    with pytest.raises(ValueError, match="ontology ids"):
        store.accept("v", 0, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="image is"):
        store.accept("v", 0, np.zeros((4, 4), np.uint8), image=np.zeros((5, 4)))
    assert store.corrections() == [] and not any((tmp_path / "masks").rglob("*.npz"))


def test_a_newer_schema_is_refused_with_the_fix(tmp_path) -> None:
    CorrectionStore(tmp_path)
    con = sqlite3.connect(tmp_path / "corrections.sqlite")
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(StoreError, match="update oct-wsss"):
        CorrectionStore(tmp_path)


def test_volume_ids_are_salted_hashes_without_phi(tmp_path) -> None:
    vol = make_volume(0, n_bscans=2, height=32, width=32).volume
    vol.patient.update({"name": "Doe^Jane", "birth_date": "1950-01-31"})
    a, b = CorrectionStore(tmp_path / "a"), CorrectionStore(tmp_path / "b")
    assert a.volume_id(vol) == a.volume_id(vol.data.copy()) != b.volume_id(vol)
    a.accept(a.volume_id(vol), 0, np.zeros((32, 32), np.uint8), image=vol.data[0], grader="g")
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert b"Doe" not in path.read_bytes() and b"1950" not in path.read_bytes()


def test_derived_labels_and_changes_without_a_proposal() -> None:
    assert derived_labels(_mask()) == (1, 3)
    assert changes(_mask(), None) == {"srf": {"added": 6, "removed": 0}, "ped": {"added": 4, "removed": 0}}


WRITER = """
import sys, numpy as np
from oct_wsss.store import CorrectionStore
store = CorrectionStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.accept(sys.argv[2], i, np.full((16, 16), i % 4, np.uint8), image=np.zeros((16, 16), np.uint8))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path) -> None:
    CorrectionStore(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, "25"]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = CorrectionStore(tmp_path).corrections()
    assert len(got) == 50 and {c.volume for c in got} == {"a", "b"}
    for c in got:
        assert int(c.arrays()["mask"][0, 0]) == c.bscan % 4


KILLED = """
import os, signal, sys, numpy as np
from oct_wsss.store import CorrectionStore, store
store_ = CorrectionStore(sys.argv[1])
store_.accept("v", 0, np.ones((8, 8), np.uint8), image=np.zeros((8, 8), np.uint8))
def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)  # between the mask file's rename and the row's commit
store.CorrectionStore._insert = staticmethod(die)
store_.accept("v", 1, np.full((8, 8), 2, np.uint8), image=np.zeros((8, 8), np.uint8))
"""


def test_a_process_killed_mid_accept_leaves_a_consistent_store(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], timeout=120)
    assert proc.returncode == -9
    store = CorrectionStore(tmp_path)
    (kept,) = store.corrections()
    assert kept.bscan == 0 and (kept.arrays()["mask"] == 1).all()
    assert store.status("v") == {0: "accepted"}  # the unacknowledged accept left no row
    again = store.accept("v", 1, np.full((8, 8), 2, np.uint8))  # and the grader can simply accept again
    assert again.version == 1 and (again.arrays()["mask"] == 2).all()
