"""eyepy ``.eye`` files in napari: export -> open -> the same volume, lesion labels and layer lines."""

from __future__ import annotations

from pathlib import Path
from zipfile import BadZipFile

import numpy as np
import pytest

from oct_wsss.io.eye_export import export_eye
from oct_wsss.napari._layers import BOUNDARY_LAYER, PROPOSED
from oct_wsss.propose.layer_geometry import boundaries_from_paths
from oct_wsss.synth import make_volume

PLUGIN = "napari-oct-wsss"
LINES = ("ILM", "IPL_INL", "RPE", "BM")


def _exported(tmp_path: Path) -> tuple[Path, object, dict[str, np.ndarray]]:
    phantom = make_volume(3, n_bscans=3, height=96, width=64)
    lines = {k: phantom.layers[k] for k in LINES}
    path = export_eye(phantom.labels, phantom.volume.data, tmp_path / "scan.eye", phantom.volume.spacing_mm, lines)
    return path, phantom, lines


def test_eye_round_trip_gives_the_same_labels_and_layer_lines(make_napari_viewer, tmp_path: Path) -> None:
    path, phantom, lines = _exported(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    image = viewer.layers[0]
    assert image.data.shape == phantom.volume.shape
    np.testing.assert_allclose(image.scale, phantom.volume.spacing_mm, rtol=1e-6)
    np.testing.assert_array_equal(viewer.layers[PROPOSED].data, phantom.labels)
    shapes = viewer.layers[BOUNDARY_LAYER]
    features = shapes.features
    for i in range(phantom.volume.n_bscans):
        for name in LINES:
            (index,) = np.flatnonzero((features["bscan"] == i) & (features["boundary"] == name))
            row = boundaries_from_paths([shapes.data[index]], phantom.volume.shape[2])[0]
            np.testing.assert_allclose(row, lines[name][i], atol=1e-4)


def test_eye_lines_without_areas_open_without_a_lesions_layer(make_napari_viewer, tmp_path: Path) -> None:
    import eyepy

    eye = eyepy.EyeVolume(np.random.default_rng(0).random((2, 40, 30)).astype(np.float32))
    eye.add_layer_annotation(np.full((2, 30), 12.0), meta={"name": "ILM"})
    eye.save(tmp_path / "ilm.eye")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "ilm.eye"), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers][1:] == [BOUNDARY_LAYER]
    assert viewer.layers[0].metadata["oct_wsss"]["spacing_source"] == "default"


def test_a_damaged_eye_file_names_itself_and_a_missing_one_is_not_claimed(make_napari_viewer, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    from oct_wsss.napari._reader import get_reader, read_eye_file

    path, _, _ = _exported(tmp_path)
    damaged = tmp_path / "damaged.eye"
    damaged.write_bytes(path.read_bytes()[:200])
    assert get_reader(str(tmp_path / "missing.eye")) is None
    assert get_reader(str(damaged)) is read_eye_file
    make_napari_viewer()
    before = len(notification_manager.records)
    with pytest.raises(BadZipFile):  # raised on, so napari offers other readers
        read_eye_file(str(damaged))
    assert any("damaged.eye" in str(r.message) for r in notification_manager.records[before:])
