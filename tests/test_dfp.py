"""DFP: networks (shapes, stride), the parameter-free decoder on hand-made maps, the proposer, the CLI, training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_recipe

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.cli import main
from oct_wsss.explain.propagation import PropagationParams, binarise, expand, propagate, step
from oct_wsss.io import read_labels, write_volume
from oct_wsss.models.dfp import DfpConfig, DfpNet, reference_maps
from oct_wsss.propose import ProposalCancelled, ProposalError, propose
from oct_wsss.propose.dfp import DfpProposer, dfp_checkpoint
from oct_wsss.synth import make_volume
from oct_wsss.training import Recipe, TrainingError, train_recipe
from oct_wsss.training.data import Sample
from oct_wsss.training.dfp import DfpTrainConfig, merge_classes
from oct_wsss.volume import OctVolume

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("backbone", "channels"), [("resnet18", 256), ("resnet50", 1024)])
def test_prediction_module_has_stride_8_and_encoder_five_stages(backbone: str, channels: int) -> None:
    net = DfpNet(DfpConfig(backbone=backbone)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 64, 96))
    assert out.logits.shape == (2, 1) and out.encoder_logits.shape == (2, 1)
    assert out.features.shape == (2, channels, 8, 12)  # no max-pool after the input conv: stride 8
    assert net.saliency(out).shape == (2, 1, 8, 12)
    torch.testing.assert_close(net.saliency(out)[:, 0], out.features.sum(dim=1))  # M = Σ_c F_c
    assert [tuple(s.shape[-2:]) for s in out.stages] == [(32, 48), (32, 48), (16, 24), (8, 12), (4, 6)]
    # binary head: r = sigmoid(a · norm(Σ_c max F_c) + b), a monotone map of the paper's sum of channel maxima
    head = net.head
    with torch.no_grad():
        head.log_scale.fill_(np.log(2.0))
        head.offset.fill_(0.5)
        total = out.features.amax(dim=(2, 3)).sum(dim=1, keepdim=True)
        rm, rv = head.norm.running_mean, head.norm.running_var
        expected = 2.0 * (total - rm) / torch.sqrt(rv + head.norm.eps) + 0.5
        torch.testing.assert_close(head(out.features), expected)
    refs = reference_maps(out.stages)
    assert all(float(r.min()) == 0.0 and float(r.max()) == pytest.approx(1.0) for r in refs)


def test_input_conv_is_shared_and_variants_build() -> None:
    net = DfpNet(DfpConfig(backbone="resnet18"))
    assert sum(1 for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 1) == 1
    multi = DfpNet(DfpConfig(backbone="resnet18", n_classes=2, encoder_maxpool=True)).eval()
    with torch.no_grad():
        out = multi(torch.rand(1, 1, 64, 64))
    assert out.logits.shape == (1, 2) and multi.saliency(out).shape == (1, 2, 8, 8)
    assert tuple(out.stages[1].shape[-2:]) == (16, 16)  # torchvision layout: max-pool before layer1
    assert DfpConfig.from_dict(multi.config.to_dict()) == multi.config
    narrow = DfpNet(DfpConfig(backbone="resnet50", width=8)).eval()  # a width-8 ResNet-50: 8 x 4 x 4 = 128 channels
    with torch.no_grad():
        out = narrow(torch.rand(1, 1, 32, 32))
    assert out.features.shape == (1, 128, 4, 4) and [s.shape[1] for s in out.stages] == [8, 32, 64, 128, 256]
    with pytest.raises(ValueError, match="unknown DfpConfig keys"):
        DfpConfig.from_dict({"backbone": "resnet18", "widht": 16})
    with pytest.raises(ValueError, match="backbone must be one of"):
        DfpConfig(backbone="vgg")


def _step_example() -> tuple[np.ndarray, np.ndarray]:
    s = np.zeros((12, 12), np.float32)
    s[1:5, 1:5] = 0.8  # A: half confirmed by the reference; its unconfirmed half has the same values -> kept
    s[8:11, 1:4] = 0.55  # B: saliency only, values unlike the intersection -> dropped
    s[8:11, 8:11] = 0.75  # C: saliency only, values like the intersection (|0.75 - 0.8| <= δ) -> kept
    s[0, 10:12] = 0.3  # below the threshold -> never foreground
    r = np.zeros((12, 12), np.float32)
    r[1:5, 1:3] = 1.0
    r[6, 6:8] = 1.0  # D: reference only, no saliency -> not in the result
    return s, r


def test_propagation_step_keeps_similar_and_drops_dissimilar_regions() -> None:
    s, r = _step_example()
    out = step(s, r, PropagationParams(kernel=1, threshold=0.5, delta=0.1))
    inter = np.zeros((12, 12), bool)
    inter[1:5, 1:3] = True
    np.testing.assert_array_equal(out["intersection"], inter)
    expected = np.zeros((12, 12), np.float32)
    expected[1:5, 1:5] = 0.8
    expected[8:11, 8:11] = 0.75
    np.testing.assert_allclose(out["soft"], expected)
    dropped = np.zeros((12, 12), bool)
    dropped[8:11, 1:4] = True
    np.testing.assert_array_equal(out["dropped"], dropped)
    # a wider δ keeps B too; δ = 0 keeps only A's unconfirmed half (same values as I exactly)
    assert step(s, r, PropagationParams(kernel=1, delta=0.3))["soft"][9, 2] == pytest.approx(0.55)
    strict = step(s, r, PropagationParams(kernel=1, delta=0.0))["soft"]
    assert strict[2, 4] == pytest.approx(0.8) and strict[9, 9] == 0.0
    # with no reference support anywhere nothing survives
    assert not step(s, np.zeros_like(r), PropagationParams(kernel=1))["soft"].any()


def test_expand_upsamples_then_dilates() -> None:
    s = np.zeros((4, 4), np.float32)
    s[1, 1] = 1.0
    e = expand(s, (8, 8), 1)
    assert e.shape == (8, 8) and e.max() < 1.0 and e[2:4, 2:4].min() > 0.3  # bilinear
    d = expand(s, (4, 4), 3)
    np.testing.assert_array_equal(d > 0, np.pad(np.ones((3, 3), bool), ((0, 1), (0, 1))))
    assert binarise(np.array([[0.1, 0.2, 0.9, 1.0]]), "otsu").tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError, match="odd"):
        PropagationParams(kernel=4)
    with pytest.raises(ValueError, match="otsu"):
        PropagationParams(threshold="mean")


def test_propagation_grows_into_confirmed_pixels_across_scales() -> None:
    # M (4x4) marks a lesion at the top left and a spurious blob at the bottom right; R_4..R_1 (8, 8, 16, 16 px)
    # confirm a lesion slightly larger than M's blob and nothing at the bottom right.
    m = np.zeros((4, 4), np.float32)
    m[0:2, 0:2] = 1.0
    m[3, 3] = 0.5  # spurious: weaker than the lesion and never confirmed
    lesion8 = np.zeros((8, 8), np.float32)
    lesion8[0:5, 0:5] = 1.0
    lesion16 = np.kron(lesion8, np.ones((2, 2), np.float32))
    refs = [lesion16, lesion16, lesion8, lesion8]
    s0 = propagate(m, refs, PropagationParams(kernel=3, threshold=0.5, delta=0.1))
    assert s0.shape == (16, 16)
    region = s0 > 0
    assert region[:8, :8].all()  # M's blob at full resolution, grown by the dilations
    assert not region[lesion16 == 0].any()  # never outside the confirmed lesion
    assert not region[12:, 12:].any()  # the unconfirmed blob is gone
    assert region.sum() > 64  # it grew beyond M's own footprint (8x8 px at this scale)
    with pytest.raises(ValueError, match="R_1..R_4"):
        propagate(m, refs[:3])


@pytest.fixture(scope="module")
def dfp_ckpt(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    net = DfpNet(DfpConfig(backbone="resnet18", width=8))
    with torch.no_grad():
        net.head.log_scale.fill_(-10.0)  # r ≈ sigmoid(5) < 1: every B-scan "abnormal", so the decoder runs
        net.head.offset.fill_(5.0)
    ckpt = dfp_checkpoint(net, [7], (64, 64), threshold=0.3, propagation=PropagationParams(kernel=3, delta=0.2))
    return ckpt.save(tmp_path_factory.mktemp("ckpt") / "dfp.safetensors")


def _volume(n: int = 3) -> OctVolume:
    vol = make_volume(3, n_bscans=n, height=96, width=80).volume
    vol.patient.update({"name": "Doe^Jane", "birth_date": "1950-01-31"})
    return vol


def test_proposal_at_native_size_with_soft_labels(dfp_ckpt) -> None:
    vol = _volume(2)
    result = propose(vol, "dfp", dfp_ckpt, device="cpu", keep_scores=True)
    assert result.labels.shape == vol.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 7}
    assert result.scores is not None and result.scores.shape == (2, 1, 96, 80)
    scores = result.scores.astype(np.float32)[:, 0]
    assert 0.0 <= scores.min() and scores.max() <= 1.0 and scores.max() > 0  # the decoder produced something
    clear = np.abs(scores - 0.3) > 1e-3  # scores are stored as float16
    np.testing.assert_array_equal((result.labels == 7)[clear], (scores > 0.3)[clear])  # mask = S_0 above 0.3
    assert (result.probabilities > 0.5).all()
    prov = result.provenance
    assert prov["method"] == "dfp" and prov["params"]["propagation"] == {"kernel": 3, "threshold": 0.5, "delta": 0.2}
    assert prov["checkpoint"]["sha256"] == Checkpoint.load(dfp_ckpt).sha256
    again = propose(vol, proposer=DfpProposer.from_checkpoint(Checkpoint.load(dfp_ckpt)))
    np.testing.assert_array_equal(again.labels, result.labels)
    # a B-scan the classifier calls normal gets an empty mask and a zero score
    normal = propose(vol, "dfp", dfp_ckpt, device="cpu", present_threshold=1.0, keep_scores=True)
    assert not normal.labels.any() and not normal.scores.any()
    # options reach the decoder: no reference support at threshold 1.0 except the maxima -> at most a few pixels
    tight = propose(vol, "dfp", dfp_ckpt, device="cpu", propagation_threshold=1.0, fallback=False)
    assert (tight.labels > 0).sum() < (result.labels > 0).sum()
    # GradCAM reference maps instead of channel sums: same shapes, recorded in the provenance
    cam = propose(vol, "dfp", dfp_ckpt, device="cpu", reference="gradcam", keep_scores=True)
    assert cam.scores.shape == result.scores.shape and cam.provenance["params"]["reference"] == "gradcam"
    with pytest.raises(ProposalError, match="reference must be one of"):
        DfpProposer.from_checkpoint(dfp_ckpt, reference="cams")


def test_cancel_keeps_finished_bscans(dfp_ckpt) -> None:
    calls = iter([False, True])
    with pytest.raises(ProposalCancelled) as info:
        propose(_volume(4), "dfp", dfp_ckpt, device="cpu", batch_size=2, cancel=lambda: next(calls, True))
    assert info.value.partial.done.tolist() == [True, True, False, False]


def test_bad_checkpoints_and_options_are_clear(dfp_ckpt, tmp_path) -> None:
    ckpt = Checkpoint.load(dfp_ckpt)
    agm_like = Checkpoint(ckpt.state_dict, {**ckpt.meta, "method": "agm"}).save(tmp_path / "agm.safetensors")
    with pytest.raises(CheckpointError, match="expected 'dfp'"):
        DfpProposer.from_checkpoint(agm_like)
    bad_arch = {**ckpt.meta, "architecture": {"dfp": {"backbone": "vgg"}}}
    with pytest.raises(CheckpointError, match="invalid DFP architecture"):
        DfpProposer.from_checkpoint(Checkpoint(ckpt.state_dict, bad_arch))
    wrong = {**ckpt.meta, "architecture": {"dfp": {"backbone": "resnet34"}}}
    with pytest.raises(CheckpointError):
        DfpProposer.from_checkpoint(Checkpoint(ckpt.state_dict, wrong))
    with pytest.raises(ProposalError, match="bad DFP option"):
        DfpProposer.from_checkpoint(ckpt, kernel=4)
    with pytest.raises(ProposalError, match="bad DFP option"):
        DfpProposer.from_checkpoint(ckpt, threshold=2.0)


def test_cli_propose_writes_labels_provenance_and_scores(dfp_ckpt, tmp_path, capsys) -> None:
    vol = _volume(2)
    write_volume(vol, tmp_path / "vol.tif")
    out = tmp_path / "out"
    code = main(["propose", str(tmp_path / "vol.tif"), "--method", "dfp", "--checkpoint", str(dfp_ckpt),
                 "--out", str(out), "--device", "cpu", "--keep-scores"])
    assert code == 0
    labels = read_labels(out / "labels.tif")
    assert labels.shape == vol.shape and set(np.unique(labels)) <= {0, 7}
    scores = np.load(out / "scores.npy")
    assert scores.dtype == np.float16 and scores.shape == (2, 1, 96, 80)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["method"] == "dfp" and prov["image_level"]["classes"] == [7]
    assert "Doe" not in (out / "provenance.json").read_text()
    assert main(["propose", str(tmp_path / "vol.tif"), "--method", "dfp", "--checkpoint", str(tmp_path / "x.pt"),
                 "--out", str(out)]) == 2


def _recipe(tmp_path: Path, **changes) -> Path:
    raw = {
        "method": "dfp", "seed": 0, "out": str(tmp_path / "run"), "device": "cpu",
        "data": {"layout": "synth", "root": str(tmp_path / "synth"),
                 "generate": {"volumes": 4, "n_bscans": 4, "height": 64, "width": 64, "healthy_fraction": 0.25,
                              "seed": 0, "prevalence": {"srf": 0.9, "irf": 0.9}}},
        "classes": ["srf", "irf"], "target": "fluid",
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 2},  # fluid volumes in val and test
        "input_size": [48, 48],
        "dfp": {"config": {"backbone": "resnet18", "width": 8}, "epochs": 3, "batch_size": 4, "augment": False,
                "optimizer": {"name": "adam", "lr": 1e-3}},
        "propagation": {"kernel": 3, "threshold": 0.5, "delta": 0.1},
    }
    return write_recipe(tmp_path, raw, **changes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dfp")
    assert main(["train", str(_recipe(tmp))]) == 0
    return tmp


def test_recipe_trains_and_its_loss_falls(trained: Path) -> None:
    run = trained / "run"
    for name in ("dfp.safetensors", "dfp-metrics.csv", "split.json", "test-report.json", "report.md"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "dfp-metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    ckpt = Checkpoint.load(run / "dfp.safetensors", expect_method="dfp")
    assert ckpt.meta["classes"] == [7] and ckpt.meta["input_size"] == [48, 48]
    assert ckpt.meta["params"]["propagation"] == {"kernel": 3, "threshold": 0.5, "delta": 0.1}
    assert ckpt.meta["training"]["source_classes"] == ["srf", "irf"]
    report = json.loads((run / "test-report.json").read_text())
    summary = report["dfp"]["pseudo_labels"]["summary"]
    assert summary["dsc"]["n"] == 1 and 0.0 <= summary["dsc"]["mean"] <= 1.0  # the one held-out fluid volume
    assert set(report) == {"dfp", "saliency", "retina"}
    assert "| DFP S_0 | image labels |" in (run / "report.md").read_text()


def test_trained_checkpoint_proposes_and_rerun_resumes(trained: Path) -> None:
    vol = make_volume(7, n_bscans=2, height=64, width=64).volume
    result = propose(vol, "dfp", trained / "run" / "dfp.safetensors", device="cpu")
    assert result.labels.shape == vol.shape and np.isfinite(result.probabilities).all()
    before = (trained / "run" / "dfp-metrics.csv").read_text()
    train_recipe(trained / "recipe.yaml", log=lambda _m: None)  # every epoch is in the state file: nothing to train
    assert (trained / "run" / "dfp-metrics.csv").read_text() == before


def test_merge_classes_maps_srf_and_irf_to_fluid(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2, 3]], np.uint8)
    s = Sample(image=lambda: np.zeros((1, 4), np.uint8), labels=frozenset({1, 3}), patient="p",
               mask=lambda: mask)
    merged = merge_classes([s, Sample(s.image, frozenset({3}), "p", s.mask)], [1, 2], 7)
    assert merged[0].labels == {7} and merged[1].labels == frozenset()
    assert merged[0].load_mask().tolist() == [[0, 7, 7, 0]]


def test_bad_dfp_recipes_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="unknown DFP training keys"):
        train_recipe(_recipe(tmp_path, dfp={"epochz": 1}))
    with pytest.raises(TrainingError, match="odd"):
        train_recipe(_recipe(tmp_path, propagation={"kernel": 2}))
    with pytest.raises(TrainingError, match="target"):
        train_recipe(_recipe(tmp_path, target="cyst"))


@pytest.mark.parametrize("path", sorted((ROOT / "training").glob("dfp-*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_parse(path: Path) -> None:
    recipe = Recipe.load(path)
    spec = dict(recipe.raw["dfp"])
    DfpConfig.from_dict(spec.pop("config"))
    DfpTrainConfig.from_dict(spec)
    PropagationParams(**recipe.raw.get("propagation", {}))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known: propagated S_0 (8.7 % DSC) is below the whole-retina baseline "
                   "(9.8 %) on the phantom; docs/results.md. strict: a fix makes this fail until the mark goes")
def test_cpu_recipe_soft_labels_beat_the_trivial_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """training/dfp-synth.yaml as shipped (about 6 min on 2 cores with OMP_NUM_THREADS=1): on the held-out fluid
    volumes DFP's soft labels have a higher mean DSC than the whole retina on every abnormal B-scan.

    The issue's acceptance experiment; figures in docs/results.md (where this comparison is reported as failing
    today: the saliency M alone beats the baseline, the propagated S_0 does not).
    """
    monkeypatch.chdir(tmp_path)
    train_recipe(ROOT / "training" / "dfp-synth.yaml")
    run = tmp_path / "runs" / "dfp-synth"
    report = json.loads((run / "test-report.json").read_text())
    print((run / "report.md").read_text())
    dfp = report["dfp"]["pseudo_labels"]["summary"]["dsc"]["mean"]
    trivial = report["retina"]["pseudo_labels"]["summary"]["dsc"]["mean"]
    assert dfp > trivial
