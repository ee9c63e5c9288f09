"""The OCT workspace: every panel in one tabbed dock that keeps the canvas usable on a 1366 x 768 and a 1920 x 1080
screen (four separate docks grew the window to 1863 px high on the small one, and to 2359 x 1561 px on the large one),
relists its panels' choices, and fits the B-scan."""

from __future__ import annotations

import napari
import numpy as np
import pytest

from oct_wsss.napari._workspace import PANELS, WorkspaceWidget

PLUGIN = "napari-oct-wsss"


def _settle(qtbot) -> None:
    for _ in range(3):
        napari.qt.get_qapp().processEvents()
        qtbot.wait(50)


@pytest.mark.parametrize("screen", [(1366, 768), (1920, 1080)], ids=["1366x768", "1920x1080"])
def test_the_workspace_fits_the_screen(make_napari_viewer, qtbot, screen) -> None:
    width, height = screen
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((5, 496, 512), np.uint8), name="oct", scale=(0.12, 0.0039, 0.0113))
    _, workspace = viewer.window.add_plugin_dock_widget(PLUGIN, "OCT workspace")
    assert isinstance(workspace, WorkspaceWidget)
    assert [workspace.tabText(i) for i in range(workspace.count())] == list(PANELS)
    window = viewer.window._qt_window
    window.resize(width, height)
    _settle(qtbot)
    canvas = viewer.window._qt_viewer.canvas.native
    assert window.height() <= height and window.width() <= width  # the tallest panel scrolls instead of growing it
    assert canvas.width() >= 0.4 * window.width() and canvas.height() >= 0.6 * window.height()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom = camera.zoom  # screen px per mm
    assert canvas.width() / zoom >= 512 * 0.0113 and canvas.height() / zoom >= 496 * 0.0039  # the whole B-scan shows
    assert canvas.width() / zoom <= 1.2 * 512 * 0.0113 or canvas.height() / zoom <= 1.2 * 496 * 0.0039  # not a stamp
    camera.zoom = 2 * zoom  # the grader zooms in: a later resize keeps that view
    window.resize(width - 200, height - 100)
    _settle(qtbot)
    assert camera.zoom == 2 * zoom
    room = workspace.currentWidget().viewport().width()
    assert all(panel.native.minimumSizeHint().width() <= room for panel in workspace.panels.values())  # no sideways
    scale_bar = viewer.canvas.overlays.scale_bar if hasattr(viewer, "canvas") else viewer.scale_bar
    assert scale_bar.visible


def test_workspace_panels_relist_their_choices(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    workspace = WorkspaceWidget(viewer)
    propose = workspace.panels["Propose"]
    assert propose.image.value is None
    layer = viewer.add_image(np.zeros((2, 32, 32), np.uint8), name="scan")
    workspace.reset_choices()
    assert propose.image.value is layer and workspace.panels["Review"].image.value is layer


def test_the_panels_share_one_session_and_fine_tune_finds_propose_in_the_tabs(make_napari_viewer) -> None:
    """Fine-tune used to look for Propose among the dock widgets, where the tabbed workspace hides it."""
    from oct_wsss.napari._session import session

    viewer = make_napari_viewer()
    workspace = WorkspaceWidget(viewer)
    shared = session(viewer)
    assert all(shared.panels[title] is workspace.panels[title] for title in ("Propose", "Review", "Propagate",
                                                                               "Fine-tune"))
    assert {workspace.panels[t].session is shared for t in ("Propose", "Review", "Propagate", "Fine-tune")} == {True}
    assert session(make_napari_viewer()) is not shared


def test_re_propose_from_the_fine_tune_tab_runs_the_propose_tab(make_napari_viewer, qtbot, monkeypatch,
                                                                 tmp_path) -> None:
    from napari_helpers import MemorySettings, tiny_student_checkpoint

    from oct_wsss.napari import _finetune, _propose, _review

    for module in (_finetune, _propose, _review):
        monkeypatch.setattr(module, "QSettings", lambda *a: MemorySettings())
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 64, 56), np.float32), name="oct")
    workspace = WorkspaceWidget(viewer)
    finetune, propose = workspace.panels["Fine-tune"], workspace.panels["Propose"]
    finetune.result = tiny_student_checkpoint(tmp_path)
    propose.device.value = "cpu"
    worker = finetune.repropose()
    assert worker is not None and propose.checkpoint.value == finetune.result
    qtbot.waitUntil(lambda: propose.run_button.enabled and not worker.is_running, timeout=120_000)
    assert propose.status.value == "done"


def test_lesion_panels_work_on_the_proposals_not_the_first_labels_layer(make_napari_viewer) -> None:
    """In the demo the ground truth is the first Labels layer: Review, Propagate, Quantify and SAM 2 assist chose it
    (the grader's accept stored the truth). They follow the proposal layer when one exists or is added."""
    from oct_wsss.napari._layers import PROPOSED

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 16, 16), np.float32), name="oct")
    truth = viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name="ground truth")
    workspace = WorkspaceWidget(viewer)  # Propose makes the proposal layer for the image at once
    choosers = [workspace.panels[t].labels for t in ("Review", "Propagate", "Quantify", "SAM 2")]
    proposed = viewer.layers[PROPOSED]
    assert proposed is not truth and all(c.value is proposed for c in choosers)
    viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name="my own")  # another layer does not take over
    assert all(c.value is proposed for c in choosers)
    choosers[0].value = truth  # the grader's own choice stays until new proposals arrive
    assert choosers[0].value is truth
    viewer.layers.remove(proposed)
    again = viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name=PROPOSED)  # e.g. an import
    assert all(c.value is again for c in choosers)
