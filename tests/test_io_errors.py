"""Bad input gives a specific OctReadError naming the file; normalisation policy on odd data."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import io_builders as b
import numpy as np
import pytest

from oct_wsss.io import SUPPORTED_SUFFIXES, OctReadError, can_read, read_volume


def test_error_is_value_error_with_path_and_reason(tmp_path: Path) -> None:
    (tmp_path / "scan.foo").write_bytes(b"x")
    with pytest.raises(OctReadError) as info:
        read_volume(tmp_path / "scan.foo")
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{tmp_path / 'scan.foo'}: unknown file type '.foo' (supported: .vol")
    with pytest.raises(OctReadError, match="no such file"):
        read_volume(tmp_path / "missing.vol")


def test_truncated_real_vol(real_vol: Path, tmp_path: Path) -> None:
    data = real_vol.read_bytes()
    for cut in (100, 2048 + 768 * 768 + 1000, len(data) - 10):
        (tmp_path / "t.vol").write_bytes(data[:cut])
        with pytest.raises(OctReadError, match="t.vol: (truncated|not a Heidelberg)"):
            read_volume(tmp_path / "t.vol")


def test_corrupt_and_absurd_vol_header(real_vol: Path, tmp_path: Path) -> None:
    data = bytearray(real_vol.read_bytes())
    data[16:20] = (10**9).to_bytes(4, "little")  # n_bscans
    (tmp_path / "huge.vol").write_bytes(bytes(data))
    with pytest.raises(OctReadError, match="header says 1000000000 B-scans"):
        read_volume(tmp_path / "huge.vol")
    (tmp_path / "junk.vol").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(OctReadError, match="junk.vol"):
        read_volume(tmp_path / "junk.vol")


@pytest.mark.parametrize("suffix", [s for s in SUPPORTED_SUFFIXES if s != ".xml"])
def test_random_bytes_never_escape_raw(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(np.random.default_rng(1).bytes(3000))
    with pytest.raises(OctReadError, match="junk"):
        read_volume(path)
    path.write_bytes(b"")
    with pytest.raises(OctReadError, match="empty file"):
        read_volume(path)


def test_truncated_vendor_files(tmp_path: Path) -> None:
    vol = (np.random.default_rng(2).random((4, 20, 30)) * 4000).astype(np.uint16)
    for path in (b.build_topcon(tmp_path / "a.fds", vol), b.build_bioptigen(tmp_path / "a.OCT", vol),
                 b.build_dicom(tmp_path / "a.dcm", vol)):
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
        with pytest.raises(OctReadError, match=path.name):
            read_volume(path)


def _e2e(tmp_path: Path, name: str = "a.e2e") -> Path:
    codes = np.full((3, 16, 24), 60 << 10, np.uint16)
    return b.build_e2e(tmp_path / name, codes)


def _read_in_time(path: Path, seconds: float = 60) -> BaseException | None:
    """read_volume in a thread, so that a reader stuck in a loop fails the test instead of hanging it."""
    import threading

    result: list[BaseException | None] = []

    def run() -> None:
        try:
            read_volume(path)
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"read_volume({path.name}) did not return within {seconds} s"
    return result[0]


def test_truncated_e2e(tmp_path: Path) -> None:
    path = _e2e(tmp_path)
    blob = path.read_bytes()
    for cut in (20, 100, 300, len(blob) // 2, len(blob) - 10):
        path.write_bytes(blob[:cut])
        exc = _read_in_time(path)
        assert isinstance(exc, OctReadError) and "a.e2e" in str(exc), (cut, exc)


def test_corrupt_e2e_directory_and_sizes(tmp_path: Path) -> None:
    import struct

    from eyepy.io.he import HeE2eReader
    from eyepy.io.he.e2e_format import TypesEnum

    path = _e2e(tmp_path)
    blob = bytearray(path.read_bytes())
    n = struct.unpack_from("<I", blob, 36 + 36)[0]  # main header num_entries (after magic, version, 10 x u16)
    last = 36 + 52 + 52 + 44 * (n - 1)  # the chunk's last folder header
    looped = bytearray(blob)
    struct.pack_into("<II", looped, last + 4, 0, 88 - 60)  # its end points back to the first chunk: eyepy loops
    (tmp_path / "loop.e2e").write_bytes(bytes(looped))
    exc = _read_in_time(tmp_path / "loop.e2e")
    assert isinstance(exc, OctReadError) and "points back" in str(exc)

    meta_folder = HeE2eReader(path).file_hierarchy.all_folders
    start = next(f.start for f in meta_folder if f.type == TypesEnum.bscanmeta)
    huge = bytearray(blob)
    struct.pack_into("<II", huge, start + 60 + 4, 10**6, 10**6)  # Type10004 size_y, size_x
    (tmp_path / "huge.e2e").write_bytes(bytes(huge))
    exc = _read_in_time(tmp_path / "huge.e2e")
    assert isinstance(exc, OctReadError) and "truncated or corrupt" in str(exc), exc


def test_retouch_without_itk_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "oct.mhd").write_text("NDims = 3\nDimSize = 4 3 2\nElementType = MET_UCHAR\n"
                                      "ElementDataFile = oct.raw\n")
    (tmp_path / "oct.raw").write_bytes(bytes(24))
    assert can_read(tmp_path)
    monkeypatch.setitem(sys.modules, "itk", None)  # as if itk were not installed
    with pytest.raises(OctReadError, match=r"optional 'itk' package: pip install 'napari-oct-wsss\[retouch\]'"):
        read_volume(tmp_path)


def test_corrupt_retouch(tmp_path: Path) -> None:
    vol = np.random.default_rng(3).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    folder = b.build_retouch(tmp_path / "r", vol)
    raw = folder / "oct.raw"
    raw.write_bytes(raw.read_bytes()[:500])
    with pytest.raises(OctReadError, match="RETOUCH volume unreadable"):
        read_volume(folder)
    raw.unlink()
    with pytest.raises(OctReadError, match="RETOUCH volume unreadable"):
        read_volume(folder)


def test_bad_xml(tmp_path: Path) -> None:
    (tmp_path / "x.xml").write_text("<not closed")
    with pytest.raises(OctReadError, match="x.xml"):
        read_volume(tmp_path / "x.xml")


def test_empty_folder_and_folder_of_junk(tmp_path: Path) -> None:
    with pytest.raises(OctReadError, match="empty folder"):
        read_volume(tmp_path)
    assert not can_read(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OctReadError, match="empty folder"):
        read_volume(tmp_path)


def test_mixed_sizes_names_files(tmp_path: Path) -> None:
    import imageio.v3 as iio

    for i in range(3):
        iio.imwrite(tmp_path / f"{i}.png", np.zeros((10, 12), np.uint8))
    iio.imwrite(tmp_path / "odd.png", np.zeros((10, 13), np.uint8))
    with pytest.raises(OctReadError, match=r"most are 10x12 \(3 files\) but odd.png is 10x13"):
        read_volume(tmp_path)


def test_uint16_and_float_normalised_without_clipping(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for arr in (rng.integers(300, 60000, (3, 8, 9)).astype(np.uint16), rng.normal(5, 100, (3, 8, 9))):
        np.save(tmp_path / "a.npy", arr)
        v = read_volume(tmp_path / "a.npy")
        assert v.data.dtype == np.float32 and v.data.min() == 0 and v.data.max() == 1
        np.testing.assert_array_equal(np.argsort(v.data, axis=None, kind="stable"),
                                      np.argsort(arr, axis=None, kind="stable"))
        assert v.meta["source_range"] == pytest.approx([arr.min(), arr.max()])
        assert v.meta["spacing_source"] == "default"


def test_nans_replaced_and_counted(tmp_path: Path) -> None:
    arr = np.linspace(1, 2, 3 * 8 * 9).reshape(3, 8, 9)
    arr[0, 0, :3] = [np.nan, np.inf, -np.inf]
    np.save(tmp_path / "a.npy", arr)
    with pytest.warns(UserWarning, match="3 non-finite"):
        v = read_volume(tmp_path / "a.npy")
    assert v.meta["n_nonfinite"] == 3 and np.isfinite(v.data).all() and (v.data[0, 0, :3] == 0).all()
    np.save(tmp_path / "nan.npy", np.full((2, 3, 4), np.nan))
    with pytest.raises(OctReadError, match="no finite values"):
        read_volume(tmp_path / "nan.npy")


def test_shapes_2d_4d_empty(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.zeros((8, 9), np.uint8))
    assert read_volume(tmp_path / "b.npy").shape == (1, 8, 9)
    np.save(tmp_path / "rgb.npy", np.zeros((2, 8, 9, 3), np.uint8))
    assert read_volume(tmp_path / "rgb.npy").shape == (2, 8, 9)
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 8, 9), np.uint8))
    with pytest.raises(OctReadError, match="four.npy: expected"):
        read_volume(tmp_path / "four.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 9), np.uint8))
    with pytest.raises(OctReadError, match="empty volume"):
        read_volume(tmp_path / "empty.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(OctReadError, match="obj.npy"):
        read_volume(tmp_path / "obj.npy")


def test_npz_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", volume=np.ones((2, 3, 4), np.uint8), spacing_mm=[0.1, 0.2, 0.3], laterality="L")
    v = read_volume(tmp_path / "a.npz")
    assert v.spacing_mm == (0.1, 0.2, 0.3) and v.laterality == "OS"
    np.savez(tmp_path / "b.npz", x=np.ones((2, 3, 4)), y=np.ones(3))
    with pytest.raises(OctReadError, match="no 'data' or 'volume' key"):
        read_volume(tmp_path / "b.npz")


def test_can_read_never_raises(tmp_path: Path, real_vol: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    assert not can_read(tmp_path / "a.txt")
    assert not can_read(tmp_path / "missing.vol")
    assert not can_read("\0bad")
    assert not can_read(12345)  # type: ignore[arg-type]
    assert can_read(real_vol)
    shutil.copy(real_vol, tmp_path / "x.VOL")
    assert can_read(tmp_path / "x.VOL")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_volume(tmp_path / "x.VOL").shape == (1, 496, 768)


def test_a_tiff_whose_page_chain_loops_is_refused_at_once(tmp_path: Path) -> None:
    """Found by the atheris campaign (heyex-xml-bscan seed): a next-page offset pointing back at the first page made
    tifffile walk the chain for minutes. The chain is now walked first and a loop refused."""
    import struct
    import time

    import tifffile

    path = tmp_path / "loop.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first:first + 2])[0]
    data[first + 2 + 12 * n:first + 6 + 12 * n] = struct.pack("<I", first)
    path.write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(OctReadError, match="loops back"):
        read_volume(path)
    assert time.perf_counter() - t0 < 5


def test_a_heyex_xml_declaring_an_unknown_encoding_is_a_read_error(tmp_path: Path) -> None:
    """Found by the atheris campaign (heyex-xml seed): encoding="utf-9" escaped as a bare LookupError."""
    path = tmp_path / "export.xml"
    path.write_bytes(b'<?xml version="1.0" encoding="utf-9"?><HEDX><Patient/><Image/></HEDX>')
    for target in (path, tmp_path):
        with pytest.raises(OctReadError) as err:
            read_volume(target)
        assert "LookupError" not in str(err.value) or "HEYEX" in str(err.value)
