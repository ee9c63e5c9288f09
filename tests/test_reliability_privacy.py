"""Privacy: patient name, id, birth date and free-text comments planted in the inputs appear in nothing written.

Inputs: a DICOM (PatientName, PatientID, PatientBirthDate, PatientComments, ImageComments, OperatorsName) and a
Heidelberg .vol (patient id, birth date), each under a file name that carries the patient's name. Everything that
writes runs on them: ``oct-wsss read`` (text and JSON), ``propose`` (labels.tif, provenance.json, scores.npy),
``export`` (TIFF, NPY, PNG, measurements CSV), ``write_volume`` (TIFF, NPY + JSON, NPZ, PNG folder), the
CorrectionStore (SQLite + WAL + npz), ``finetune`` (checkpoint with lineage) and the napari layer tuples. Then every
byte written — compressed members, TIFF tags and PNG text chunks unpacked — and the captured stdout, stderr and log
records are searched for the planted strings (as UTF-8, UTF-16 and UTF-32).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from io_builders import build_dicom, build_vol
from reliability_helpers import report, tiny_student

from oct_wsss.cli import main
from oct_wsss.io import read_volume, write_volume
from oct_wsss.store import CorrectionStore

SURNAME, GIVEN, PATIENT_ID, COMMENT = "Zyxwander", "Quilla", "MRN7Q93X", "quailfeather"
BIRTH = ("19430817", "1943-08-17", "17.08.1943")
PLANTED = (SURNAME, GIVEN, PATIENT_ID, COMMENT, *BIRTH)


def _dicom(path: Path) -> Path:
    import pydicom

    rng = np.random.default_rng(1)
    build_dicom(path, rng.integers(0, 255, (3, 48, 40), dtype=np.uint8), name=f"{SURNAME}^{GIVEN}", birth=BIRTH[0])
    ds = pydicom.dcmread(path)
    ds.PatientID, ds.PatientComments, ds.ImageComments = PATIENT_ID, f"{COMMENT} allergic", f"{COMMENT} note"
    ds.OperatorsName, ds.StudyDescription = f"{GIVEN}^Op", f"{SURNAME} follow-up"
    ds.save_as(path, enforce_file_format=True)
    return path


def _vol(path: Path) -> Path:
    rng = np.random.default_rng(2)
    return build_vol(path, rng.random((2, 48, 40), dtype=np.float32) * 0.5, patient_id=PATIENT_ID,
                     dob=f"{BIRTH[1]}T00:00:00")


def blobs(path: Path) -> list[bytes]:
    """The file's bytes plus what compression or containers hide: zip members, TIFF tag values, PNG text."""
    raw = path.read_bytes()
    out = [raw]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            out += [z.read(name) for name in z.namelist()] + [n.encode() for n in z.namelist()]
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                out += [str(tag.value).encode("utf-8", "replace") for tag in page.tags.values()]
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            out.append(json.dumps({str(k): str(v) for k, v in im.info.items()}).encode())
    return out


def leaks(texts: dict[str, bytes]) -> list[str]:
    found = []
    for where, data in texts.items():
        low = data.lower()
        for s in PLANTED:
            for enc in ("utf-8", "utf-16-le", "utf-32-le"):  # numpy str arrays are UTF-32
                if s.lower().encode(enc) in low:
                    found.append(f"{s!r} ({enc}) in {where}")
    return found


def test_no_planted_phi_in_anything_written(tmp_path: Path, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sources = {"dicom": _dicom(inputs / f"{SURNAME}_{GIVEN}_{BIRTH[0]}.dcm"),
               "vol": _vol(inputs / f"{SURNAME}-{PATIENT_ID}.vol")}
    out = tmp_path / "out"
    ckpt = tiny_student(tmp_path / "student.safetensors")
    captured: dict[str, bytes] = {}
    log: list[str] = []

    for kind, src in sources.items():
        volume = read_volume(src)
        assert volume.patient, f"{kind}: the planted fields should be read (into volume.patient)"
        assert main(["read", str(src)]) == 0 and main(["read", str(src), "--json"]) == 0
        prop = out / f"{kind}-proposal"
        assert main(["propose", str(src), "--method", "student", "--checkpoint", str(ckpt), "--out", str(prop),
                     "--device", "cpu", "--keep-scores"]) == 0
        assert main(["export", str(prop / "labels.tif"), "--out", str(out / f"{kind}-export"), "--volume",
                     str(src)]) == 0
        for suffix in (".tif", ".npy", ".npz", "") if volume.data.dtype == np.uint8 else (".tif", ".npy", ".npz"):
            write_volume(volume, out / f"{kind}-volume{suffix}")  # a PNG folder takes uint8 only
        store = CorrectionStore(out / "project")
        provenance = json.loads((prop / "provenance.json").read_text())
        vid = store.volume_id(volume)
        for i in range(volume.n_bscans):
            mask = np.zeros(volume.shape[1:], np.uint8)
            mask[10:20, 5 + i : 15 + i] = 1
            store.accept(vid, i, mask, image=volume.data[i], proposal=np.zeros_like(mask),
                         proposal_info=provenance, grader="grader-1")
        from oct_wsss.napari._layers import image_layer

        _, layer_meta, _ = image_layer(volume)
        captured[f"napari layer ({kind})"] = json.dumps(layer_meta, default=str).encode()

    from oct_wsss.training.finetune import DEFAULTS, finetune

    path, lineage = finetune(out / "project", ckpt, out_dir=out / "finetuned", config=replace(DEFAULTS, epochs=1),
                             device="cpu", log=log.append)
    assert path.is_file() and lineage["trained_on"]

    std = capsys.readouterr()
    captured["stdout"], captured["stderr"] = std.out.encode(), std.err.encode()
    captured["log records"] = "\n".join([r.getMessage() for r in caplog.records] + log).encode()
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(written) > 20 and any(p.suffix == ".sqlite" for p in written)
    for p in written:
        for n, blob in enumerate(blobs(p)):
            captured[f"{p.relative_to(out)}#{n}"] = blob
    found = leaks(captured)
    report("privacy", {"written_files": len(written), "blobs_scanned": len(captured), "planted_strings": len(PLANTED),
                       "hits": len(found)})
    assert found == []
    # the scanner finds what it looks for: the inputs themselves hold every planted field
    assert leaks({"dicom": sources["dicom"].read_bytes()}) and leaks({"file names": str(sources).encode()})


def test_scanner_sees_inside_compressed_files(tmp_path: Path) -> None:
    """A planted string in a zlib-compressed TIFF description or an npz member is found (no false all-clear)."""
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 4, 4), np.uint8), description=f"x {SURNAME} y",
                     compression="zlib")
    buf = io.BytesIO()
    np.savez_compressed(buf, note=np.asarray(f"{PATIENT_ID}" * 20))
    (tmp_path / "b.npz").write_bytes(buf.getvalue())
    for name in ("a.tif", "b.npz"):
        assert leaks({name: b"".join(blobs(tmp_path / name))}), name


@pytest.mark.parametrize("name", [f"{SURNAME}_{GIVEN}.dcm", f"scan-{BIRTH[0]}.dcm", f"{PATIENT_ID.lower()}.dcm"])
def test_layer_name_never_carries_the_patient(tmp_path: Path, name: str) -> None:
    from oct_wsss.napari._layers import display_name

    volume = read_volume(_dicom(tmp_path / name))
    assert not leaks({"layer name": display_name(volume).encode()}), display_name(volume)
