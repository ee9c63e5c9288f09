"""The student: model, mixed-supervision training, proposer, and fine-tuning from a CorrectionStore with lineage."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.cli import main
from oct_wsss.io import read_labels, write_volume
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.propose import ProposalCancelled, propose
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.synth import make_volume
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.finetune import finetune
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, student_loss, train_student
from oct_wsss.training.student_data import CORRECTION, PSEUDO, Target, one_hot

CLASSES = (1, 2, 3)


def _net(seed: int = 0, arch: str = "unet") -> StudentNet:
    torch.manual_seed(seed)
    return StudentNet(StudentConfig(n_outputs=len(CLASSES) + 1, arch=arch, width=4, depth=3))


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory: pytest.TempPathFactory):
    ckpt = student_checkpoint(_net(), CLASSES, (64, 64), training={"what": "random weights for tests"})
    return ckpt.save(tmp_path_factory.mktemp("ckpt") / "student.safetensors")


def _phantom(seed: int, n: int = 4):
    """A tiny phantom holding only the students' classes (SRF, IRF, PED), so its truth can stand in for corrections."""
    return make_volume(seed, n_bscans=n, height=80, width=72,
                       prevalence={"srf": 1.0, "irf": 1.0, "ped": 1.0, "ez": 0.0, "hrf": 0.0, "drusen": 0.0})


def test_architectures_give_logits_at_the_input_size() -> None:
    x = torch.rand(2, 1, 70, 45)  # sizes that are not multiples of 2^depth
    assert _net()(x).shape == (2, 4, 70, 45)
    assert _net(arch="deeplabv3_resnet50")(x).shape == (2, 4, 70, 45)
    with pytest.raises(ValueError, match="unknown student architecture"):
        StudentConfig(n_outputs=4, arch="segformer")


def test_loss_weights_samples_and_the_soft_target_is_a_distribution() -> None:
    logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    target = torch.from_numpy(np.stack([one_hot(np.full((8, 8), 1, np.uint8), CLASSES),
                                        one_hot(np.zeros((8, 8), np.uint8), CLASSES)]))
    assert torch.allclose(target.sum(1), torch.ones(2, 8, 8))
    cw = torch.ones(4)
    # all weight on the second sample: its gradient pushes background up, the first sample's pushes SRF up
    student_loss(logits, target, torch.tensor([0.0, 1.0]), cw, dice_weight=0.0).backward()
    assert logits.grad[1, 0].mean() < 0 and float(logits.grad[0].abs().sum()) == 0.0


def _targets(volumes, origin: str, weight: float, labels_of=None) -> list[Target]:
    out = []
    for v, vol in enumerate(volumes):
        for i in range(vol.volume.n_bscans):
            lab = vol.labels[i] if labels_of is None else labels_of(vol.labels[i])
            out.append(Target(partial(np.asarray, vol.volume.data[i]), partial(np.asarray, lab), weight, origin,
                              (f"v{v}", i)))
    return out


def test_student_trains_on_synthetic_masks_and_its_loss_falls(tmp_path) -> None:
    targets = _targets([_phantom(1), _phantom(2)], PSEUDO, 1.0)
    config = StudentTrainConfig(epochs=10, batch_size=4, lr=1e-2, augment=False)
    net, info = train_student(targets, CLASSES, (64, 64), {"width": 4, "depth": 3}, config, tmp_path, device="cpu")
    assert info["losses"][-1] < 0.8 * info["losses"][0]
    assert info["targets"] == {PSEUDO: 8}
    assert (tmp_path / "student-metrics.csv").is_file() and (tmp_path / "student-state.safetensors").is_file()


def test_crop_trains_on_matching_windows_and_proposes_the_whole_input(tmp_path) -> None:
    """``crop``: image and target come from the same random window, which moves between epochs; the proposer then
    runs the network on the whole input size."""
    from oct_wsss.training.student_data import StudentDataset

    vol = _phantom(4, n=2)
    # a target that is the B-scan's own brightest pixels: a window of the image must carry the same window of it
    bright = lambda lab, img: np.where(img > np.percentile(img, 90), 1, 0).astype(np.uint8)  # noqa: E731
    targets = [Target(partial(np.asarray, vol.volume.data[i]), partial(bright, None, vol.volume.data[i]), 1.0,
                      PSEUDO, ("v", i)) for i in range(2)]
    data = StudentDataset(targets, CLASSES, (80, 64), crop=(32, 48))
    full_x, full_y = data.prepared(0)
    windows = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        item = data[0]
        assert item["image"].shape == (1, 32, 48) and item["target"].shape == (4, 32, 48)
        hits = [(t, left) for t in range(80 - 32 + 1) for left in range(64 - 48 + 1)
                if torch.equal(full_x[:, t:t + 32, left:left + 48], item["image"])]
        assert len(hits) == 1
        t, left = hits[0]
        assert torch.equal(full_y[:, t:t + 32, left:left + 48], item["target"])
        windows.add(hits[0])
    assert len(windows) > 1
    config = StudentTrainConfig(epochs=1, batch_size=2, augment=False, crop=[32, 48])
    net, info = train_student(targets, CLASSES, (80, 64), {"width": 4, "depth": 3}, config, tmp_path, device="cpu")
    assert info["crop"] == [32, 48]
    probs = StudentProposer(net, CLASSES, (80, 64), device="cpu").probabilities([vol.volume.data[0]])
    assert probs.shape == (1, 4, *vol.volume.data[0].shape)
    with pytest.raises(ValueError, match="larger than the input size"):
        train_student(targets, CLASSES, (16, 64), {"width": 4, "depth": 3}, config, tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="multiple of 16"):
        StudentTrainConfig(crop=[30, 48])


def test_corrections_outweigh_conflicting_pseudo_labels(tmp_path) -> None:
    """Same B-scans: pseudo labels call every lesion SRF (3 copies each), corrections call it PED (1 copy).

    The cross-entropy alone decides such a conflict by weighted vote, so equal weights let the pseudo labels win
    and the correction weight turns it; the Dice term balances classes by design, so with it only the weighted
    case is asserted.
    """
    vols = [_phantom(3, n=3)]
    lesion_as = lambda c: (lambda lab: np.where(lab > 0, c, 0).astype(np.uint8))  # noqa: E731
    pseudo = [t for _ in range(3) for t in _targets(vols, PSEUDO, 1.0, lesion_as(1))]
    lesion = vols[0].labels[0] > 0

    def vote(weight: float, dice: float) -> tuple[float, float]:
        corrections = _targets(vols, CORRECTION, weight, lesion_as(3))[:2]
        config = StudentTrainConfig(epochs=30, batch_size=3, lr=1e-2, augment=False, class_weights=None,
                                    dice_weight=dice)
        net, _ = train_student(pseudo + corrections, CLASSES, (64, 64), {"width": 4, "depth": 3}, config,
                               tmp_path / f"{weight}-{dice}", device="cpu", resume=False, log=lambda _: None)
        probs = StudentProposer(net, CLASSES, (64, 64), device="cpu").probabilities([vols[0].volume.data[0]])[0]
        return float(probs[1][lesion].mean()), float(probs[3][lesion].mean())

    srf, ped = vote(1.0, dice=0.0)
    assert srf > ped  # three pseudo labels outvote one equal-weight correction
    srf, ped = vote(8.0, dice=0.0)
    assert ped > srf  # weighted, the correction wins
    srf, ped = vote(8.0, dice=1.0)
    assert ped > srf


def test_proposer_native_size_streams_and_cancels(student_ckpt) -> None:
    vol = _phantom(4, n=3).volume
    vol.patient.update({"name": "Doe^Jane"})
    result = propose(vol, "student", student_ckpt, device="cpu", keep_scores=True)
    assert result.labels.shape == vol.shape and set(np.unique(result.labels)) <= {0, *CLASSES}
    assert result.scores.shape == (3, 3, *vol.shape[1:])
    assert result.provenance["method"] == "student" and result.provenance["architecture"] == "unet"
    low = propose(vol, "student", student_ckpt, device="cpu", threshold=0.0)
    assert (low.labels > 0).all()  # τ = 0: every pixel takes its best lesion class
    calls = iter([False, True])
    with pytest.raises(ProposalCancelled) as info:
        propose(vol, "student", student_ckpt, device="cpu", batch_size=1, cancel=lambda: next(calls, True))
    assert info.value.partial.done.tolist() == [True, False, False]


def test_flip_averaging_is_mirror_symmetric_and_comes_from_the_checkpoint(student_ckpt, tmp_path) -> None:
    image = _phantom(6, n=1).volume.data[0]
    plain = StudentProposer.from_checkpoint(student_ckpt, device="cpu")
    flip = StudentProposer.from_checkpoint(student_ckpt, device="cpu", flip=True)
    mirror = image[:, ::-1].copy()
    p, p_mirror = plain.probabilities([image, mirror])
    q, q_mirror = flip.probabilities([image, mirror])
    assert not plain.flip and np.allclose(q.sum(0), 1, atol=1e-5)
    asymmetry = np.abs(p - p_mirror[:, :, ::-1]).max()  # the network alone is not mirror-symmetric...
    assert asymmetry > 1e-4 and np.abs(q - q_mirror[:, :, ::-1]).max() < asymmetry / 100  # ...flip averaging is
    ckpt = Checkpoint.load(student_ckpt)
    ckpt.meta["params"]["flip"] = True
    stored = StudentProposer.from_checkpoint(ckpt.save(tmp_path / "flip.safetensors"), device="cpu")
    assert stored.flip and stored.provenance()["params"]["flip"] is True
    assert np.allclose(stored.probabilities([image])[0], q, atol=1e-6)


def test_bad_student_checkpoints_say_what_is_wrong(student_ckpt, tmp_path) -> None:
    ckpt = Checkpoint.load(student_ckpt)
    ckpt.meta["architecture"] = {"student": {"n_outputs": 4, "arch": "segformer"}}
    ckpt.save(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="invalid student architecture"):
        StudentProposer.from_checkpoint(tmp_path / "bad.safetensors")
    other = Checkpoint.new({"w": torch.zeros(1)}, method="dfp", architecture={}, classes=[7], input_size=[8, 8],
                           normalisation={}).save(tmp_path / "dfp.safetensors")
    with pytest.raises(CheckpointError, match="expected 'student'"):
        StudentProposer.from_checkpoint(other)


def test_cli_propose_with_the_student(student_ckpt, tmp_path) -> None:
    vol = _phantom(5, n=2).volume
    src = write_volume(vol, tmp_path / "scan.tif")
    assert main(["propose", str(src), "--method", "student", "--checkpoint", str(student_ckpt), "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert read_labels(tmp_path / "out" / "labels.tif").shape == vol.shape
    assert main(["propose", str(src), "--method", "student", "--checkpoint", str(student_ckpt), "--out",
                 str(tmp_path / "flip"), "--device", "cpu", "--flip"]) == 0
    provenance = json.loads((tmp_path / "flip" / "provenance.json").read_text())
    assert provenance["params"]["flip"] is True
    assert main(["propose", str(src), "--method", "dfp", "--checkpoint", str(student_ckpt), "--out",
                 str(tmp_path / "bad"), "--device", "cpu", "--flip"]) != 0
    assert not (tmp_path / "bad").exists()


def _accept_truth(store: CorrectionStore, phantom, tag: int) -> str:
    vid = store.volume_id(phantom.volume)
    for i in range(phantom.volume.n_bscans):
        store.accept(vid, i, phantom.labels[i], image=phantom.volume.data[i], grader=f"grader{tag}")
    return vid


def test_finetune_writes_a_new_version_with_lineage_and_never_overwrites(student_ckpt, tmp_path) -> None:
    store = CorrectionStore(tmp_path / "project")
    for seed in (6, 7, 8):
        _accept_truth(store, _phantom(seed, n=3), seed)
    parent_bytes = student_ckpt.read_bytes()
    config = StudentTrainConfig(epochs=2, batch_size=3, lr=1e-3, augment=False)
    logged: list[str] = []
    first, lineage = finetune(store.root, student_ckpt, config=config, device="cpu", log=logged.append)
    assert any("only 4 optimiser steps" in m for m in logged), logged  # 6 corrections in batches of 3, 2 epochs
    assert first.name == "student-ft1.safetensors" and first.parent == store.root / "checkpoints"
    assert student_ckpt.read_bytes() == parent_bytes
    meta = Checkpoint.load(first, expect_method="student").meta
    assert meta["lineage"]["parent"]["sha256"] == Checkpoint.load(student_ckpt).sha256
    assert len(meta["lineage"]["trained_on"]) + len(meta["lineage"]["held_out"]) == 9
    assert {c["volume"] for c in meta["lineage"]["held_out"]}.isdisjoint(
        {c["volume"] for c in meta["lineage"]["trained_on"]})
    assert lineage["metrics_before"]["n_bscans"] == 3 and lineage["metrics_after"] is not None
    second, _ = finetune(store.root, first, config=config, device="cpu", log=lambda _: None)
    assert second.name == "student-ft2.safetensors" and first.is_file()
    assert Checkpoint.load(second).meta["lineage"]["parent"]["file"] == "student-ft1.safetensors"
    assert not list((store.root / "checkpoints").glob(".*"))  # no work folders left behind
    proposal = propose(_phantom(9, n=1).volume, "student", second, device="cpu")
    assert proposal.provenance["checkpoint"]["parent"]["file"] == "student-ft1.safetensors"


def test_cli_finetune_and_its_errors(student_ckpt, tmp_path, capsys) -> None:
    project = tmp_path / "project"
    assert main(["finetune", "--store", str(project), "--from", str(student_ckpt), "--device", "cpu"]) == 2
    assert "no accepted corrections" in capsys.readouterr().err
    _accept_truth(CorrectionStore(project), _phantom(10, n=4), 1)
    assert main(["finetune", "--store", str(project), "--from", str(student_ckpt), "--device", "cpu",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out corrections (1 B-scans)" in out and "student-ft1.safetensors" in out
    assert main(["finetune", "--store", str(project), "--from", str(tmp_path / "none.safetensors")]) == 2


def test_corrections_without_a_stored_image_are_refused(student_ckpt, tmp_path) -> None:
    store = CorrectionStore(tmp_path / "p")
    store.accept("v", 0, np.zeros((8, 8), np.uint8))
    with pytest.raises(TrainingError, match="no stored image"):
        finetune(store.root, student_ckpt, device="cpu", held_out=0.0, log=lambda _: None)
    assert json.loads(json.dumps(store.corrections()[0].changes)) == {}


@pytest.mark.parametrize("epochs", [1, 2, 10])
def test_schedules_with_one_batch_per_epoch(tmp_path, epochs: int) -> None:
    """A fine-tune on a handful of corrections has one batch per epoch; the LR schedule must cope."""
    targets = _targets([_phantom(11, n=2)], CORRECTION, 1.0)
    config = StudentTrainConfig(epochs=epochs, batch_size=8, augment=False)
    _, info = train_student(targets, CLASSES, (32, 32), {"width": 2, "depth": 2}, config, tmp_path, device="cpu",
                            log=lambda _m: None)
    assert len(info["losses"]) == epochs


def test_a_cancelled_run_resumes_where_it_stopped(tmp_path) -> None:
    from oct_wsss.training.errors import TrainingCancelled

    targets = _targets([_phantom(12, n=2)], PSEUDO, 1.0)
    config = StudentTrainConfig(epochs=3, batch_size=1, augment=False)
    steps = iter(range(100))
    with pytest.raises(TrainingCancelled):  # cancelled in the second epoch, after one saved epoch
        train_student(targets, CLASSES, (32, 32), {"width": 2, "depth": 2}, config, tmp_path, device="cpu",
                      log=lambda _m: None, cancel=lambda: next(steps) >= 3)
    seen: list[str] = []
    _, info = train_student(targets, CLASSES, (32, 32), {"width": 2, "depth": 2}, config, tmp_path, device="cpu",
                            log=seen.append)
    assert seen[0] == "student: resuming after epoch 0" and len(info["losses"]) == 2
    assert [int(r.split(",")[0]) for r in (tmp_path / "student-metrics.csv").read_text().splitlines()[1:]] == [0, 1, 2]


def test_val_miou_selection_keeps_the_best_epoch_across_a_resume(tmp_path) -> None:
    from oct_wsss.training.data import Sample
    from oct_wsss.training.errors import TrainingCancelled

    ph = _phantom(13, n=2)
    val = [Sample(partial(np.asarray, ph.volume.data[i]), frozenset(), "p", partial(np.asarray, ph.labels[i]), "v", i)
           for i in range(2)]
    targets = _targets([ph], PSEUDO, 1.0)
    config = StudentTrainConfig(epochs=3, batch_size=1, augment=False, select="val_miou")
    steps = iter(range(100))
    with pytest.raises(TrainingCancelled):
        train_student(targets, CLASSES, (32, 32), {"width": 2, "depth": 2}, config, tmp_path, val=val, device="cpu",
                      log=lambda _m: None, cancel=lambda: next(steps) >= 3)
    net, info = train_student(targets, CLASSES, (32, 32), {"width": 2, "depth": 2}, config, tmp_path, val=val,
                              device="cpu", log=lambda _m: None)
    rows = (tmp_path / "student-metrics.csv").read_text().splitlines()[1:]
    scores = {int(r.split(",")[0]): float(r.split(",")[2]) for r in rows}
    assert info["best_epoch"] == max(scores, key=scores.get) and info["val_miou"] == pytest.approx(max(scores.values()))
    proposer = StudentProposer(net, CLASSES, (32, 32), device="cpu")
    from oct_wsss.training.student import val_miou

    assert val_miou(proposer, val) == pytest.approx(info["val_miou"], abs=1e-6)  # the returned net is that epoch's
