"""Issue 19 items 2b and 2c: AGM and DFP on the phantom student's U-Net encoder, and a classifier's saliency gating the
real-wsss weak targets (random weights and constructed maps only)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from oct_wsss.classes import FLUID, IRF, PED, SRF
from oct_wsss.models import agm
from oct_wsss.models.dfp import DfpConfig, DfpNet, load_unet_encoder
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.propose.dfp import DfpProposer
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.agm import AgmTrainConfig, train_agm
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.dfp import DfpTrainConfig, train_dfp
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.real_wsss import weak_targets
from oct_wsss.training.student import student_checkpoint
from oct_wsss.training.student_data import IGNORE
from oct_wsss.training.weak_labels import CamGate, Confidence, cam_gate

CLASSES = (SRF, IRF, PED)


def test_a_unet_dfp_backbone_gives_the_paper_strides_and_takes_the_students_encoder() -> None:
    """Width 4: F at stride 8 with 8w channels, R_1..R_5 at strides 1..16; every encoder tensor of a student is
    copied into stem, predictor and encoder (the heads are not), and a student of another width is refused."""
    torch.manual_seed(0)
    net = DfpNet(DfpConfig(backbone="unet", width=4))
    out = net(torch.rand(2, 1, 64, 64))
    assert out.features.shape == (2, 32, 8, 8) and out.logits.shape == out.encoder_logits.shape == (2, 1)
    assert [tuple(s.shape[1:]) for s in out.stages] == [(4, 64, 64), (8, 32, 32), (16, 16, 16), (32, 8, 8),
                                                          (64, 4, 4)]
    student = StudentNet(StudentConfig(n_outputs=4, width=4, depth=4)).state_dict()
    assert load_unet_encoder(net, student) == sum(k.startswith("net.down.") for k in student) * 2 - sum(
        k.startswith(("net.down.0.", "net.down.4.")) for k in student)
    own = net.state_dict()
    assert torch.equal(own["stem.0.weight"], student["net.down.0.0.weight"])
    assert torch.equal(own["predictor.layer3.1.3.weight"], student["net.down.3.3.weight"])
    assert torch.equal(own["encoder.3.1.4.running_var"], student["net.down.4.4.running_var"])
    with pytest.raises(ValueError, match="width"):
        load_unet_encoder(net, StudentNet(StudentConfig(n_outputs=4, width=8, depth=4)).state_dict())
    with pytest.raises(ValueError, match="unet"):
        load_unet_encoder(DfpNet(DfpConfig(backbone="resnet18", width=4)), student)


def _student_and_samples(tmp_path: Path) -> tuple[StudentNet, list[Sample]]:
    """A width-4 student saved as tmp_path/s.safetensors, and four random 32 x 32 B-scans, two with fluid."""
    student = StudentNet(StudentConfig(n_outputs=3, width=4, depth=4))
    student_checkpoint(student, (SRF, IRF), (32, 32), training={}).save(tmp_path / "s.safetensors")
    images = [np.random.default_rng(i).random((32, 32), np.float32) for i in range(4)]
    return student, [Sample(partial(np.asarray, a), frozenset({FLUID} if i % 2 else ()), f"p{i}")
                     for i, a in enumerate(images)]


def test_dfp_training_starts_from_the_student_checkpoint_and_refuses_a_mismatch(tmp_path: Path) -> None:
    """``init`` in the DFP schedule: with no epochs the trained network's encoder is the student's; a student of
    another width is a clear error."""
    student, samples = _student_and_samples(tmp_path)
    opts = DfpTrainConfig(epochs=0, init=str(tmp_path / "s.safetensors"))
    net = train_dfp(samples, [], (FLUID,), DfpConfig(backbone="unet", width=4), opts, (32, 32), tmp_path / "run",
                    device="cpu", log=lambda _m: None).net
    assert torch.equal(net.state_dict()["encoder.2.1.0.weight"], student.state_dict()["net.down.3.0.weight"])
    with pytest.raises(TrainingError, match="width"):
        train_dfp(samples, [], (FLUID,), DfpConfig(backbone="unet", width=8), opts, (32, 32), tmp_path / "run2",
                  device="cpu", log=lambda _m: None)


def test_a_unet_agm_backbone_takes_the_students_encoder_with_x_hat_starting_at_zero() -> None:
    """Width 4, ADR on: features at stride 16 with 16w channels fused with ASAM; every student encoder tensor is copied,
    the first conv's x channel is the student's and its x_hat channel zero; another width and a ResNet are refused,
    as is a U-Net at stride 32."""
    torch.manual_seed(0)
    config = agm.AgmConfig(n_classes=1, backbone="unet", width=4, image_channels=1, output_stride=16,
                           encoder_width=4)
    net = agm.AgmNet(config)
    x = torch.rand(2, 1, 64, 64)
    assert net.features(x, x, x).shape == (2, 64, 4, 4) and net(x, x, x).shape == (2, 1)
    student = StudentNet(StudentConfig(n_outputs=3, width=4, depth=4)).state_dict()
    assert agm.load_unet_encoder(net, student) == sum(k.startswith("net.down.") for k in student)
    own = net.backbone.state_dict()
    assert torch.equal(own["stem.0.weight"][:, :1], student["net.down.0.0.weight"])
    assert not own["stem.0.weight"][:, 1:].any()
    assert torch.equal(own["down4.1.4.running_var"], student["net.down.4.4.running_var"])
    with pytest.raises(ValueError, match="width"):
        agm.load_unet_encoder(net, StudentNet(StudentConfig(n_outputs=3, width=8, depth=4)).state_dict())
    with pytest.raises(ValueError, match="unet"):
        agm.load_unet_encoder(agm.AgmNet(agm.AgmConfig(n_classes=1, backbone="resnet18", width=4)), student)
    with pytest.raises(ValueError, match="output_stride 16"):
        agm.AgmConfig(backbone="unet", width=4)


def test_agm_training_starts_from_the_student_checkpoint(tmp_path: Path) -> None:
    """``init`` in the AGM schedule: with no epochs the trained backbone is the student's encoder; a student of
    another width is a clear error."""
    student, samples = _student_and_samples(tmp_path)
    opts = AgmTrainConfig(epochs=0, refine_epochs=0, init=str(tmp_path / "s.safetensors"), augment=False)
    config = agm.AgmConfig(n_classes=1, backbone="unet", width=4, image_channels=1, output_stride=16,
                           use_adr=False, use_asam=False)
    net = train_agm(samples, [], (FLUID,), config, None, opts, (32, 32), tmp_path / "run", device="cpu",
                    log=lambda _m: None).net
    assert torch.equal(net.state_dict()["backbone.down3.1.0.weight"], student.state_dict()["net.down.3.0.weight"])
    with pytest.raises(TrainingError, match="width"):
        train_agm(samples, [], (FLUID,), agm.AgmConfig(**{**vars(config), "width": 8}), None, opts, (32, 32),
                  tmp_path / "run2", device="cpu", log=lambda _m: None)


def test_the_cam_gate_keeps_targets_inside_the_map_and_adds_its_moderate_pixels() -> None:
    """Constructed case on a fluid B-scan: an SRF target outside the map is ignored, one inside stays; an ignored
    pixel inside the map becomes IRF where SRF + IRF probability >= moderate (IRF the likelier), not below; PED, which
    the fluid classifier does not speak for, and background are untouched; a B-scan without fluid is unchanged."""
    target = np.array([[SRF, SRF, IGNORE, IGNORE, PED, 0]], np.uint8)
    probs = np.zeros((4, 1, 6), np.float32)
    probs[1] = [0.8, 0.8, 0.1, 0.05, 0.0, 0.0]  # SRF
    probs[2] = [0.0, 0.0, 0.3, 0.05, 0.0, 0.0]  # IRF
    probs[3, 0, 4] = 0.9
    probs[0] = 1 - probs[1:].sum(0)
    cam = np.array([[0.2, 0.9, 0.9, 0.9, 0.1, 0.9]])
    out = cam_gate(target, probs, cam, CLASSES, {FLUID, PED}, {FLUID, PED}, (FLUID,), CamGate(0.5, 0.3))
    assert out.tolist() == [[IGNORE, SRF, IRF, IGNORE, PED, 0]]
    assert target[0, 0] == SRF  # a copy
    none = cam_gate(target, probs, cam, CLASSES, set(), {FLUID}, (FLUID,))
    assert none.tolist() == target.tolist()
    with pytest.raises(ValueError, match="moderate"):
        CamGate(moderate=1.5)


def _targets_without_and_with(cam: tuple) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A random width-4 student's weak targets for a toy set (a B-scan labelled with fluid, then one without), without
    and with the gate ``cam``."""
    torch.manual_seed(0)
    student = StudentProposer(StudentNet(StudentConfig(n_outputs=4, width=4, depth=3)), CLASSES, (32, 32),
                              device="cpu")
    rng = np.random.default_rng(0)
    data = LabelledSet([Sample(partial(np.asarray, rng.random((40, 48), np.float32)), frozenset(lab), "p", bscan=i)
                        for i, lab in enumerate(({FLUID}, set()))], (FLUID,), "toy")
    plain = [t.target() for t in weak_targets(student, [data], Confidence(), 1.0, lambda _m: None)]
    return plain, [t.target() for t in weak_targets(student, [data], Confidence(), 1.0, lambda _m: None, cam)]


def test_weak_targets_with_a_cam_gate_only_differ_on_bscans_that_show_fluid(tmp_path: Path) -> None:
    """A random student and a random unet DFP: a threshold-0 / moderate-0 gate makes every ignored pixel of the fluid
    B-scan a fluid class, while the B-scan labelled without fluid gets the same target as without the gate."""
    torch.manual_seed(0)
    dfp = DfpProposer(DfpNet(DfpConfig(backbone="unet", width=4)), (FLUID,), (32, 32), propagate=False,
                      retina=False, device="cpu")
    plain, gated = _targets_without_and_with((dfp, CamGate(0.0, 0.0)))
    assert np.array_equal(plain[1], gated[1])
    assert not (gated[0] == IGNORE).any() and (plain[0] == IGNORE).any()
    assert set(np.unique(gated[0])) <= {SRF, IRF}


def test_the_recipes_cam_block_takes_an_agm_checkpoint_as_well_as_a_dfp_one(tmp_path: Path) -> None:
    """``cam: {checkpoint}`` builds the proposer the checkpoint's method names (AGM's CAM or DFP's M, both usable by
    the gate: an all-pass AGM gate fills the fluid B-scan's ignored pixels); a student checkpoint or a missing file
    is a clear error naming the block."""
    from conftest import tiny_agm_checkpoint

    from oct_wsss.propose.agm import AgmProposer
    from oct_wsss.training.real_wsss import _cam
    from oct_wsss.training.recipe import Recipe

    def cam(path: Path, **gate: float) -> tuple:
        return _cam(Recipe({"method": "real-wsss", "cam": {"checkpoint": str(path), **gate}}, None, tmp_path), "cpu")

    proposer, gate = cam(tiny_agm_checkpoint(tmp_path / "agm.safetensors", (FLUID,), input_size=32),
                         threshold=0.0, moderate=0.0)
    assert isinstance(proposer, AgmProposer) and proposer.classes == (FLUID,) and gate == CamGate(0.0, 0.0)
    plain, gated = _targets_without_and_with((proposer, gate))
    assert np.array_equal(plain[1], gated[1]) and (plain[0] == IGNORE).any() and not (gated[0] == IGNORE).any()
    _student_and_samples(tmp_path)
    with pytest.raises(TrainingError, match="cam: .*'student' checkpoint"):
        cam(tmp_path / "s.safetensors")
    with pytest.raises(TrainingError, match="cam: checkpoint must name a DFP or AGM checkpoint"):
        cam(tmp_path / "missing.safetensors")
