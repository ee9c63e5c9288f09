"""``oct-wsss propose --layers CKPT`` and the Propose widget's "layer model" field: the layer model behind a student's
or AGM's retina filter can be the user's own, the provenance names it, and it is refused where it would change
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import SRF
from oct_wsss.cli import main
from oct_wsss.models.layers import LayerNet, LayerNetConfig
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.synth import make_volume
from oct_wsss.training.student import student_checkpoint

BELOW_BM = 8


def _student(tmp_path: Path, retina: str | None) -> Path:
    """A student that calls every pixel SRF (head bias), so what survives is exactly the retina filter's mask."""
    net = StudentNet(StudentConfig(n_outputs=2, width=4, depth=3))
    for p in net.parameters():
        p.data.zero_()
    list(net.parameters())[-1].data[1] = 5.0
    ckpt = student_checkpoint(net, (SRF,), (64, 64), training={}, retina=retina)
    return ckpt.save(tmp_path / f"student-{retina}.safetensors")


def _no_retina_layers(tmp_path: Path) -> Path:
    """A layer model that puts every pixel below BM: its retina is empty."""
    config = LayerNetConfig(width=4, depth=2, scale=0.5)
    net = LayerNet(config)
    for p in net.parameters():
        p.data.zero_()
    list(net.parameters())[-1].data[BELOW_BM] = 5.0
    ckpt = Checkpoint.new(net.state_dict(), method="layers", architecture=config.to_dict(), classes=[0, 7],
                          input_size=[64, 64], normalisation={"scale": 0.5})
    return ckpt.save(tmp_path / "no-retina-layers.safetensors")


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol.npy"
    np.save(path, make_volume(5, n_bscans=2, height=128, width=128).volume.data)
    return path


def _propose(volume: Path, student: Path, out: Path, *extra: str) -> tuple[np.ndarray, dict]:
    assert main(["propose", str(volume), "--method", "student", "--checkpoint", str(student), "--out", str(out),
                 "--device", "cpu", *extra]) == 0
    return tifffile.imread(out / "labels.tif"), json.loads((out / "provenance.json").read_text())


def test_the_given_layer_model_masks_the_proposal_and_is_named(tmp_path: Path, volume: Path) -> None:
    student, layers = _student(tmp_path, "layers"), _no_retina_layers(tmp_path)
    bundled, bundled_prov = _propose(volume, student, tmp_path / "bundled")
    own, own_prov = _propose(volume, student, tmp_path / "own", "--layers", str(layers))
    assert (bundled == SRF).mean() > 0.03  # the bundled model finds the phantom's retina (6 % of this small B-scan)
    assert not own.any()  # the given one finds none, so every lesion is cleared
    assert own_prov["params"]["layers_checkpoint"] == Checkpoint.load(layers).id
    assert bundled_prov["params"]["layers_checkpoint"] != own_prov["params"]["layers_checkpoint"]


def test_layers_is_refused_where_it_would_change_nothing(tmp_path: Path, volume: Path, capsys) -> None:
    layers = _no_retina_layers(tmp_path)
    plain = _student(tmp_path, None)
    cases = [(["--method", "student", "--checkpoint", str(plain), "--layers", str(layers)], "would change nothing"),
             (["--method", "dfp", "--checkpoint", str(plain), "--layers", str(layers)], "does not use it"),
             (["--method", "layers", "--checkpoint", str(layers), "--layers", str(layers)], "as --checkpoint"),
             (["--method", "student", "--checkpoint", str(_student(tmp_path, "layers")), "--layers",
               str(tmp_path / "missing.safetensors")], "no such file")]
    for args, message in cases:
        out = tmp_path / "out"
        assert main(["propose", str(volume), "--out", str(out), "--device", "cpu", *args]) != 0
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_the_propose_widget_takes_a_layer_model_and_says_when_it_would_change_nothing(
        make_napari_viewer, tmp_path: Path, qtbot, monkeypatch) -> None:
    from napari_helpers import MemorySettings

    from oct_wsss.napari import _propose
    from oct_wsss.napari._propose import PROPOSED, ProposeWidget

    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    shown: list[str] = []
    monkeypatch.setattr(_propose, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(make_volume(5, n_bscans=2, height=128, width=128).volume.data, name="oct")
    w = ProposeWidget(viewer)
    w.method.value = "hrf"
    assert w.layers.native.isHidden()  # only the methods that run a layer model offer it
    w.method.value, w.device.value = "student", "cpu"
    assert not w.layers.native.isHidden()
    layers = _no_retina_layers(tmp_path)
    for student, expect_empty in ((_student(tmp_path, "layers"), True), (_student(tmp_path, None), None)):
        w.checkpoint.value, w.layers.value = str(student), str(layers)
        assert w.propose() is not None
        qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)
        if expect_empty:  # the given layer model finds no retina, so the every-pixel-SRF student keeps nothing
            assert w.status.value == "done" and not viewer.layers[PROPOSED].data.any()
            assert w.provenance["params"]["layers_checkpoint"] == Checkpoint.load(layers).id
        else:  # a student without the retina filter: refused with the reason, and its checkpoint is not forgotten
            assert "would change nothing" in shown[-1] and str(w.checkpoint.value) == str(student)


def test_layer_users_are_the_methods_whose_proposers_run_the_layer_model() -> None:
    from oct_wsss.propose.registry import LAYER_USERS, METHODS, proposer_class
    from oct_wsss.propose.retina import LayerModelUser

    assert {m for m in METHODS if issubclass(proposer_class(m), LayerModelUser)} == set(LAYER_USERS)
