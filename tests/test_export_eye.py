"""eyepy ``.eye`` export: the scan with one pixel annotation per class, read back identically by eyepy itself."""

from __future__ import annotations

import eyepy
import numpy as np
import pytest

from oct_wsss.cli import main
from oct_wsss.io import write_labels
from oct_wsss.io.export import write_volume
from oct_wsss.io.label_export import export_labels
from oct_wsss.io.segmentation import read_eye_labels
from oct_wsss.synth import make_volume


def test_eye_export_reads_back_with_eyepy(tmp_path) -> None:
    phantom = make_volume(4, n_bscans=3, height=40, width=32, prevalence={"srf": 1.0, "hrf": 1.0})
    labels = phantom.labels.copy()
    labels[1, 0:3, 0:4] = 2  # make sure a second class is present
    (path,) = export_labels(labels, tmp_path, "../scan", ("eye",), phantom.volume.spacing_mm, phantom.volume.data)
    assert path == tmp_path / "scan.eye"
    eye = eyepy.EyeVolume.load(path)
    np.testing.assert_array_equal(eye.data, phantom.volume.data.astype(np.float32))
    assert (eye.scale_z, eye.scale_y, eye.scale_x) == pytest.approx(phantom.volume.spacing_mm)
    present = sorted(int(c) for c in np.unique(labels) if c)
    assert sorted(m.meta["oct_wsss_id"] for m in eye.volume_maps.values()) == present
    for annotation in eye.volume_maps.values():  # eyepy's own voxel maps, one per class
        np.testing.assert_array_equal(np.asarray(annotation.data, bool), labels == annotation.meta["oct_wsss_id"])
    np.testing.assert_array_equal(read_eye_labels(path), labels)


def test_eye_needs_the_scan(tmp_path, capsys) -> None:
    phantom = make_volume(5, n_bscans=2, height=24, width=20)
    with pytest.raises(ValueError, match="volume"):
        export_labels(phantom.labels, tmp_path, "x", ("eye",))
    write_labels(tmp_path / "labels.tif", phantom.labels)
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "a"), "--formats", "eye"]) == 2
    assert "--volume" in capsys.readouterr().err
    write_volume(phantom.volume, tmp_path / "scan.npz")
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "b"), "--formats", "tiff,eye",
                 "--volume", str(tmp_path / "scan.npz")]) == 0
    np.testing.assert_array_equal(read_eye_labels(tmp_path / "b" / "labels.eye"), phantom.labels)
