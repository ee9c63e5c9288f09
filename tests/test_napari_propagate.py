"""The Propagate widget: the current B-scan's lesion is carried over the range in a worker, each B-scan written
undoably and marked proposed (accepted B-scans untouched); Undo puts the previous pages back; bad ranges are refused."""

from __future__ import annotations

import hashlib

import numpy as np
from napari_helpers import MemorySettings
from test_propagate import shifted_volume

from oct_wsss.napari import _propagate
from oct_wsss.napari._propagate import PropagateWidget
from oct_wsss.napari._session import session


def test_propagate_accepted_untouched_undo(make_napari_viewer, qtbot, monkeypatch) -> None:
    monkeypatch.setattr(_propagate, "QSettings", lambda *a: MemorySettings())
    data, truth = shifted_volume(n=6)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    start = np.zeros(data.shape, np.uint8)
    start[2][truth[2]] = 2
    start[4, :3, :3] = 5  # B-scan 4 is accepted: propagation leaves it alone
    layer = viewer.add_labels(start.copy(), name="lesions (proposed)")
    records = session(viewer).records(layer)
    records.accepted.add(4)
    w = PropagateWidget(viewer)
    viewer.dims.set_current_step(0, 2)
    assert (w.start.value, w.end.value) == (0, 5)
    w.end.value = 7
    assert w.propagate() is None and "outside the volume" in w.status.value
    w.end.value = 5
    worker = w.propagate()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: w.run_button.enabled)
    assert sorted(w.previous) == [0, 1, 3, 5] and sorted(records.proposed) == [0, 1, 3, 5]
    for i in (1, 3):
        d = 2 * ((layer.data[i] == 2) & truth[i]).sum() / ((layer.data[i] == 2).sum() + truth[i].sum())
        assert d >= 0.9, (i, d)
    assert (layer.data[4] == start[4]).all() and w.undo_button.enabled
    w.undo()
    assert (np.asarray(layer.data) == start).all() and records.proposed == {} and records.provenance == {}


def test_a_failed_propagation_says_failed(make_napari_viewer, qtbot, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(_propagate, "QSettings", lambda *a: MemorySettings())
    shown: list[str] = []
    monkeypatch.setattr(_propagate, "show_error", shown.append)
    data, truth = shifted_volume(n=4)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    start = np.zeros(data.shape, np.uint8)
    start[1][truth[1]] = 2
    viewer.add_labels(start, name="lesions (proposed)")
    bad = tmp_path / "sam2.pt"
    bad.write_bytes(b"not a checkpoint")
    w = PropagateWidget(viewer)
    viewer.dims.set_current_step(0, 1)
    w.engine.value, w.checkpoint.value = "sam2", str(bad)
    worker = w.propagate()
    assert worker is not None
    qtbot.waitUntil(lambda: w.run_button.enabled, timeout=120_000)
    assert shown and "Propagation failed" in shown[-1]
    assert w.status.value.startswith("failed") and "nothing propagated" in w.status.value
    # the run's provenance named the SAM 2 file by its SHA-256 (hashed before SAM 2 was built), never by its path
    assert w.run_info["sam2"] == {"config": "sam2.1_hiera_t", "checkpoint": "sam2.pt",
                                  "sha256": hashlib.sha256(b"not a checkpoint").hexdigest()}


def test_cancel_mid_propagation_leaves_consistent_layers(make_napari_viewer, qtbot, monkeypatch) -> None:
    """Cancel pressed while B-scan 5 arrives: the B-scans propagated so far are in the layer and recorded proposed
    (the same pages, this run's provenance), every other B-scan and the records of the rest are untouched, the
    accepted B-scan included."""
    monkeypatch.setattr(_propagate, "QSettings", lambda *a: MemorySettings())
    data, truth = shifted_volume(n=16, present=16)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    start = np.zeros(data.shape, np.uint8)
    start[3][truth[3]] = 2
    start[4, :3, :3] = 5  # accepted: passed over, never written
    start[1][truth[1]] = 1  # an earlier proposal on the other side of B-scan 3
    layer = viewer.add_labels(start.copy(), name="lesions (proposed)")
    records = session(viewer).records(layer)
    records.accepted.add(4)
    records.propose(1, start[1], {"method": "student"})
    w = PropagateWidget(viewer)
    viewer.dims.set_current_step(0, 3)
    w.start.value, w.end.value = 0, 15
    worker = w.propagate()
    worker.yielded.connect(lambda result: w.cancel() if result.index == 5 else None)
    qtbot.waitUntil(lambda: w.run_button.enabled, timeout=60_000)
    done = sorted(w.previous)
    assert done[0] == 5 and done == list(range(5, done[-1] + 1)) and done[-1] < 15, done
    assert w.status.value.startswith("cancelled") and f"{len(done)} B-scans proposed" in w.status.value
    assert sorted(records.proposed) == [1, *done] and records.provenance[1] == {"method": "student"}
    for i in done:
        np.testing.assert_array_equal(layer.data[i], records.proposed[i])
        assert (layer.data[i] == 2).any() and records.provenance[i]["method"] == "propagate"
    untouched = [i for i in range(16) if i not in done]
    np.testing.assert_array_equal(np.asarray(layer.data)[untouched], start[untouched])
    assert 4 not in records.proposed and records.accepted == {4}
    assert w.undo_button.enabled
    w.undo()
    assert (np.asarray(layer.data) == start).all() and sorted(records.proposed) == [1]
