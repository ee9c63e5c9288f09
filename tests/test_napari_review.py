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
    """The issue's check: correct -> propagate -> accept -> undo (and redo, of the accept and of the propagation);
    the store's versions and the layers agree, also after the project is reopened."""
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
    worker = propagate.propagate()  # opens the chosen project: the pages are kept there
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: propagate.run_button.enabled)
    store, volume = CorrectionStore(tmp_path / "project"), review.session.volume_id
    propagated = np.array(layer.data)
    assert store.status(volume) == {i: "proposed" for i in (0, 1, 3, 4, 5)} and (propagated[3] == 2).any()
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(store.current(volume, i).arrays()["mask"], propagated[i])
    assert session(viewer).records(layer).proposed[3].tolist() == propagated[3].tolist()
    assert review.strip.statuses == ["proposed", "proposed", "unreviewed", "proposed", "proposed", "proposed"]
    assert review.status.value == "0 accepted, 0 rejected, 6 unreviewed of 6 (5 propagated)"
    viewer.dims.set_current_step(0, 3)
    layer.data[3, :4, :4] = 1
    review.accept()
    first = np.array(layer.data[3])
    layer.data[3, :4, :4] = 3
    review.accept()
    assert [c.status for c in store.versions(volume, 3)] == ["proposed", "accepted", "accepted"]
    review.undo()  # back to the first accept: its mask
    np.testing.assert_array_equal(layer.data[3], first)
    assert store.corrections(volume)[0].version == 2 and review.decisions == {3: "accepted"}
    propagate.undo()  # the propagation is taken back, except on B-scan 3, accepted since
    assert (np.asarray(layer.data[[0, 1, 4, 5]]) == 0).all() and np.array_equal(layer.data[3], first)
    assert store.status(volume) == {3: "accepted"} and propagate.redo_button.enabled
    assert review.strip.statuses == ["unreviewed"] * 3 + ["accepted"] + ["unreviewed"] * 2
    propagate.redo()  # and brought back
    np.testing.assert_array_equal(layer.data, np.where(np.arange(6)[:, None, None] == 3, first, propagated))
    assert store.status(volume) == {0: "proposed", 1: "proposed", 3: "accepted", 4: "proposed", 5: "proposed"}
    review.undo()  # B-scan 3 back to the propagated page, still to review
    np.testing.assert_array_equal(layer.data[3], propagated[3])
    assert review.decisions == {} and 3 not in session(viewer).records(layer).accepted
    assert review.status.value.startswith("0 accepted") and review.undo_button.enabled and review.redo_button.enabled
    review.redo()
    np.testing.assert_array_equal(layer.data[3], first)
    viewer.close()

    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    layer = viewer.add_labels(np.zeros_like(start), name=PROPOSED)
    review, propagate = ReviewWidget(viewer), PropagateWidget(viewer)
    review.project.value = str(tmp_path / "project")
    assert review.open() and review.decisions == {3: "accepted"}
    expected = np.where(np.arange(6)[:, None, None] == 3, first, propagated)
    expected[2] = 0  # the source B-scan was corrected but never accepted: the store does not have it
    np.testing.assert_array_equal(layer.data, expected)
    assert sorted(session(viewer).records(layer).proposed) == [0, 1, 4, 5]  # the propagated pages, to review
    assert review.strip.statuses == ["proposed", "proposed", "unreviewed", "accepted", "proposed", "proposed"]
    assert propagate.undo_button.enabled and not propagate.redo_button.enabled
    propagate.undo()  # the reopened project's last propagation, taken back
    assert (np.asarray(layer.data[[0, 1, 4, 5]]) == 0).all() and store.status(volume) == {3: "accepted"}
    review.viewer.dims.set_current_step(0, 3)
    review.redo()  # the second accept again, also after reopening
    assert (np.asarray(layer.data[3, :4, :4]) == 3).all() and store.corrections(volume)[0].version == 3
