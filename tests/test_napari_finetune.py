"""Fine-tune widget: edit effort of a constructed edit, a fine-tune from the store gives a new checkpoint version that
Propose lists and uses for the unreviewed B-scans; cancel stops it without a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari_helpers import MemorySettings

from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.napari import _finetune, _propose, _review
from oct_wsss.napari._finetune import FinetuneWidget
from oct_wsss.napari._propose import PROPOSED, ProposeWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.napari._session import session
from oct_wsss.store import CorrectionStore, edit_effort
from oct_wsss.synth import make_volume
from oct_wsss.training.student import student_checkpoint


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Shared settings for the three widgets; a tiny student; a store with three accepted B-scans of one edit."""
    settings: dict[str, MemorySettings] = {}
    for module in (_finetune, _propose, _review):
        monkeypatch.setattr(module, "QSettings", lambda org, app: settings.setdefault(app, MemorySettings()))
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=3))
    ckpt = student_checkpoint(net, (1, 2, 3), (64, 64), training={}).save(tmp_path / "student.safetensors")
    phantom = make_volume(8, n_bscans=4, height=64, width=64, prevalence={"srf": 1.0, "irf": 1.0})
    store = CorrectionStore(tmp_path / "project")
    vid = store.volume_id(phantom.volume.data)
    for i in range(3):
        proposal = np.zeros((64, 64), np.uint8)
        proposal[10:20, 10:20] = 1          # 100 SRF pixels proposed
        mask = proposal.copy()
        mask[10:20, 15:20] = 3              # 50 of them repainted as PED
        mask[30:32, 0:5] = 1                # 10 SRF pixels added
        store.accept(vid, i, mask, image=phantom.volume.data[i], proposal=proposal,
                     proposal_info={"method": "student", "checkpoint": "student.safetensors"})
    settings["review"] = MemorySettings(project=str(tmp_path / "project"))
    return tmp_path, ckpt, phantom, settings


def test_edit_effort_matches_the_constructed_edit(make_napari_viewer, project) -> None:
    tmp_path, _, _, _ = project
    (effort,) = edit_effort(CorrectionStore(tmp_path / "project").corrections())
    assert (effort.model, effort.bscans, effort.proposed, effort.kept, effort.removed, effort.added) == \
        ("student.safetensors", 3, 300, 150, 150, 180)  # per B-scan: 50 kept, 50 removed, 50 PED + 10 SRF added
    w = FinetuneWidget(make_napari_viewer())
    assert w.count.value == "3 accepted B-scans in 1 volume(s)"
    assert w.effort.value["data"] == [["student.safetensors", 3, "50%", "50%", "60%"]]


def test_finetune_from_the_store_registers_a_new_version(make_napari_viewer, project, qtbot) -> None:
    tmp_path, ckpt, phantom, settings = project
    viewer = make_napari_viewer()
    viewer.add_image(phantom.volume.data, name="oct")
    _, propose = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Propose lesions")
    _, review = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Review and accept")
    _, w = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Fine-tune")
    assert isinstance(w, FinetuneWidget) and isinstance(propose, ProposeWidget) and isinstance(review, ReviewWidget)
    w.parent_ckpt.value, w.epochs.value, w.device.value = str(ckpt), 2, "cpu"
    assert w.finetune() is not None
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=180_000)
    new = tmp_path / "project" / "checkpoints" / "student-ft1.safetensors"
    assert w.result == new and new.is_file() and w.status.value.startswith("wrote student-ft1.safetensors")
    assert settings["propose"].value("checkpoint/student") == str(new)
    assert str(new) in propose.known.choices  # listed in Propose lesions
    # re-propose the B-scans nobody reviewed yet (B-scan 3 only: the project holds 0-2 for this volume)
    viewer.add_labels(np.zeros(phantom.volume.shape, np.uint8), name=PROPOSED)
    review.labels.value = viewer.layers[PROPOSED]
    review.image.value = viewer.layers["oct"]
    assert review.open()
    worker = w.repropose()
    assert worker is not None and propose.checkpoint.value == new
    qtbot.waitUntil(lambda: propose.run_button.enabled and not worker.is_running, timeout=120_000)
    assert sorted(session(viewer).records(viewer.layers[PROPOSED]).proposed) == [3]


def test_cancel_leaves_no_checkpoint(make_napari_viewer, project, qtbot) -> None:
    tmp_path, ckpt, _, _ = project
    w = FinetuneWidget(make_napari_viewer())
    w.parent_ckpt.value, w.epochs.value, w.device.value = str(ckpt), 50, "cpu"
    assert w.finetune() is not None
    qtbot.waitUntil(lambda: any("epoch" in line for line in w._log), timeout=120_000)
    w.cancel()
    qtbot.waitUntil(lambda: w.run_button.enabled and not w.worker.is_running, timeout=120_000)
    assert w.result is None and w.status.value == "cancelled"
    assert not list((tmp_path / "project" / "checkpoints").glob("*.safetensors"))
