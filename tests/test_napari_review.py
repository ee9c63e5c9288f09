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
    assert {"Shift+A", "Shift+R", "Shift+N", "Shift+P"} <= {str(k) for k in viewer.keymap}
