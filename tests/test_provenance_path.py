"""One provenance path: napari records the same proposal provenance as ``propose`` and ``oct-wsss propose`` (the
checkpoint's SHA-256), the store keys edit effort by it, and accepted B-scans are never proposed over, in the library,
the CLI and the widget alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari_helpers import MemorySettings, tiny_student_checkpoint

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.cli import main
from oct_wsss.io import read_labels, read_volume, write_volume
from oct_wsss.napari import _propose, _review
from oct_wsss.napari._propose import PROPOSED, ProposeWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.napari._session import session
from oct_wsss.propose import propose
from oct_wsss.store import CorrectionStore, edit_effort
from oct_wsss.synth import make_volume


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return tiny_student_checkpoint(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def volume():
    return make_volume(1, n_bscans=4, height=64, width=56).volume


def test_propose_keeps_accepted_bscans_and_records_them(volume, ckpt) -> None:
    mask = np.zeros(volume.shape[1:], np.uint8)
    mask[5:9, 5:9] = 3
    result = propose(volume, "student", ckpt, device="cpu", accepted={2: mask})
    np.testing.assert_array_equal(result.labels[2], mask)
    assert result.provenance["bscans"] == [0, 1, 3] and result.provenance["accepted_kept"] == [2]
    assert result.provenance["checkpoint"]["sha256"] == Checkpoint.load(ckpt).sha256
    with pytest.raises(ValueError, match="accepted mask of B-scan 1 is"):
        propose(volume, "student", ckpt, device="cpu", accepted={1: mask[:10]})


def test_cli_project_flag_keeps_the_graders_accepted_masks(tmp_path, volume, ckpt) -> None:
    path = write_volume(volume, tmp_path / "scan.tif")
    store = CorrectionStore(tmp_path / "project")
    mask = np.zeros(volume.shape[1:], np.uint8)
    mask[10:20, 10:20] = 1
    store.accept(store.volume_id(read_volume(path)), 1, mask)
    assert main(["propose", str(path), "--method", "student", "--checkpoint", str(ckpt), "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--project", str(tmp_path / "project")]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "out" / "labels.tif")[1], mask)
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["accepted_kept"] == [1] and 1 not in prov["bscans"]
    assert main(["propose", str(path), "--method", "student", "--checkpoint", str(ckpt), "--device", "cpu",
                 "--out", str(tmp_path / "out2"), "--project", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "out2" / "labels.tif").exists()


def test_edit_effort_is_keyed_by_the_checkpoints_hash(tmp_path) -> None:
    store = CorrectionStore(tmp_path / "project")
    proposal = np.zeros((16, 16), np.uint8)
    proposal[2:6, 2:6] = 1
    infos = [{"method": "student", "checkpoint": {"id": "student-aaaaaaaaaaaa", "sha256": "a" * 64}},
             {"method": "student", "checkpoint": {"id": "student-aaaaaaaaaaaa", "sha256": "a" * 64}, "x": 1},
             {"method": "student", "checkpoint": {"id": "student-bbbbbbbbbbbb", "sha256": "b" * 64}},
             {"method": "student", "checkpoint": "old.safetensors"},
             # propagated pages: SAM 2's checkpoint hash (two file names, one model), the weight-free engine by name
             {"method": "propagate", "engine": "sam2", "sam2": {"checkpoint": "a.pt", "sha256": "c" * 64}},
             {"method": "propagate", "engine": "sam2", "sam2": {"checkpoint": "b.pt", "sha256": "c" * 64}},
             {"method": "propagate", "engine": "flow"}]
    for i, info in enumerate(infos):
        store.accept("v", i, proposal, proposal=proposal, proposal_info=info)
    rows = {e.model: e.bscans for e in edit_effort(store.corrections())}
    assert rows == {"student-aaaaaaaaaaaa": 2, "student-bbbbbbbbbbbb": 1, "old.safetensors": 1,
                    "sam2-cccccccccccc": 2, "propagate-flow": 1}


def test_napari_accept_records_the_proposals_checkpoint_hash(make_napari_viewer, tmp_path, volume, ckpt, qtbot,
                                                              monkeypatch) -> None:
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings(project=str(tmp_path / "project")))
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, name="oct", scale=volume.spacing_mm)
    w = ProposeWidget(viewer)
    w.method.value, w.checkpoint.value, w.device.value = "student", str(ckpt), "cpu"
    assert w.propose() is not None
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)
    layer = viewer.layers[PROPOSED]
    expected = propose(volume, "student", ckpt, device="cpu").provenance
    recorded = session(viewer).records(layer).provenance[0]
    assert recorded["checkpoint"] == expected["checkpoint"] and recorded["params"] == expected["params"]
    assert recorded["source"] == "napari" and recorded["bscans"] == [0, 1, 2, 3]
    assert set(recorded) - {"source"} == set(expected)  # the same record as the API's, timings included
    timings = recorded["timings"]
    assert set(timings) == set(expected["timings"]) and timings["total_s"] > 0
    assert timings["per_bscan_s"] == pytest.approx(timings["total_s"] / 4, abs=1e-3)
    assert session(viewer).records(layer).provenance[3] is recorded  # one record per run, for every B-scan
    review = ReviewWidget(viewer)
    review.image.value, review.labels.value = viewer.layers["oct"], layer
    assert review.open()
    review.accept()
    (c,) = review.session.store.corrections()
    assert c.proposal["checkpoint"]["sha256"] == Checkpoint.load(ckpt).sha256 and c.proposal["timings"] == timings
    assert [e.model for e in edit_effort(review.session.store.corrections())] == [Checkpoint.load(ckpt).id]
