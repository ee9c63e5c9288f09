"""The Review widget in a real viewer: accept/reject into a CorrectionStore, edit effort, restore on reopening."""

from __future__ import annotations

import numpy as np
import pytest
from napari_helpers import MemorySettings

from oct_wsss.napari import _propose, _review
from oct_wsss.napari._propose import PROPOSED, ProposeWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.napari._session import session
from oct_wsss.store import CorrectionStore
from oct_wsss.synth import make_volume


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings())
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())


def _viewer(make_napari_viewer, phantom, proposed: np.ndarray):
    viewer = make_napari_viewer()
    viewer.add_image(phantom.volume.data, name="oct")
    layer = viewer.add_labels(proposed.copy(), name=PROPOSED)
    for i, page in enumerate(proposed):
        session(viewer).records(layer).propose(i, page, {"method": "test"})
    widget = ReviewWidget(viewer)
    return viewer, layer, widget


def test_accept_edit_reject_and_restore_after_reopening(make_napari_viewer, tmp_path) -> None:
    phantom = make_volume(2, n_bscans=4, height=48, width=40)
    proposed = np.zeros(phantom.volume.shape, np.uint8)
    proposed[1, 10:20, 10:20] = 1  # 100 SRF pixels proposed
    viewer, layer, review = _viewer(make_napari_viewer, phantom, proposed)
    review.project.value, review.grader.value = str(tmp_path / "project"), "AB"
    assert review.open() and review.status.value.startswith("0 accepted, 0 rejected, 4 unreviewed")
    viewer.dims.set_current_step(0, 1)
    layer.data[1, 10:20, 15:20] = 3  # the grader repaints 50 of them as PED
    layer.data[1, 30:32, 0:5] = 1    # and adds 10 SRF pixels
    review.accept()
    viewer.dims.set_current_step(0, 2)
    review.reject()
    store = CorrectionStore(tmp_path / "project")
    (c,) = store.corrections()
    assert (c.bscan, c.grader, c.labels) == (1, "AB", (1, 3))
    assert c.changes == {"srf": {"added": 10, "removed": 50}, "ped": {"added": 50, "removed": 0}}
    np.testing.assert_array_equal(c.arrays()["mask"], layer.data[1])
    np.testing.assert_array_equal(c.arrays()["image"], phantom.volume.data[1])
    assert store.status(review.session.volume_id) == {1: "accepted", 2: "rejected"}
    review.next_unreviewed()
    assert viewer.dims.current_step[0] == 3
    review.next_unreviewed()
    assert viewer.dims.current_step[0] == 0
    edited = layer.data[1].copy()
    viewer.close()

    viewer, layer, review = _viewer(make_napari_viewer, phantom, np.zeros_like(proposed))
    review.project.value = str(tmp_path / "project")
    assert review.open()
    np.testing.assert_array_equal(layer.data[1], edited)
    assert session(viewer).records(layer).accepted == {1} and review.status.value.startswith("1 accepted, 1 rejected")
    propose = ProposeWidget(viewer)
    assert propose.protected() == {1} and 1 not in propose.bscans(4)


def test_shortcuts_are_bound_and_missing_project_is_explained(make_napari_viewer, monkeypatch) -> None:
    phantom = make_volume(3, n_bscans=2, height=32, width=32)
    viewer, _, review = _viewer(make_napari_viewer, phantom, np.zeros(phantom.volume.shape, np.uint8))
    shown: list[str] = []
    monkeypatch.setattr(_review, "show_error", shown.append)
    review.project.value = ""
    review.accept()
    assert shown and "project folder" in shown[-1]
    assert {"Shift+A", "Shift+R", "Shift+N", "Shift+P", "Shift+U", "Shift+Y"} <= {str(k) for k in viewer.keymap}


def test_correct_propagate_accept_undo_redo_agree_with_the_store_and_survive_reopening(make_napari_viewer, qtbot,
                                                                                        monkeypatch, tmp_path) -> None:
    """The issue's check: correct -> propagate -> accept -> undo; the store's versions and the layers agree."""
    from test_propagate import shifted_volume

    from oct_wsss.napari import _propagate
    from oct_wsss.napari._propagate import PropagateWidget

    monkeypatch.setattr(_propagate, "QSettings", lambda *a: MemorySettings())
    data, truth = shifted_volume(n=6)
    start = np.zeros(data.shape, np.uint8)
    start[2][truth[2]] = 2  # the grader's corrected B-scan 2
    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    layer = viewer.add_labels(start.copy(), name=PROPOSED)
    review, propagate = ReviewWidget(viewer), PropagateWidget(viewer)
    review.project.value = str(tmp_path / "project")
    viewer.dims.set_current_step(0, 2)
    worker = propagate.propagate()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: propagate.run_button.enabled)
    propagated = np.array(layer.data[3])
    assert (propagated == 2).any() and session(viewer).records(layer).proposed[3].tolist() == propagated.tolist()
    viewer.dims.set_current_step(0, 3)
    layer.data[3, :4, :4] = 1
    review.accept()
    first = np.array(layer.data[3])
    layer.data[3, :4, :4] = 3
    review.accept()
    store = CorrectionStore(tmp_path / "project")
    volume = review.session.volume_id
    assert [c.version for c in store.versions(volume, 3)] == [1, 2]
    review.undo()  # back to version 1: its mask
    np.testing.assert_array_equal(layer.data[3], first)
    assert store.corrections(volume)[0].version == 1 and review.decisions == {3: "accepted"}
    propagate.undo()  # the propagation is taken back, except on B-scan 3, accepted since
    assert (np.asarray(layer.data[1]) == 0).all() and np.array_equal(layer.data[3], first)
    review.undo()  # back to unreviewed: the propagated proposal again
    np.testing.assert_array_equal(layer.data[3], propagated)
    assert store.status(volume) == {} and review.decisions == {} and 3 not in session(viewer).records(layer).accepted
    assert not review.undo_button.enabled and review.redo_button.enabled
    review.undo()  # nothing left: a message, nothing changes
    review.redo()
    np.testing.assert_array_equal(layer.data[3], first)
    assert review.status.value.startswith("1 accepted, 0 rejected") and review.undo_button.enabled
    viewer.close()

    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    layer = viewer.add_labels(np.zeros_like(start), name=PROPOSED)
    review = ReviewWidget(viewer)
    review.project.value = str(tmp_path / "project")
    assert review.open() and review.decisions == {3: "accepted"}
    np.testing.assert_array_equal(layer.data[3], first)
    review.viewer.dims.set_current_step(0, 3)
    review.redo()  # version 2 again, also after reopening
    assert (np.asarray(layer.data[3, :4, :4]) == 3).all() and CorrectionStore(tmp_path / "project").corrections(
        volume)[0].version == 2
