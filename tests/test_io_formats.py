"""Every reader on a file of its format: real files from ../shared/data, else files written by the
format's own library or built from its published layout (see tests/io_builders.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import io_builders as b
import numpy as np
import pytest

from oct_wsss.io import OctReadError, can_read, read_volume
from oct_wsss.volume import DEFAULT_SPACING_MM


def test_real_heidelberg_vol_circle_scan(real_vol: Path) -> None:
    v = read_volume(real_vol)
    assert v.shape == (1, 496, 768) and v.data.dtype == np.float32
    assert v.laterality == "OD" and v.source["format"] == "heidelberg-vol"
    assert v.spacing_mm[1] == pytest.approx(0.003872, abs=1e-6) and v.spacing_mm[2] == pytest.approx(0.015613, abs=1e-6)
    assert v.meta["scan_pattern"] == "circle" and v.meta["spacing_defaulted_axes"] == "z"
    assert float(v.data.min()) == 0.0 and float(v.data.max()) == 1.0
    assert v.patient["patient_id"] == "E01" and v.patient["birth_date"] == "1986-04-17"
    text = repr(v.summary()) + repr(v.meta) + repr(v.source)
    assert "E01" not in text and "1986-04-17" not in text


def test_real_bonn_folder_with_stripped_heyex_xml(shared_data: Path) -> None:
    folder = shared_data / "bonn_drusen_volume"
    v = read_volume(folder)  # images in bscans/, spacing from OCT-Info.xml
    assert v.shape == (70, 496, 512) and v.data.dtype == np.uint8
    assert v.spacing_mm == pytest.approx((0.03, 0.003872, 0.011182))
    assert v.meta["spacing_source"] == "file"
    assert read_volume(folder / "OCT-Info.xml").shape == v.shape
    assert can_read(folder)


def test_real_png_folder_natural_order_default_spacing(shared_data: Path, tmp_path: Path) -> None:
    src = sorted((shared_data / "duke_dme_chiu2015" / "images").glob("Subject_01_*.png"))
    assert len(src) == 11
    for i, f in enumerate(src):  # symlinks named 1..11 so natural order differs from lexical order
        (tmp_path / f"{i + 1}.png").symlink_to(f)
    v = read_volume(tmp_path)
    import imageio.v3 as iio

    assert v.shape[0] == 11 and v.meta["spacing_source"] == "default" and v.spacing_mm == DEFAULT_SPACING_MM
    np.testing.assert_array_equal(v.data[1], iio.imread(src[1]))  # "2.png" is second, not "10.png"
    np.testing.assert_array_equal(v.data[10], iio.imread(src[10]))


def test_real_mixed_sizes_folder_names_the_files(shared_data: Path) -> None:
    with pytest.raises(OctReadError, match=r"differ in size.*Subject_0"):
        read_volume(shared_data / "duke_dme_chiu2015" / "images")


def test_vol_written_with_eyepy_struct(tmp_path: Path) -> None:
    raw = np.random.default_rng(1).random((3, 20, 30)).astype(np.float32) ** 4
    raw[0, 0, :5] = np.finfo(np.float32).max  # Heidelberg's invalid marker
    path = b.build_vol(tmp_path / "scan.vol", raw)
    with pytest.warns(UserWarning, match="5 non-finite"):
        v = read_volume(path)
    assert v.shape == (3, 20, 30) and v.laterality == "OS" and v.spacing_mm == pytest.approx((0.12, 0.0039, 0.0114))
    assert v.meta["n_nonfinite"] == 5 and v.meta["scan_pattern"] == "volume (ART)"
    valid = raw < 1e38
    np.testing.assert_allclose(np.argsort(v.data[valid]), np.argsort(raw[valid] ** 0.25))
    assert v.data[0, 0, 0] == v.data[valid].min()


def test_topcon_fds_and_fda(tmp_path: Path) -> None:
    vol = (np.random.default_rng(2).random((4, 20, 30)) * 4000).astype(np.uint16)
    for kind in ("FDS", "FDA"):
        v = read_volume(b.build_topcon(tmp_path / f"scan.{kind.lower()}", vol, kind=kind, eye=1))
        assert v.shape == (4, 20, 30) and v.laterality == "OS" and v.meta["device"] == "Topcon Maestro2"
        assert v.spacing_mm == pytest.approx((6.0 / 4, 0.0026, 6.0 / 30))
        np.testing.assert_allclose(v.data, (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6)
        assert v.patient["surname"] == "Doe" and "Doe" not in repr(v.summary())


def test_topcon_fda_jpeg_slices(tmp_path: Path) -> None:
    vol = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (3, 20, 1))
    v = read_volume(b.build_topcon(tmp_path / "scan.fda", vol, kind="FDA", jpeg=True, eye=0))
    assert v.shape == (3, 20, 30) and v.data.dtype == np.uint8 and v.laterality == "OD"
    assert np.abs(v.data.astype(int) - vol).max() <= 3  # JPEG


def test_zeiss_img_by_file_size(tmp_path: Path) -> None:
    n, depth, width = 200, 1024, 200
    vol = np.random.default_rng(3).integers(0, 255, (n, depth, width), dtype=np.uint8)
    path = tmp_path / "P1234_Macular Cube 200x200_1-2-2020_3-4-5_OD_sn99_cube_raw.img"
    path.write_bytes(vol.transpose(0, 2, 1).tobytes())  # per B-scan: A-scan after A-scan, depth fastest
    v = read_volume(path)
    np.testing.assert_array_equal(v.data, vol)
    assert v.laterality == "OD" and v.meta["spacing_source"] == "assumed" and v.patient["patient_id"] == "P1234"
    assert "P1234" not in repr(v.meta)
    (tmp_path / "odd.img").write_bytes(b"\0" * 1000)
    with pytest.raises(OctReadError, match="matches no known Cirrus cube"):
        read_volume(tmp_path / "odd.img")


def test_bioptigen_oct(tmp_path: Path) -> None:
    vol = (np.random.default_rng(4).random((4, 20, 30)) * 4000).astype(np.uint16)
    v = read_volume(b.build_bioptigen(tmp_path / "scan.OCT", vol, scan_mm=(2.0, 1.5, 3.0)))
    np.testing.assert_allclose(v.data, (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6)
    assert v.spacing_mm == pytest.approx((2.0 / 3, 1.5 / 20, 3.0 / 30))


def test_dicom_opt_written_by_pydicom(tmp_path: Path) -> None:
    vol = np.random.default_rng(5).integers(0, 255, (4, 20, 30), dtype=np.uint8)
    v = read_volume(b.build_dicom(tmp_path / "scan.dcm", vol))
    np.testing.assert_array_equal(v.data, vol)
    assert v.spacing_mm == pytest.approx((0.12, 0.0039, 0.0114)) and v.laterality == "OD"
    assert v.patient["PatientName"] == "Doe^Jane" and v.patient["PatientBirthDate"] == "19610203"
    text = repr(v.summary()) + repr(v.meta) + repr(v.source)
    for phi in ("Doe", "19610203", "MRN-0042", "free text", "Who^Dr", "ACC-9"):
        assert phi not in text


def test_dicom_16bit_normalised(tmp_path: Path) -> None:
    vol = np.random.default_rng(6).integers(100, 40000, (2, 10, 12)).astype(np.uint16)
    v = read_volume(b.build_dicom(tmp_path / "scan.dcm", vol))
    assert v.data.dtype == np.float32 and v.data.min() == 0 and v.data.max() == 1
    assert v.meta["source_range"] == [float(vol.min()), float(vol.max())]


def test_heyex_xml_export_through_eyepy(tmp_path: Path) -> None:
    vol = np.random.default_rng(7).integers(0, 255, (4, 20, 30), dtype=np.uint8)
    xml = b.build_heyex_xml(tmp_path / "export", vol)
    for target in (xml, xml.parent):
        v = read_volume(target)
        np.testing.assert_array_equal(v.data, vol)
        assert v.spacing_mm == pytest.approx((0.12, 0.0039, 0.0114)) and v.laterality == "OD"
        assert v.patient["surname"] == "Doe" and v.patient["birth_date"] == "1961-02-03"
        assert "Doe" not in repr(v.summary()) and "Jane" not in repr(v.meta)


def test_duke_mat_through_eyepy(tmp_path: Path) -> None:
    from scipy.io import savemat

    images = np.random.default_rng(8).integers(0, 255, (20, 30, 3), dtype=np.uint8)  # (H, W, n) as Duke stores
    savemat(tmp_path / "Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat",
            {"images": images, "layerMaps": np.zeros((3, 30, 3)), "Age": np.array([[70]])})
    v = read_volume(tmp_path / "Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat")
    np.testing.assert_array_equal(v.data, np.moveaxis(images, -1, 0))
    assert v.spacing_mm == pytest.approx((0.067, 0.0045, 0.0067)) and v.patient == {"age": 70}


def test_duke_mat_parser_process_is_kept_and_replaced_when_it_dies(tmp_path: Path) -> None:
    """The spawned .mat parser serves file after file (no interpreter start per file); if it dies, the read is a
    clear error and the next file gets a fresh parser."""
    import os
    import signal

    from scipy.io import savemat

    from oct_wsss.io import duke_mat

    images = np.random.default_rng(9).integers(0, 255, (20, 30, 2), dtype=np.uint8)
    path = tmp_path / "Farsiu_Ophthalmology_2013_AMD_Subject_1002.mat"
    savemat(path, {"images": images, "layerMaps": np.zeros((2, 30, 3)), "Age": np.array([[61]])})
    read_volume(path)
    pool = duke_mat._duke_parser()
    pid = pool.submit(os.getpid).result()
    read_volume(path)
    assert duke_mat._duke_parser() is pool and pool.submit(os.getpid).result() == pid
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        pool.submit(os.kill, pid, signal.SIGKILL).result()
    with pytest.raises(OctReadError, match="parser crashed"):
        read_volume(path)
    np.testing.assert_array_equal(read_volume(path).data, np.moveaxis(images, -1, 0))
    assert duke_mat._duke_parser().submit(os.getpid).result() != pid


def test_a_duke_mat_parse_that_hangs_is_a_read_error_and_the_next_file_reads(tmp_path: Path, monkeypatch) -> None:
    """A .mat whose parse never ends (found by atheris) costs an error after DUKE_PARSE_TIMEOUT_S, not a hang; the
    hung parser is killed and the next file gets a fresh one. Simulated with a parse that sleeps in the parser process
    (a timeout no real parse could meet passed by chance on a loaded machine, where the waiting thread woke late)."""
    from io_builders import hung_duke_parse
    from scipy.io import savemat

    from oct_wsss.io import duke_mat

    images = np.random.default_rng(10).integers(0, 255, (20, 30, 2), dtype=np.uint8)
    path = tmp_path / "Farsiu_Ophthalmology_2013_AMD_Subject_1003.mat"
    savemat(path, {"images": images, "layerMaps": np.zeros((2, 30, 3)), "Age": np.array([[62]])})
    read_volume(path)
    with monkeypatch.context() as patched:
        patched.setattr(duke_mat, "_parse_duke", hung_duke_parse)
        patched.setattr(duke_mat, "DUKE_PARSE_TIMEOUT_S", 0.5)
        with pytest.raises(OctReadError, match="did not finish"):
            read_volume(path)
    assert duke_mat._duke_pool is None  # the hung parser was dropped (and killed): the next file starts a fresh one
    np.testing.assert_array_equal(read_volume(path).data, np.moveaxis(images, -1, 0))


def _e2e_codes(n: int = 3, h: int = 64, w: int = 96) -> np.ndarray:
    """Heidelberg float16 codes: exponents 50-63 (values 1e-4..1) plus a few 'empty region' values (> 1.99);
    each B-scan brighter than the one before, so the order of the B-scans is visible in the voxels."""
    rng = np.random.default_rng(21)
    exponent = np.clip(rng.integers(50, 62, (n, h, w)) + np.arange(n)[:, None, None], 50, 63)
    codes = (exponent << 10) | rng.integers(0, 1024, (n, h, w))
    codes[:, 0, :4] = (64 << 10)  # 2.0: eyepy's e2e transform maps empty regions (> 1.99) to 0
    return codes.astype(np.uint16)


def _e2e_expected(codes: np.ndarray) -> np.ndarray:
    """eyepy's ``e2e`` intensity transform, written out (log, scale, clip, to uint8), on the floats eyepy decodes
    from the codes (its decoder table; note it reads the 10 mantissa bits in reverse order)."""
    from eyepy.io.he.e2e_format import Bscan

    x = Bscan.LUT[codes].astype(np.float64)
    u = np.clip((np.log(x + 2.44e-04) + 8.3) / 8.285, 0, 1)
    u[x > 1.99] = 0
    return np.rint(u * 255).astype(np.uint8)


def test_e2e_built_with_eyepy_structs(tmp_path: Path) -> None:
    codes = _e2e_codes()
    path = b.build_e2e(tmp_path / "scan.e2e", codes, order=[2, 0, 1])  # slices stored out of order
    assert can_read(path)
    v = read_volume(path)
    assert v.shape == (3, 64, 96) and v.data.dtype == np.uint8 and v.source["format"] == "heidelberg-e2e"
    np.testing.assert_array_equal(v.data, _e2e_expected(codes))
    assert v.data[0].mean() < v.data[1].mean() < v.data[2].mean()
    # y from the B-scan header; x = 20 deg / 96 A-scans, z = 0.5 deg per B-scan, at 0.2896 mm/deg
    assert v.spacing_mm == pytest.approx((0.5 * 0.2896, 0.0039, 20 / 96 * 0.2896), rel=1e-6)
    assert v.meta["spacing_source"] == "file" and "spacing_defaulted_axes" not in v.meta
    assert v.laterality == "OS" and v.meta["scan_pattern"] == "OCT ART Volume" and v.meta["scan_date"] == "2020-05-06"
    assert v.patient["first_name"] == "Jane" and v.patient["surname"] == "Doe"
    assert v.patient["patient_id"] == "MRN-0042" and v.patient["birth_date"] == "1961-02-03"
    assert v.patient["sex"] == "F" and v.patient["heyex_series_id"] == 13
    text = repr(v.summary()) + repr(v.meta) + repr(v.source)
    for phi in ("Jane", "Doe", "MRN-0042", "1961", str(b.E2E_BIRTHDATE_1961_02_03)):
        assert phi not in text, phi
    out = tmp_path / "out.tif"
    from oct_wsss.io import write_volume

    write_volume(v, out)
    assert all(phi not in out.read_bytes() for phi in (b"Jane", b"Doe", b"MRN-0042", b"1961-02-03"))
    assert read_volume(b.build_e2e(tmp_path / "od.e2e", codes[:1], laterality="OD")).laterality == "OD"


def test_e2e_birth_date_encodings() -> None:
    from oct_wsss.io.heyex import e2e_birth_date

    assert e2e_birth_date(b.E2E_BIRTHDATE_1961_02_03) == "1961-02-03"
    assert e2e_birth_date(19610203) == "1961-02-03"  # some files hold YYYYMMDD
    assert e2e_birth_date(0) is None and e2e_birth_date(2**32 - 1) is None


def test_e2e_not_an_e2e_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "x.e2e").write_bytes(b"CMDb" + b"\x00" * 200)
    with pytest.raises(OctReadError, match="x.e2e"):
        read_volume(tmp_path / "x.e2e")


def test_retouch_folder_read_with_itk(tmp_path: Path) -> None:
    import itk  # noqa: F401  (the optional 'retouch' extra; part of the test environment)

    rng = np.random.default_rng(31)
    spectralis = rng.integers(100, 60000, (3, 40, 50)).astype(np.uint16)  # Spectralis volumes are USHORT
    ref = np.zeros_like(spectralis, np.uint8)
    ref[1, 10:20, 5:15] = 2
    folder = b.build_retouch(tmp_path / "TRAIN001", spectralis, spacing_zyx=(0.12, 0.0039, 0.0117), reference=ref)
    assert {p.name for p in folder.iterdir()} == {"oct.mhd", "oct.raw", "reference.mhd", "reference.raw"}
    assert "DimSize = 50 40 3" in (folder / "oct.mhd").read_text()
    assert can_read(folder)
    v = read_volume(folder)
    assert v.shape == (3, 40, 50) and v.data.dtype == np.float32 and v.source["format"] == "retouch"
    lo, hi = float(spectralis.min()), float(spectralis.max())
    np.testing.assert_allclose(v.data, (spectralis - lo) / (hi - lo), atol=1e-6)  # all 16 bits kept
    assert v.meta["source_dtype"] == "uint16" and v.meta["source_range"] == [lo, hi] and v.meta["has_reference"]
    assert v.spacing_mm == pytest.approx((0.12, 0.0039, 0.0117)) and v.meta["spacing_source"] == "file"
    cirrus = rng.integers(0, 256, (4, 30, 20)).astype(np.uint8)  # Cirrus/Topcon volumes are UCHAR: kept exactly
    v = read_volume(b.build_retouch(tmp_path / "TEST002", cirrus))
    np.testing.assert_array_equal(v.data, cirrus)
    assert v.spacing_mm == pytest.approx((0.047, 0.00195, 0.0117)) and not v.meta["has_reference"]


def test_single_image_and_rgb(tmp_path: Path) -> None:
    import imageio.v3 as iio

    grey = np.random.default_rng(9).integers(0, 255, (20, 30), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", np.stack([grey] * 3, -1))  # RGB with equal channels -> exact grey
    v = read_volume(tmp_path / "g.png")
    assert v.shape == (1, 20, 30)
    np.testing.assert_array_equal(v.data[0], grey)
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 0] = 200
    iio.imwrite(tmp_path / "c.png", colour)
    assert read_volume(tmp_path / "c.png").data.max() == round(0.299 * 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_volume(tmp_path / "g.png").data.dtype == np.uint8
