"""Existing segmentations as a volume's proposal: labels.tif, mask folders, .npy and eyepy .eye read and checked by
``read_segmentation``; ``oct-wsss import`` writes them as a proposal folder; clear errors and nothing written on bad
input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import eyepy
import numpy as np
import pytest
import tifffile
from PIL import Image

from oct_wsss.cli import main
from oct_wsss.io import read_labels, write_labels
from oct_wsss.io.export import write_volume
from oct_wsss.io.eye_export import export_eye
from oct_wsss.io.segmentation import SegmentationError, imported_provenance, read_segmentation
from oct_wsss.synth import make_volume

DUKE = Path("/work/shared/data/duke_dme_chiu2015/labels")


@pytest.fixture(scope="module")
def phantom():
    return make_volume(7, n_bscans=4, height=48, width=40, prevalence={"srf": 1.0, "irf": 1.0, "hrf": 1.0})


def _folder(labels: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, page in enumerate(labels):
        Image.fromarray(page).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("kind", ["tif", "folder", "npy", "eye", "2d-npy"])
def test_every_format_reads_back_the_ontology_ids(phantom, tmp_path, kind) -> None:
    labels = phantom.labels.copy()
    labels[1, :3, :4] = 6
    if kind == "tif":
        path = write_labels(tmp_path / "labels.tif", labels)
    elif kind == "folder":
        path = _folder(labels, tmp_path / "masks")
    elif kind == "eye":
        path = export_eye(labels, phantom.volume.data, tmp_path / "x.eye", phantom.volume.spacing_mm)
    else:
        labels = labels[:1] if kind == "2d-npy" else labels
        path = tmp_path / "labels.npy"
        np.save(path, labels[0].astype(np.int32) if kind == "2d-npy" else labels.astype(np.int64))
    got = read_segmentation(path, labels.shape)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)


def test_another_shape_unknown_ids_floats_and_truncation_are_clear_errors(phantom, tmp_path) -> None:
    shape = phantom.labels.shape
    path = write_labels(tmp_path / "labels.tif", phantom.labels)
    with pytest.raises(SegmentationError, match=r"is 4 B-scans of 48x40; the volume is 5 B-scans of 48x40"):
        read_segmentation(path, (5, 48, 40))
    np.save(tmp_path / "ids.npy", np.full(shape, 12, np.uint8))
    with pytest.raises(SegmentationError, match=r"holds ids 12 that are not in the lesion ontology \(0 background"):
        read_segmentation(tmp_path / "ids.npy", shape)
    np.save(tmp_path / "soft.npy", np.zeros(shape, np.float32))
    with pytest.raises(SegmentationError, match="holds float32 values"):
        read_segmentation(tmp_path / "soft.npy", shape)
    data = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) - 40])
    with pytest.raises(SegmentationError, match=r"cut.tif: unreadable, truncated"):
        read_segmentation(tmp_path / "cut.tif", shape)
    with pytest.raises(SegmentationError, match="unknown segmentation file type '.csv'"):
        (tmp_path / "a.csv").write_text("1,2")
        read_segmentation(tmp_path / "a.csv", shape)


@pytest.mark.skipif(not DUKE.is_dir(), reason="needs the shared Duke DME data")
def test_real_duke_layer_masks_are_refused_naming_their_foreign_ids(tmp_path) -> None:
    """Duke's masks number retinal layers 1..8 and fluid 9: not lesion ids, so refused."""
    folder = tmp_path / "duke"
    folder.mkdir()
    for name in ("Subject_01_00.png", "Subject_01_01.png"):
        shutil.copy(DUKE / name, folder / name)  # into the test's temporary folder only
    shape = (2, *np.asarray(Image.open(folder / "Subject_01_00.png")).shape)
    with pytest.raises(SegmentationError, match=r"holds ids 8, 9 that are not in the lesion ontology"):
        read_segmentation(folder, shape)


def test_eye_layer_lines_give_drusen_and_foreign_areas_are_named(tmp_path) -> None:
    n, h, w = 2, 40, 60
    eye = eyepy.EyeVolume(np.zeros((n, h, w), np.float32))
    bm = np.full((n, w), 30.0)
    rpe = bm - 4.0
    rpe[:, 20:30] -= 6.0  # an elevated RPE: a druse
    eye.add_layer_annotation(rpe, meta={"name": "RPE"})
    eye.add_layer_annotation(bm, meta={"name": "BM"})
    eye.save(tmp_path / "lines.eye")
    labels = read_segmentation(tmp_path / "lines.eye", (n, h, w))
    assert set(np.unique(labels)) == {0, 6} and (labels[:, :, 20:30] == 6).any() and not (labels[:, :, :15] == 6).any()
    eye.add_pixel_annotation(np.ones((n, h, w), bool), meta={"name": "choroid"})
    eye.save(tmp_path / "foreign.eye")
    with pytest.raises(SegmentationError, match="area annotation 'choroid' is not a lesion class"):
        read_segmentation(tmp_path / "foreign.eye", (n, h, w))
    only = eyepy.EyeVolume(np.zeros((n, h, w), np.float32))
    only.add_layer_annotation(bm, meta={"name": "ILM"})
    only.save(tmp_path / "ilm.eye")
    with pytest.raises(SegmentationError, match="holds only the layer lines ILM: no area annotation"):
        read_segmentation(tmp_path / "ilm.eye", (n, h, w))


def test_cli_import_writes_a_proposal_folder(phantom, tmp_path, capsys) -> None:
    write_volume(phantom.volume, tmp_path / "scan.npz")
    np.save(tmp_path / "mine.npy", phantom.labels)
    out = tmp_path / "out"
    assert main(["import", str(tmp_path / "scan.npz"), "--labels", str(tmp_path / "mine.npy"), "--out", str(out)]) == 0
    np.testing.assert_array_equal(read_labels(out / "labels.tif"), phantom.labels)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["method"] == "imported" and provenance["source"] == imported_provenance(tmp_path / "mine.npy")[
        "source"] and "mine" not in json.dumps(provenance)
    assert "imported 4 B-scans" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "scan.npz"), "--labels", str(tmp_path / "mine.npy"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_cli_import_of_the_wrong_volume_fails_in_one_line_and_writes_nothing(phantom, tmp_path, capsys) -> None:
    write_volume(phantom.volume, tmp_path / "scan.npz")
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((3, 48, 40), np.uint8))
    out = tmp_path / "out"
    assert main(["import", str(tmp_path / "scan.npz"), "--labels", str(tmp_path / "other.tif"), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is 3 B-scans of 48x40; the volume is 4 B-scans of 48x40" in err
    assert not out.exists()


# --- napari: the Propose panel's import row, the reader, and Review recording "imported" ---------------------------


@pytest.fixture
def panels(make_napari_viewer, phantom, monkeypatch, tmp_path):
    from napari_helpers import MemorySettings

    from oct_wsss.napari import _propose, _review

    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings(project=str(tmp_path / "project")))
    errors: list[str] = []
    monkeypatch.setattr("oct_wsss.napari._import.show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(phantom.volume.data, name="oct", scale=phantom.volume.spacing_mm)
    propose = _propose.ProposeWidget(viewer)
    return viewer, propose, _review.ReviewWidget(viewer), errors


def test_widget_import_fills_the_proposal_layer_and_review_records_imported(panels, phantom, tmp_path) -> None:
    from oct_wsss.napari._layers import PROPOSED
    from oct_wsss.napari._session import session

    viewer, propose, review, errors = panels
    path = write_labels(tmp_path / "labels.tif", phantom.labels)
    propose.importer.file.value = str(path)
    layer = propose.importer.run()
    assert layer is viewer.layers[PROPOSED] and not errors
    np.testing.assert_array_equal(np.asarray(layer.data), phantom.labels)
    records = session(viewer).records(layer)
    assert sorted(records.proposed) == [0, 1, 2, 3] and records.accepted == set()
    assert {r["method"] for r in records.provenance.values()} == {"imported"}
    review.image.value, review.labels.value = viewer.layers["oct"], layer
    assert review.open()
    viewer.dims.set_current_step(0, 2)
    layer.data[2, :2, :2] = 3  # the grader corrects the imported B-scan, then accepts it
    review.accept()
    (c,) = review.session.store.corrections()
    assert c.bscan == 2 and c.proposal["method"] == "imported" and c.proposal["source"]["format"] == "tif"
    assert c.changes["ped"]["added"] == 4
    np.testing.assert_array_equal(c.arrays()["proposal"], phantom.labels[2])
    assert propose.importer.run() is layer and propose.status.value.endswith("accepted B-scans 2 kept")
    assert (np.asarray(layer.data[2, :2, :2]) == 3).all()  # the accepted B-scan is not overwritten


def test_widget_import_of_a_bad_file_changes_nothing(panels, phantom, tmp_path) -> None:
    from oct_wsss.napari._layers import PROPOSED
    from oct_wsss.napari._session import session

    viewer, propose, _, errors = panels
    layer = viewer.layers[PROPOSED]
    layer.data[1, 5:9, 5:9] = 2
    before = np.array(layer.data)
    np.save(tmp_path / "bad.npy", np.full((3, 48, 40), 1, np.uint8))
    propose.importer.file.value = str(tmp_path / "bad.npy")
    assert propose.importer.run() is None
    assert len(errors) == 1 and "nothing changed" in errors[0] and "the volume is 4 B-scans of 48x40" in errors[0]
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    assert session(viewer).records(layer).proposed == {}


def test_reader_opens_labels_tif_in_a_volume_folder_as_the_imported_proposal(make_napari_viewer, phantom,
                                                                             tmp_path) -> None:
    from oct_wsss.napari._layers import PROPOSED
    from oct_wsss.napari._session import session

    folder = tmp_path / "scan"
    (folder / "bscans").mkdir(parents=True)
    for i, page in enumerate(phantom.volume.data):
        Image.fromarray(np.asarray(np.clip(page * 255, 0, 255), np.uint8)).save(folder / "bscans" / f"{i:03d}.png")
    write_labels(folder / "labels.tif", phantom.labels)
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-oct-wsss")
    layer = viewer.layers[PROPOSED]
    np.testing.assert_array_equal(np.asarray(layer.data), phantom.labels)
    records = session(viewer).records(layer)
    assert sorted(records.provenance) == [0, 1, 2, 3] and records.provenance[0]["method"] == "imported"
    write_labels(folder / "labels.tif", phantom.labels[:2])  # another volume's labels: the volume opens alone
    viewer.layers.clear()
    viewer.open(str(folder), plugin="napari-oct-wsss")
    assert [lay.name for lay in viewer.layers] == ["scan"]
