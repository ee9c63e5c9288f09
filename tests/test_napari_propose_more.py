"""Propose lesions: bundled demo checkpoints listed first, per-class confidence layers, out of memory offers CPU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from napari_helpers import MemorySettings, tiny_student_checkpoint

import oct_wsss.weights as weights
from oct_wsss.napari import _propose
from oct_wsss.napari._confidence import confidence_name
from oct_wsss.napari._propose import OTHER, PROPOSED, ProposeWidget
from oct_wsss.propose import propose
from oct_wsss.propose.proposal import ProposalError
from oct_wsss.synth import make_volume


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return tiny_student_checkpoint(tmp_path_factory.mktemp("w"))


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    viewer = make_napari_viewer()
    volume = make_volume(1, n_bscans=3, height=64, width=56).volume
    viewer.add_image(volume.data, name="oct", scale=volume.spacing_mm)
    return viewer, volume


def _wait(w: ProposeWidget, qtbot) -> None:
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)


def test_bundled_demo_checkpoint_is_listed_first_and_chosen(viewer, ckpt, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    demo = shutil.copy(ckpt, folder / "demo-student.safetensors")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)  # no real-data one: the image here is a plain array (real)
    w = ProposeWidget(viewer[0])
    w.method.value = "student"
    assert w.known.choices == (str(demo), OTHER) and str(w.checkpoint.value) == str(demo)
    w.settings.setValue("recent/student", [str(ckpt)])
    w.refresh_checkpoints()
    assert w.known.choices == (str(demo), str(ckpt), OTHER)  # the demo first, then recent ones
    w.known.value = str(ckpt)
    assert str(w.checkpoint.value) == str(ckpt)
    w.method.value = "agm"  # no AGM demo in this install: only "other file"
    assert w.known.choices[0] != str(demo)


def test_confidence_layers_hold_the_library_scores(viewer, ckpt, qtbot) -> None:
    v, volume = viewer
    w = ProposeWidget(v)
    w.method.value, w.checkpoint.value, w.device.value, w.confidence.value = "student", str(ckpt), "cpu", True
    assert w.propose() is not None
    _wait(w, qtbot)
    expected = propose(volume, "student", ckpt, device="cpu", keep_scores=True)
    for k, c in enumerate(expected.classes):
        layer = v.layers[confidence_name(c)]
        assert layer.data.shape == volume.shape and layer.contrast_limits == [0.0, 1.0]
        np.testing.assert_allclose(layer.data, expected.scores[:, k].astype(np.float32), atol=2e-3)
    np.testing.assert_array_equal(v.layers[PROPOSED].data, expected.labels)


def test_out_of_memory_offers_cpu(viewer, ckpt, qtbot, monkeypatch) -> None:
    v, volume = viewer
    real = _propose.load_proposer

    def load(method, checkpoint, **options):
        if options["device"] != "cpu":  # what the library raises once halving the batch reached one B-scan
            raise ProposalError("the GPU ran out of memory even with one B-scan per batch; close other GPU "
                                "programs or run on the CPU (device 'cpu')")
        return real(method, checkpoint, **options)

    dispatched = []
    monkeypatch.setattr(_propose, "load_proposer", load)
    monkeypatch.setattr(_propose.notification_manager, "dispatch", dispatched.append)
    w = ProposeWidget(v)
    w.method.value, w.checkpoint.value, w.device.value = "student", str(ckpt), "cuda"
    assert w.propose() is not None
    _wait(w, qtbot)
    (note,) = [n for n in dispatched if "memory" in str(n.message)]  # (napari dispatches others too)
    assert "out of memory" in note.message and [name for name, _ in note.actions] == ["Run on CPU"]
    worker = note.actions[0][1]()  # the grader clicks it
    assert w.device.value == "cpu" and worker is not None
    _wait(w, qtbot)
    np.testing.assert_array_equal(v.layers[PROPOSED].data, propose(volume, "student", ckpt, device="cpu").labels)
