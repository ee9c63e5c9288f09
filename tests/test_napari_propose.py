"""The Propose lesions dock widget in a real viewer: streams into the proposed layer, cancels, protects, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari_helpers import MemorySettings, tiny_student_checkpoint

from oct_wsss.napari import _propose
from oct_wsss.napari._propose import PROPOSED, ProposeWidget
from oct_wsss.napari._session import session
from oct_wsss.propose import propose
from oct_wsss.store import CorrectionStore
from oct_wsss.synth import make_volume

PLUGIN = "napari-oct-wsss"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return tiny_student_checkpoint(tmp_path_factory.mktemp("w"))


@pytest.fixture
def widget(make_napari_viewer, ckpt, monkeypatch):
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    viewer = make_napari_viewer()
    volume = make_volume(1, n_bscans=4, height=64, width=56).volume
    viewer.add_image(volume.data, name="oct", scale=volume.spacing_mm)
    w = ProposeWidget(viewer)
    w.method.value, w.checkpoint.value, w.device.value = "student", str(ckpt), "cpu"
    return w, volume


def _wait(w: ProposeWidget, qtbot) -> None:
    """Until the run has finished and the widget is ready again (a run that fails at once may finish before a
    signal waiter could connect, so wait on the state rather than the signal)."""
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)


def test_manifest_offers_the_widget(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Propose lesions")
    assert isinstance(widget, ProposeWidget) and widget.image.value is None


def test_propose_streams_the_library_result_into_the_proposed_layer(widget, ckpt, qtbot) -> None:
    w, volume = widget
    assert w.propose() is not None
    _wait(w, qtbot)
    layer = w.viewer.layers[PROPOSED]
    expected = propose(volume, "student", ckpt, device="cpu").labels
    np.testing.assert_array_equal(layer.data, expected)
    assert layer.scale.tolist() == list(volume.spacing_mm) and w.status.value == "done"
    assert w.settings.value("checkpoint/student") == str(ckpt)


def test_accepted_bscans_are_never_overwritten_and_ranges_are_honoured(widget, qtbot) -> None:
    w, volume = widget
    w.range.value, w.first.value, w.last.value = "from-to", 1, 3
    w.protected = lambda: {2}
    assert w.bscans(volume.n_bscans) == [1, 3]
    layer = w.proposed_layer(volume.shape, volume.spacing_mm)
    layer.data[2] = 5  # the grader's accepted work
    assert w.propose() is not None
    _wait(w, qtbot)
    assert (layer.data[2] == 5).all() and (layer.data[0] == 0).all()


def test_cancel_keeps_finished_bscans_and_leaves_the_rest_empty(widget, ckpt, qtbot, monkeypatch) -> None:
    w, volume = widget
    real_stream = _propose.stream

    def stream_then_cancel(*args, **kwargs):  # the grader presses Cancel as the first B-scan arrives
        for n, result in enumerate(real_stream(*args, **kwargs)):
            yield result
            if n == 0:
                w._cancel = True

    monkeypatch.setattr(_propose, "stream", stream_then_cancel)
    assert w.propose() is not None
    _wait(w, qtbot)
    layer = w.viewer.layers[PROPOSED]
    expected = propose(volume, "student", ckpt, device="cpu").labels
    proposed = sorted(session(w.viewer).records(layer).proposed)
    assert w.status.value == "cancelled" and proposed == [0, 1]  # the batch in flight (2 on CPU) finishes
    for i in range(volume.n_bscans):
        np.testing.assert_array_equal(layer.data[i], expected[i] if i in proposed else 0)


def test_errors_become_notifications_with_a_fix(widget, tmp_path, qtbot, monkeypatch) -> None:
    w, _ = widget
    shown: list[str] = []
    monkeypatch.setattr(_propose, "show_error", shown.append)
    w.checkpoint.value = ""
    assert w.propose() is None and "choose a student checkpoint" in shown[-1]
    wrong = tmp_path / "x.safetensors"
    wrong.write_bytes(b"not a checkpoint")
    w.checkpoint.value = str(wrong)
    assert w.propose() is not None
    _wait(w, qtbot)
    assert "Propose failed" in shown[-1] and "checkpoint" in shown[-1]
    assert w.run_button.enabled


def test_hrf_gets_its_own_layer_options_and_the_fallback_notice(make_napari_viewer, tmp_path, qtbot,
                                                                  monkeypatch) -> None:
    from oct_wsss.checkpoint import Checkpoint
    from oct_wsss.classes import HRF
    from oct_wsss.models.cct import Cct, CctConfig

    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    warned: list[str] = []
    monkeypatch.setattr(_propose, "show_warning", warned.append)
    torch.manual_seed(0)
    net = Cct(CctConfig.variant("cct_2", dim=16, heads=2, conv_channels=8, input_size=[96, 128]))
    with torch.no_grad():
        net.head.bias.fill_(-20.0)  # never sure of an HRF: the loop stops at once
    ckpt = Checkpoint.new(net.state_dict(), method="hrf-cct", architecture={"cct": net.config.to_dict()},
                          classes=[HRF], input_size=[96, 128], normalisation={"mean": 0.2, "std": 0.2}
                          ).save(tmp_path / "hrf.safetensors")
    viewer = make_napari_viewer()
    volume = make_volume(3, n_bscans=2, height=96, width=128, prevalence={"hrf": 1.0}).volume
    viewer.add_image(volume.data, name="oct")
    w = ProposeWidget(viewer)
    assert w.iterations.native.isHidden()  # shown only for HRF
    w.method.value, w.checkpoint.value, w.device.value, w.iterations.value = "hrf", str(ckpt), "cpu", 3
    assert not w.iterations.native.isHidden() and w.options() == {"device": "cpu", "threshold": None, "iterations": 3,
                                                    "sam2_checkpoint": None}
    assert w.propose() is not None
    _wait(w, qtbot)
    assert _propose.HRF_PROPOSED in viewer.layers  # the lesions layer (made when the image was chosen) stays empty
    assert PROPOSED not in viewer.layers or not viewer.layers[PROPOSED].data.any()
    assert viewer.layers[_propose.HRF_PROPOSED].data.shape == volume.shape
    assert any("classical" in m for m in warned)  # without SAM 2 weights the grader is told
    w.sam2.value = str(ckpt)  # any existing file: the options only name it
    assert "sam2_cache" not in w.options()  # no project open: SAM 2's embeddings are not kept on disk
    session(viewer).store = CorrectionStore(tmp_path / "project")
    assert w.options()["sam2_cache"] == tmp_path / "project" / "sam2-embeddings"


def test_a_failed_run_says_failed_not_done_and_names_the_checkpoint_in_good_english(widget, tmp_path, qtbot,
                                                                                  monkeypatch) -> None:
    w, _ = widget
    shown: list[str] = []
    monkeypatch.setattr(_propose, "show_error", shown.append)
    w.method.value, w.checkpoint.value = "agm", ""
    assert w.propose() is None and "choose an AGM checkpoint" in shown[-1]
    w.method.value = "student"
    wrong = tmp_path / "x.safetensors"
    wrong.write_bytes(b"not a checkpoint")
    w.checkpoint.value = str(wrong)
    assert w.propose() is not None
    _wait(w, qtbot)
    assert "Propose failed" in shown[-1]
    assert w.status.value.startswith("failed") and w.status.value != "done"
