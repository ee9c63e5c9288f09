"""The Layers panel on a small phantom with the bundled layer checkpoint: bands and editable boundaries stream in,
Cancel stops, an edited boundary is kept by the store, the en-face map follows the slider, no scale is said."""

from __future__ import annotations

import numpy as np
import pytest

from oct_wsss.napari._layers import BOUNDARY_LAYER, image_layer
from oct_wsss.napari._layers_panel import BANDS_LAYER, NO_SCALE, LayersWidget
from oct_wsss.napari._session import session
from oct_wsss.propose.layers import BOUNDARIES
from oct_wsss.store import CorrectionStore
from oct_wsss.synth import make_volume
from oct_wsss.weights import layers_checkpoint

pytestmark = pytest.mark.skipif(layers_checkpoint() is None, reason="no bundled layer checkpoint")


def _panel(make_napari_viewer, n_bscans: int = 3, **layer_kwargs):
    phantom = make_volume(1, n_bscans=n_bscans, height=320, width=128)
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer(phantom.volume, "synthetic")
    kwargs.update(layer_kwargs)
    viewer.add_image(data, **kwargs)
    panel = LayersWidget(viewer)
    panel.device.value = "cpu"
    return viewer, panel, phantom


def _run(panel, qtbot) -> None:
    worker = panel.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: panel.run_button.enabled, timeout=10_000)


def test_segment_shows_bands_boundaries_and_an_enface_map_that_follows_the_slider(make_napari_viewer, qtbot):
    viewer, panel, phantom = _panel(make_napari_viewer)
    _run(panel, qtbot)
    bands = viewer.layers[BANDS_LAYER].data
    assert bands.shape == phantom.volume.shape and set(np.unique(bands)) >= {0, 1, 8}
    shapes = viewer.layers[BOUNDARY_LAYER]
    assert shapes.nshapes == 3 * len(BOUNDARIES) and set(shapes.shape_type) == {"path"}
    model_rows = panel.boundaries[1]  # the paths hold the model's boundaries (vertices every 2nd A-scan)
    assert np.median(np.abs(panel.edited_boundaries(1) - model_rows)) <= 1.0
    assert not panel.enface.native.isHidden() and panel.enface.thickness.shape == (3, 128)
    assert len(panel.enface.grid) == 7 and "C0" in panel.enface.table.value
    ring = panel.enface.grid[0].get_xdata().mean()
    panel.enface.centre_ascan.value = panel.enface.centre[1] + 20  # move the grid
    assert panel.enface.grid[0].get_xdata().mean() == pytest.approx(ring + 20)
    viewer.dims.set_current_step(0, 2)
    assert panel.enface.bscan_row == 2
    viewer.dims.set_current_step(0, 0)
    assert panel.enface.bscan_row == 0


def test_an_edited_boundary_is_accepted_into_the_store(make_napari_viewer, qtbot, tmp_path):
    viewer, panel, _ = _panel(make_napari_viewer)
    _run(panel, qtbot)
    store = CorrectionStore(tmp_path)
    session(viewer).store = store
    viewer.dims.set_current_step(0, 1)
    shapes = viewer.layers[BOUNDARY_LAYER]
    (ilm,) = np.flatnonzero((shapes.features["bscan"] == 1) & (shapes.features["boundary"] == "ILM"))
    path = shapes.data[ilm].copy()
    path[:, 1] = 5.0  # drag the whole ILM up to row 5
    shapes.data = [path if i == ilm else d for i, d in enumerate(shapes.data)]
    assert panel.accept_boundaries() is not None
    rows, names = CorrectionStore(tmp_path).accepted_boundaries(store.volume_id(panel.volume))[1]
    assert names == BOUNDARIES and rows.shape == (9, 128)
    np.testing.assert_allclose(rows[0], 5.0)
    assert (viewer.layers[BANDS_LAYER].data[1][5:8] != 0).all()  # the bands follow the edited ILM
    assert (np.diff(rows, axis=0) >= 0).all()


def test_accept_without_a_project_says_so(make_napari_viewer, qtbot):
    _, panel, _ = _panel(make_napari_viewer)
    _run(panel, qtbot)
    assert panel.accept_boundaries() is None


def test_cancel_stops_before_every_bscan_is_done(make_napari_viewer, qtbot):
    viewer, panel, _ = _panel(make_napari_viewer, n_bscans=12)
    worker = panel.run()
    worker.yielded.connect(lambda _: panel.cancel())
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: panel.run_button.enabled, timeout=10_000)
    assert panel.status.value == "cancelled"
    assert 0 < viewer.layers[BOUNDARY_LAYER].nshapes < 12 * len(BOUNDARIES)


def test_a_volume_without_physical_scale_gives_the_clear_message(make_napari_viewer, qtbot):
    viewer, panel, _ = _panel(make_napari_viewer, scale=(1.0, 1.0, 1.0), metadata={})
    _run(panel, qtbot)
    assert panel.scale_note.value == NO_SCALE and "no physical scale" in NO_SCALE
    assert panel.enface.native.isHidden()


def test_a_missing_checkpoint_is_an_error_not_a_run(make_napari_viewer, tmp_path):
    _, panel, _ = _panel(make_napari_viewer)
    panel.checkpoint.value = str(tmp_path / "none.safetensors")
    assert panel.run() is None


def test_a_bscan_without_retina_is_named_and_left_empty(make_napari_viewer, qtbot):
    viewer, panel, _ = _panel(make_napari_viewer)
    viewer.layers["synthetic"].data[1] = 0.0  # a blank B-scan
    _run(panel, qtbot)
    assert panel.without_retina == [1] and panel.status.value == "done"
    bscans = set(viewer.layers[BOUNDARY_LAYER].features["bscan"])
    assert bscans == {0, 2} and not viewer.layers[BANDS_LAYER].data[1].any()
