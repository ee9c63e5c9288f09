"""The Propose widget offers the real-data student first on a real image and the demo one on the phantom."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from napari_helpers import MemorySettings, tiny_student_checkpoint

import oct_wsss.weights as weights
from oct_wsss.napari import _propose
from oct_wsss.napari._layers import image_layer, is_synthetic
from oct_wsss.napari._propose import OTHER, ProposeWidget
from oct_wsss.synth import make_volume


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """Two bundled student checkpoints in a temporary folder: a demo (phantom) one and a real-data one."""
    ckpt = tiny_student_checkpoint(tmp_path)
    folder = tmp_path / "weights"
    folder.mkdir()
    demo = shutil.copy(ckpt, folder / "demo-student.safetensors")
    real = shutil.copy(ckpt, folder / "real-student.safetensors")
    wsss = shutil.copy(ckpt, folder / "real-wsss.safetensors")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    return {"demo": str(demo), "real": str(real), "wsss": str(wsss), "own": str(ckpt)}


def test_is_synthetic_reads_metadata_and_name() -> None:
    phantom = make_volume(1, n_bscans=1, height=32, width=32).volume
    data, kwargs, _ = image_layer(phantom, "scan 1")
    assert is_synthetic(SimpleNamespace(name="scan 1", metadata=kwargs["metadata"]))  # format "synthetic"
    assert is_synthetic(SimpleNamespace(name="synth_0003", metadata={}))
    assert is_synthetic(SimpleNamespace(name="Phantom volume", metadata={}))
    assert not is_synthetic(SimpleNamespace(name="Subject_03", metadata={"oct_wsss": {"format": "png"}}))
    assert not is_synthetic(SimpleNamespace(name="oct", metadata={}))
    assert not is_synthetic(None)


def test_real_image_gets_the_real_student_first_and_the_phantom_the_demo(make_napari_viewer, bundled) -> None:
    viewer = make_napari_viewer()
    real_image = viewer.add_image(make_volume(2, n_bscans=2, height=48, width=40).volume.data, name="Subject_07")
    phantom = make_volume(1, n_bscans=2, height=48, width=40).volume
    data, kwargs, _ = image_layer(phantom, "synthetic OCT (lesions)")
    synthetic = viewer.add_image(data, **kwargs)
    w = ProposeWidget(viewer)
    w.method.value = "student"
    w.image.value = real_image
    assert w.known.choices == (bundled["wsss"], bundled["real"], bundled["demo"], OTHER)  # no real pixel label first
    assert str(w.checkpoint.value) == bundled["wsss"]
    w.image.value = synthetic
    assert w.known.choices == (bundled["demo"], bundled["wsss"], bundled["real"], OTHER)
    assert str(w.checkpoint.value) == bundled["demo"]
    # a checkpoint the user picked is kept when the image changes; a bundled one that was saved follows the image
    w.checkpoint.value = bundled["own"]
    w.image.value = real_image
    assert str(w.checkpoint.value) == bundled["own"]
    w.settings.setValue("checkpoint/student", bundled["demo"])
    w.checkpoint.value = bundled["demo"]
    w.image.value = synthetic
    w.image.value = real_image
    assert str(w.checkpoint.value) == bundled["wsss"]


def test_the_checkpoint_list_survives_napari_resetting_the_widgets_choices(make_napari_viewer, bundled) -> None:
    """napari calls reset_choices on dock widgets when layers change; the list must be relisted, not emptied."""
    viewer = make_napari_viewer()
    viewer.add_image(make_volume(2, n_bscans=2, height=32, width=32).volume.data, name="synthetic OCT")
    widget = ProposeWidget(viewer)
    widget.reset_choices()  # what napari does on every layer insertion or removal
    viewer.add_image(make_volume(3, n_bscans=2, height=32, width=32).volume.data, name="synthetic 2")
    widget.reset_choices()
    assert bundled["demo"] in widget.known.choices and widget.known.value == bundled["demo"]
    assert str(widget.checkpoint.value) == bundled["demo"]
