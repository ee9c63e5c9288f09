"""Propose lesions in a real viewer: a phantom-only checkpoint on a real scan is warned about once per pairing, the
checkpoint is remembered per project once it has loaded, and one that fails to load is never preselected again."""

from __future__ import annotations

import shutil

import pytest
from napari_helpers import MemorySettings, tiny_student_checkpoint

from oct_wsss.napari import _propose, _review
from oct_wsss.napari._layers import image_layer
from oct_wsss.napari._propose import PROPOSED, ProposeWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.synth import make_volume


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return tiny_student_checkpoint(tmp_path_factory.mktemp("w"))  # its training record names no data: phantom-only


@pytest.fixture
def settings(monkeypatch) -> MemorySettings:
    store = MemorySettings()
    monkeypatch.setattr(_propose, "QSettings", lambda *a: store)
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings())
    return store


def _run(w: ProposeWidget, qtbot) -> None:
    assert w.propose() is not None
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)


def _widget(viewer, checkpoint) -> ProposeWidget:
    w = ProposeWidget(viewer)
    w.method.value, w.device.value = "student", "cpu"
    if checkpoint is not None:
        w.checkpoint.value = str(checkpoint)
    return w


def test_a_phantom_only_checkpoint_on_a_real_scan_is_warned_about_once_per_image(make_napari_viewer, ckpt, settings,
                                                                                  qtbot, monkeypatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(_propose, "show_warning", shown.append)
    viewer = make_napari_viewer()
    volume = make_volume(1, n_bscans=2, height=64, width=56).volume
    first = viewer.add_image(volume.data, name="Subject_03")  # a plain array: a real scan
    data, kwargs, _ = image_layer(volume, "synthetic OCT (lesions)")
    phantom = viewer.add_image(data, **kwargs)
    w = _widget(viewer, ckpt)

    def warnings() -> list[str]:
        return [m for m in shown if "phantom only" in m]

    w.image.value = first
    _run(w, qtbot)
    _run(w, qtbot)
    assert len(warnings()) == 1 and ckpt.name in warnings()[0]
    w.image.value = phantom
    _run(w, qtbot)
    assert len(warnings()) == 1  # the phantom itself: nothing to warn about
    w.image.value = viewer.add_image(volume.data, name="Subject_04")
    _run(w, qtbot)
    assert len(warnings()) == 2  # another real scan: a new pairing
    assert _widget(viewer, ckpt).session.warned == {(str(ckpt), "Subject_03"), (str(ckpt), "Subject_04")}


def test_the_checkpoint_is_remembered_per_project(make_napari_viewer, ckpt, settings, tmp_path, qtbot) -> None:
    other = shutil.copy(ckpt, tmp_path / "other.safetensors")
    viewer = make_napari_viewer()
    viewer.add_image(make_volume(2, n_bscans=2, height=64, width=56).volume.data, name="oct")
    w = _widget(viewer, None)
    review = ReviewWidget(viewer)
    review.image.value, review.labels.value = viewer.layers["oct"], viewer.layers[PROPOSED]

    def open_project(name: str) -> str:
        review.project.value = tmp_path / name
        assert review.open()
        return str(w.checkpoint.value)

    open_project("A")
    w.checkpoint.value = str(ckpt)
    _run(w, qtbot)
    assert open_project("B") != str(ckpt)  # B has none of its own, and nothing was remembered without a project
    w.checkpoint.value = str(other)
    _run(w, qtbot)
    assert open_project("A") == str(ckpt) and open_project("B") == str(other)
    assert settings.value("checkpoint/student") is None  # nothing remembered outside the projects
    assert settings.value("recent/student") == [str(other), str(ckpt)]


def test_a_checkpoint_that_failed_to_load_is_never_preselected(make_napari_viewer, ckpt, settings, tmp_path,
                                                                 qtbot) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ckpt.read_bytes()[:5000])  # truncated
    settings.update({"checkpoint/student": str(broken), "recent/student": [str(broken), str(ckpt)]})  # it loaded once
    viewer = make_napari_viewer()
    viewer.add_image(make_volume(2, n_bscans=2, height=64, width=56).volume.data, name="oct")
    w = _widget(viewer, None)
    assert str(w.checkpoint.value) == str(broken)  # remembered from before it broke
    _run(w, qtbot)
    assert w.status.value.startswith("failed")
    assert str(w.checkpoint.value) != str(broken) and str(broken) not in w.known.choices
    assert settings.value("checkpoint/student") == "" and settings.value("recent/student") == [str(ckpt)]
    assert str(_widget(viewer, None).checkpoint.value) != str(broken)
    w.checkpoint.value = str(broken)  # chosen by hand, it fails again and is still not remembered
    _run(w, qtbot)
    assert settings.value("checkpoint/student") == "" and str(broken) not in settings.value("recent/student")
