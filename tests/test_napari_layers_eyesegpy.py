"""The Layers panel with source eyesegpy: the same bands and boundaries as ``oct-wsss layers --source eyesegpy`` on a
small phantom, Cancel between B-scans, and without the converted networks an error notification that says how to
make them, with nothing added or changed.

The converted weights are made at set-up (``scripts/setup.sh`` -> ``scripts/convert_eyesegpy.py``); where they are
absent the tests that need them fail and say how to make them (as tests/test_eyesegpy.py), they are never skipped.
The phantom is cropped to 2-3 B-scans of 128 A-scans: the port runs on the CPU here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from oct_wsss.io import read_labels, read_volume, write_volume
from oct_wsss.io.eyesegpy import default_dir
from oct_wsss.napari._layers import BOUNDARY_LAYER, image_layer
from oct_wsss.napari._layers_panel import BANDS_LAYER, LayersWidget
from oct_wsss.propose.layers import BOUNDARIES, LayerModel
from oct_wsss.propose.layers_eyeseg import CHOICE, missing
from oct_wsss.synth import make_volume
from oct_wsss.weights import layers_checkpoint

pytestmark = pytest.mark.skipif(layers_checkpoint() is None, reason="no bundled layer checkpoint")


@pytest.fixture(scope="module")
def eyeseg_dir() -> Path:
    absent = missing()
    if absent:
        pytest.fail(absent)
    return default_dir()


def _volume_file(tmp_path: Path, n_bscans: int) -> Path:
    """A phantom with its spacing as .npy + JSON sidecar: what the CLI reads and the panel is given are the same."""
    phantom = make_volume(2, n_bscans=n_bscans, height=320, width=128)
    return write_volume(phantom.volume, tmp_path / "vol.npy")


def _panel(make_napari_viewer, path: Path):
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer(read_volume(path), "phantom")
    viewer.add_image(data, **kwargs)
    panel = LayersWidget(viewer)
    panel.device.value = "cpu"
    return viewer, panel


def _wait(panel, worker, qtbot) -> None:
    with qtbot.waitSignal(worker.finished, timeout=600_000):
        pass
    qtbot.waitUntil(lambda: panel.run_button.enabled, timeout=10_000)


def test_source_eyesegpy_gives_what_the_cli_gives(make_napari_viewer, qtbot, tmp_path, eyeseg_dir) -> None:
    from oct_wsss.cli import main

    path = _volume_file(tmp_path, n_bscans=2)
    viewer, panel = _panel(make_napari_viewer, path)
    assert panel.eyesegpy_dir.native.isHidden()
    panel.source.value = "eyesegpy"
    assert not panel.eyesegpy_dir.native.isHidden()
    panel.eyesegpy_dir.value = str(eyeseg_dir)
    _wait(panel, panel.run(), qtbot)
    assert panel.status.value == "done" and panel.without_retina == []

    out = tmp_path / "out"
    assert main(["layers", str(path), "--out", str(out), "--device", "cpu", "--source", "eyesegpy",
                 "--eyesegpy-dir", str(eyeseg_dir)]) == 0
    np.testing.assert_array_equal(viewer.layers[BANDS_LAYER].data, read_labels(out / "layers.tif"))
    cli = np.full_like(panel.boundaries, np.nan)
    for row in csv.DictReader(open(out / "boundaries.csv", newline="")):
        cli[int(row["bscan"]), BOUNDARIES.index(row["boundary"]), int(row["ascan"])] = float(row["y_px"])
    np.testing.assert_allclose(panel.boundaries, cli, atol=0.05 + 1e-4)  # the CSV has one decimal
    assert viewer.layers[BOUNDARY_LAYER].nshapes == 2 * len(BOUNDARIES)

    bundled = LayerModel(layers_checkpoint(), device="cpu").segment(read_volume(path).data).boundaries
    for name in CHOICE:  # BM and RPE are eyesegpy's, not the bundled model's
        k = BOUNDARIES.index(name)
        assert np.abs(panel.boundaries[:, k] - bundled[:, k]).max() > 0.5


def test_cancel_with_eyesegpy_stops_between_bscans(make_napari_viewer, qtbot, tmp_path, eyeseg_dir) -> None:
    viewer, panel = _panel(make_napari_viewer, _volume_file(tmp_path, n_bscans=3))
    panel.source.value = "eyesegpy"
    panel.eyesegpy_dir.value = str(eyeseg_dir)
    worker = panel.run()
    worker.yielded.connect(lambda _: panel.cancel())
    _wait(panel, worker, qtbot)
    assert panel.status.value == "cancelled"
    assert 0 < viewer.layers[BOUNDARY_LAYER].nshapes < 3 * len(BOUNDARIES)


def test_missing_eyesegpy_weights_are_a_notification_and_change_nothing(make_napari_viewer, qtbot, tmp_path) -> None:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer, panel = _panel(make_napari_viewer, _volume_file(tmp_path, n_bscans=2))
    _wait(panel, panel.run(), qtbot)  # a bundled run first: its layers must stay as they are
    bands = viewer.layers[BANDS_LAYER].data.copy()
    shapes = [d.copy() for d in viewer.layers[BOUNDARY_LAYER].data]
    boundaries, volume, names = panel.boundaries.copy(), panel.volume, [layer.name for layer in viewer.layers]

    empty = tmp_path / "no-eyesegpy"
    panel.source.value = "eyesegpy"
    panel.eyesegpy_dir.value = str(empty)
    shown: list = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        assert panel.run() is None
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    errors = [str(n.message) for n in shown if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and missing(empty) in errors[0] and "convert_eyesegpy.py" in errors[0]
    assert [layer.name for layer in viewer.layers] == names and panel.volume is volume
    np.testing.assert_array_equal(viewer.layers[BANDS_LAYER].data, bands)
    assert all(np.array_equal(a, b) for a, b in zip(viewer.layers[BOUNDARY_LAYER].data, shapes, strict=True))
    np.testing.assert_array_equal(panel.boundaries, boundaries)
    assert not empty.exists() and panel.run_button.enabled
