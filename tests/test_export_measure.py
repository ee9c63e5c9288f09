"""Measurements equal hand-computed areas and volumes; exports read back identically; names cannot escape."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest

from oct_wsss.cli import main
from oct_wsss.evaluate.measure import measure_labels
from oct_wsss.io import read_labels, write_labels
from oct_wsss.io.label_export import export_labels, safe_name

SPACING = (0.1, 0.004, 0.01)  # mm: B-scans 100 µm apart, 4 µm deep, 10 µm lateral


def _labels() -> np.ndarray:
    lab = np.zeros((3, 20, 30), np.uint8)
    lab[0, 2:6, 3:8] = 1        # 20 SRF pixels
    lab[2, 10:12, 0:10] = 1     # 20 more
    lab[1, 5:7, 5:7] = 5        # one HRF of 4 px
    lab[1, 15, 20] = 5          # another of 1 px
    lab[1, 16, 21] = 5          # touching diagonally: the same focus
    return lab


def test_areas_volumes_and_foci_by_hand() -> None:
    m = measure_labels(_labels(), SPACING)
    px = 0.004 * 0.01
    assert m.bscans == [{"bscan": 0, "class": "srf", "pixels": 20, "area_mm2": round(20 * px, 6)},
                        {"bscan": 2, "class": "srf", "pixels": 20, "area_mm2": round(20 * px, 6)},
                        {"bscan": 1, "class": "hrf", "pixels": 6, "area_mm2": round(6 * px, 6)}]
    srf = next(r for r in m.volume if r["class"] == "srf")
    assert srf == {"class": "srf", "bscans": 2, "pixels": 40, "volume_mm3": round(40 * px * 0.1, 6)}
    assert sorted(f["pixels"] for f in m.hrf) == [2, 4]
    assert m.hrf[0]["area_um2"] == pytest.approx(4 * 40.0)
    with pytest.raises(ValueError, match="positive"):
        measure_labels(_labels(), (0, 1, 1))


def test_exports_read_back_identically(tmp_path) -> None:
    lab = _labels()
    paths = export_labels(lab, tmp_path, "scan")
    np.testing.assert_array_equal(read_labels(tmp_path / "scan.tif"), lab)
    np.testing.assert_array_equal(np.load(tmp_path / "scan.npy"), lab)
    np.testing.assert_array_equal(np.stack([iio.imread(tmp_path / "scan_png" / f"{i:03d}.png") for i in range(3)]),
                                  lab)
    assert len(paths) == 5 and not list(tmp_path.rglob(".*partial*"))


@pytest.mark.parametrize(("raw", "safe"), [("../../etc/passwd", "passwd"), ("a b/c d", "c_d"), ("..", "labels")])
def test_names_are_sanitised(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe


def test_cli_export_with_measurements(tmp_path, capsys) -> None:
    write_labels(tmp_path / "labels.tif", _labels())
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "out"), "--spacing",
                 "0.1,0.004,0.01", "--name", "../x"]) == 0
    with open(tmp_path / "out" / "x_measurements_volume.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["class"] for r in rows} == {"srf", "hrf"}
    assert main(["export", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "o2"), "--formats", "bmp"]) == 2
    assert "unknown export formats" in capsys.readouterr().err
