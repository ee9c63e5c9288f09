"""Review widget: the status strip follows decisions and jumps on click; image-level labels derive from the mask,
can be toggled per B-scan, are stored with the accept and come back when the project is reopened."""

from __future__ import annotations

import numpy as np
import pytest
from napari_helpers import MemorySettings
from qtpy.QtCore import QPointF, Qt

from oct_wsss.napari import _review
from oct_wsss.napari._propose import PROPOSED
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.store import CorrectionStore
from oct_wsss.synth import make_volume


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings())


def _open(make_napari_viewer, data, labels, project):
    viewer = make_napari_viewer()
    viewer.add_image(data, name="oct")
    layer = viewer.add_labels(labels, name=PROPOSED)
    review = ReviewWidget(viewer)
    review.project.value = str(project)
    assert review.open()
    return viewer, layer, review


def test_strip_shows_decisions_and_jumps_on_click(make_napari_viewer, tmp_path, qtbot) -> None:
    phantom = make_volume(6, n_bscans=5, height=32, width=32)
    viewer, _, review = _open(make_napari_viewer, phantom.volume.data, np.zeros(phantom.volume.shape, np.uint8),
                              tmp_path / "p")
    viewer.dims.set_current_step(0, 1)
    review.accept()
    viewer.dims.set_current_step(0, 3)
    review.reject()
    assert review.strip.statuses == ["unreviewed", "accepted", "unreviewed", "rejected", "unreviewed"]
    assert review.strip.current == 3
    review.strip.resize(100, 18)
    qtbot.mouseClick(review.strip, Qt.MouseButton.LeftButton, pos=QPointF(50, 9).toPoint())  # cell 2 of 5
    assert viewer.dims.current_step[0] == 2 and review.strip.current == 2


def test_image_level_labels_derive_toggle_store_and_restore(make_napari_viewer, tmp_path) -> None:
    phantom = make_volume(7, n_bscans=3, height=32, width=32)
    labels = np.zeros(phantom.volume.shape, np.uint8)
    labels[0, 2:5, 2:5] = 1  # SRF in B-scan 0
    labels[1, 2:5, 2:5] = 2  # IRF in B-scan 1
    viewer, layer, review = _open(make_napari_viewer, phantom.volume.data, labels.copy(), tmp_path / "p")
    viewer.dims.set_current_step(0, 0)
    assert [c for c, box in review.present.items() if box.value] == [1]  # derived from the mask
    viewer.dims.set_current_step(0, 1)
    assert [c for c, box in review.present.items() if box.value] == [2]
    review.present[5].value = True  # the grader sees an HRF the mask does not hold
    review.present[2].value = False  # and judges the IRF absent
    review.accept()
    viewer.dims.set_current_step(0, 0)
    review.accept()  # untouched: derived labels
    store = CorrectionStore(tmp_path / "p")
    assert {c.bscan: c.labels for c in store.corrections()} == {0: (1,), 1: (5,)}
    viewer.close()

    viewer, layer, review = _open(make_napari_viewer, phantom.volume.data, np.zeros_like(labels), tmp_path / "p")
    np.testing.assert_array_equal(layer.data[1], labels[1])
    viewer.dims.set_current_step(0, 1)
    assert [c for c, box in review.present.items() if box.value] == [5]
    viewer.dims.set_current_step(0, 0)
    assert [c for c, box in review.present.items() if box.value] == [1]
