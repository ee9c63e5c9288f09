"""``oct-wsss demo``: headless files and metrics (computed from what was written), the GUI preset, the one phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.io import imread

from oct_wsss.cli import main
from oct_wsss.evaluate import evaluate_labels
from oct_wsss.io import read_labels
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.napari._session import session
from oct_wsss.synth import demo_phantom
from oct_wsss.training.student import student_checkpoint


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=3))
    return student_checkpoint(net, (1, 2, 3), (64, 64), training={"what": "random weights for tests"}).save(
        tmp_path_factory.mktemp("w") / "student.safetensors")


def test_headless_demo_writes_files_and_metrics_computed_from_them(tiny_student, tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--out", str(out), "--checkpoint", str(tiny_student), "--bscans", "3",
                 "--overlay", "2", "--device", "cpu"]) == 0
    assert "DSC" in capsys.readouterr().out
    for name in ("labels.tif", "provenance.json", "overlay.png", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    phantom = demo_phantom(n_bscans=3)
    labels = read_labels(out / "labels.tif")
    assert labels.shape == phantom.labels.shape == (3, 496, 512)
    expected = evaluate_labels(phantom.labels, labels, (1, 2, 3))
    for key in ("srf", "irf", "ped"):
        assert metrics["scores"][key]["dice_pooled"] == pytest.approx(expected.classes[key].dice_pooled)
        assert metrics["scores"][key]["iou"] == pytest.approx(expected.classes[key].iou)
    assert metrics["miou"] == pytest.approx(expected.miou)
    assert 0.0 <= metrics["miou"] <= 1.0
    assert metrics["timings"]["propose_s"] > 0 and metrics["volume"] == [3, 496, 512]
    picture = imread(out / "overlay.png")
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]  # three panels side by side, two rows
    assert len(metrics["overlay_bscans"]) == 2
    # the overlay shows the B-scans with the most truth lesion pixels
    area = np.isin(phantom.labels, (1, 2, 3)).reshape(3, -1).sum(1)
    assert area[metrics["overlay_bscans"]].min() >= np.delete(area, metrics["overlay_bscans"]).max()


def test_headless_demo_with_the_bundled_student_proposes_every_lesion_class(tmp_path) -> None:
    """No --checkpoint: the bundled demo-student (the phantom multi-class student, harmonised inputs) proposes SRF,
    IRF, PED, EZ, HRF and drusen in their own ids (no undistinguished "fluid"), scored against the phantom's truth."""
    from oct_wsss.classes import by_key
    from oct_wsss.weights import bundled

    out = tmp_path / "demo"
    assert main(["demo", "--headless", "--out", str(out), "--bscans", "7", "--overlay", "0", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    provenance = json.loads((out / "provenance.json").read_text())
    assert metrics["checkpoint"]["file"] == bundled("student").name == "demo-student.safetensors"
    assert provenance["params"]["intensity"] == "harmonised"
    keys = ("srf", "irf", "ped", "ez", "hrf", "drusen")
    assert tuple(metrics["scores"]) == keys
    labels = read_labels(out / "labels.tif")
    found = set(np.unique(labels).tolist())
    assert by_key("fluid").id not in found
    assert {by_key(k).id for k in ("srf", "irf", "ped", "ez", "drusen")} <= found, found
    for key in ("srf", "irf", "ped"):  # measured 0.84 / 0.88 / 0.86 on these 7 B-scans
        assert metrics["scores"][key]["dice_pooled"] > 0.6, (key, metrics["scores"][key])


def test_headless_demo_says_what_is_missing(tmp_path, capsys) -> None:
    assert main(["demo", "--headless"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["demo", "--headless", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_the_demo_volume_is_the_napari_sample_data() -> None:
    from oct_wsss.napari._sample_data import synthetic_lesions

    (image, _, _), (truth, _, _) = synthetic_lesions()
    phantom = demo_phantom()
    assert np.array_equal(image, phantom.volume.data) and np.array_equal(truth, phantom.labels)


def test_gui_demo_presets_the_propose_widget_and_proposes(make_napari_viewer, tiny_student, qtbot,
                                                          monkeypatch) -> None:
    from oct_wsss.cli import populate_demo
    from oct_wsss.napari import _propose

    class Settings(dict):
        def value(self, key, default=None):
            return self.get(key, default)

        def setValue(self, key, value):
            self[key] = value

    monkeypatch.setattr(_propose, "QSettings", lambda *a: Settings())
    from oct_wsss.propose.registry import preload

    preload("student")  # as `oct-wsss demo` does before it opens the viewer
    viewer = make_napari_viewer()
    worker = populate_demo(viewer, propose="student", checkpoint=tiny_student, device="cpu")
    assert worker is not None
    qtbot.waitUntil(lambda: not worker.is_running and _propose.PROPOSED in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: session(viewer).records(viewer.layers[_propose.PROPOSED]).proposed.keys()
                    >= set(range(49)), timeout=120_000)
    proposed = viewer.layers[_propose.PROPOSED].data
    from oct_wsss.propose.student import StudentProposer

    expected = StudentProposer.from_checkpoint(tiny_student, device="cpu").predict(demo_phantom().volume.data[24])
    assert proposed.shape == (49, 496, 512) and np.array_equal(proposed[24], expected)
