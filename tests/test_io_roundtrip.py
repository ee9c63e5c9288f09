"""write_volume -> read_volume is exact (voxels, dtype, spacing, laterality) and never writes patient fields."""

from __future__ import annotations

from pathlib import Path

import io_builders as b
import numpy as np
import pytest

from oct_wsss.io import read_volume, write_volume
from oct_wsss.volume import OctVolume

SPACING = (0.05, 0.0039, 0.0114)
PHI = {"name": "Doe^Jane", "birth_date": "19610203", "patient_id": "MRN-0042"}


def _volume(dtype: type) -> OctVolume:
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, (5, 24, 32), dtype=np.uint8) if dtype == np.uint8 else \
        rng.random((5, 24, 32), dtype=np.float32) * np.float32(0.8) + np.float32(0.1)
    return OctVolume(data, spacing_mm=SPACING, laterality="OS", meta={"device": "test"}, patient=dict(PHI))


@pytest.mark.parametrize("target", ["v.tif", "v.tiff", "v.npy", "v.npz", "folder"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_round_trip_exact(tmp_path: Path, target: str, dtype: type) -> None:
    vol = _volume(dtype)
    if target == "folder" and dtype == np.float32:
        with pytest.raises(ValueError, match="uint8 B-scans only"):
            write_volume(vol, tmp_path / target)
        return
    out = write_volume(vol, tmp_path / target)
    back = read_volume(out)
    assert back.data.dtype == vol.data.dtype
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.spacing_mm == pytest.approx(SPACING, rel=1e-12) and back.laterality == "OS"
    assert back.meta["spacing_source"] == "file" and back.meta["device"] == "test" and back.patient == {}
    for f in tmp_path.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert all(v.encode() not in blob for v in PHI.values()), f


def test_phi_from_dicom_never_reaches_exports(tmp_path: Path) -> None:
    vol = np.random.default_rng(12).integers(0, 255, (3, 16, 20), dtype=np.uint8)
    v = read_volume(b.build_dicom(tmp_path / "in.dcm", vol))
    assert v.patient["PatientName"] == "Doe^Jane"
    out = tmp_path / "out"
    for name in ("v.tif", "v.npy", "v.npz", "folder"):
        write_volume(v, out / name)
    for f in out.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for phi in (b"Doe", b"Jane", b"19610203", b"MRN-0042", b"free text", b"ACC-9", b"in.dcm"):
                assert phi not in blob, (f, phi)


def test_synth_layout_bscans_subfolder_with_sidecar(tmp_path: Path) -> None:
    vol = _volume(np.uint8)
    write_volume(vol, tmp_path / "vol0" / "bscans")
    (tmp_path / "vol0" / "bscans" / "volume.json").rename(tmp_path / "vol0" / "volume.json")
    write_volume(OctVolume(np.zeros((5, 24, 32), np.uint8)), tmp_path / "vol0" / "masks")
    back = read_volume(tmp_path / "vol0")
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.spacing_mm == pytest.approx(SPACING) and back.laterality == "OS"


def test_imagej_tiff_spacing_in_microns(tmp_path: Path) -> None:
    import tifffile

    data = np.zeros((3, 10, 12), np.uint16)
    data[0, 0, 0] = 500
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 11.4, 1 / 3.9),
                     metadata={"spacing": 120.0, "unit": "micron", "axes": "ZYX"})
    v = read_volume(tmp_path / "ij.tif")
    assert v.spacing_mm == pytest.approx((0.12, 0.0039, 0.0114)) and v.data.dtype == np.float32
    assert v.data.max() == 1.0 and v.meta["source_dtype"] == "uint16"


def test_labels_tif_reads_as_uint8(tmp_path: Path) -> None:
    from oct_wsss.io.labels import write_labels

    labels = np.random.default_rng(13).integers(0, 7, (3, 10, 12), dtype=np.uint8)
    write_labels(tmp_path / "labels.tif", labels, SPACING)
    v = read_volume(tmp_path / "labels.tif")
    np.testing.assert_array_equal(v.data, labels)
    assert v.spacing_mm == pytest.approx(SPACING)


def test_write_refuses_unknown_suffix_and_nonempty_folder(tmp_path: Path) -> None:
    vol = _volume(np.uint8)
    with pytest.raises(ValueError, match="cannot write"):
        write_volume(vol, tmp_path / "v.jpg")
    write_volume(vol, tmp_path / "f")
    with pytest.raises(ValueError, match="already holds images"):
        write_volume(vol, tmp_path / "f")
