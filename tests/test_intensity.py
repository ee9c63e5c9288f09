"""Intensity harmonisation: phantom inputs nearly unchanged, a Cirrus-like transform undone, and checkpoints decide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import io

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.preprocess.inputs import resize, to_unit
from oct_wsss.preprocess.intensity import (
    FLOOR,
    HIGH,
    LAYER_TARGETS,
    MID,
    anchors,
    harmonise,
    normalisation_meta,
    unit_inputs,
)
from oct_wsss.propose import ProposalError, propose
from oct_wsss.propose.dfp import DfpProposer, dfp_checkpoint
from oct_wsss.propose.student import StudentProposer, network_input
from oct_wsss.synth import make_volume
from oct_wsss.weights import bundled


def cirrus_like(bscan: np.ndarray, size: tuple[int, int] = (400, 640)) -> np.ndarray:
    """A Cirrus-like copy: gamma 0.7, gain 0.85, a noise floor raised by 0.1, resampled, back to uint8."""
    y = np.clip(0.85 * to_unit(bscan) ** 0.7 + 0.1, 0.0, 1.0).astype(np.float32)
    return np.round(resize(y, size) * 255).astype(np.uint8)


def _smooth_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference after a Gaussian blur (resampling changes the speckle, not the intensity scale)."""
    return float(np.abs(ndi.gaussian_filter(a, 3) - ndi.gaussian_filter(b, 3)).mean())


def _phantom(seed: int = 1) -> np.ndarray:
    return make_volume(seed, n_bscans=1).volume.data[0]


def test_phantom_bscans_come_back_nearly_unchanged() -> None:
    bscan = _phantom()
    out = harmonise(bscan)
    assert out.dtype == np.float32 and out.shape == bscan.shape and 0.0 <= out.min() and out.max() <= 1.0
    assert float(np.abs(out - to_unit(bscan)).mean()) < 0.01
    floor, mid, high = anchors(out)
    assert floor == pytest.approx(FLOOR, abs=0.005) and mid == pytest.approx(MID, abs=0.01)
    assert high == pytest.approx(HIGH, abs=0.01)


@pytest.mark.parametrize("source", ["phantom", "duke"])
def test_cirrus_like_transform_is_undone(source: str, request: pytest.FixtureRequest) -> None:
    if source == "duke":
        root: Path = request.getfixturevalue("shared_data")
        bscan = io.imread(root / "duke_dme_chiu2015" / "images" / "Subject_03_05.png")
    else:
        bscan = _phantom()
    cirrus = cirrus_like(bscan)
    raw_gap = _smooth_gap(resize(to_unit(cirrus), bscan.shape), to_unit(bscan))
    gap = _smooth_gap(resize(harmonise(cirrus), bscan.shape), harmonise(bscan))
    assert raw_gap > 0.1  # the transform changes the image a lot ...
    assert gap < 0.02 and gap < raw_gap / 8  # ... and harmonisation brings it back onto the original's scale
    assert harmonise(cirrus).shape == cirrus.shape


def test_padding_stays_and_degenerate_inputs_pass_through() -> None:
    bscan = _phantom().copy()
    bscan[:, :20] = 255  # Duke-like padding
    out = harmonise(bscan)
    assert (out[:, :20] == 1.0).all()
    flat = np.full((32, 32), 7, np.uint8)
    np.testing.assert_array_equal(harmonise(flat), to_unit(flat))
    with pytest.raises(ValueError, match="one 2-D B-scan"):
        harmonise(np.zeros((2, 8, 8), np.uint8))


def test_checkpoints_without_the_key_are_unaffected(tmp_path: Path) -> None:
    ckpt = Checkpoint.load(bundled("student"))
    plain = Checkpoint(ckpt.state_dict, {**ckpt.meta, "normalisation": normalisation_meta("unit")})
    assert "intensity" not in plain.meta["normalisation"]
    proposer = StudentProposer.from_checkpoint(plain.save(tmp_path / "plain.safetensors"), device="cpu")
    assert proposer.intensity == "unit" and proposer.provenance()["params"]["intensity"] == "unit"
    dark = cirrus_like(_phantom(), size=(128, 128))
    np.testing.assert_array_equal(network_input([dark], (128, 128), proposer.intensity)[0, 0].numpy(), to_unit(dark))
    for method in ("agm", "dfp"):  # the bundled ones trained on unit inputs say nothing
        meta = Checkpoint.load(bundled(method)).meta["normalisation"]
        assert "intensity" not in meta


def test_the_bundled_demo_student_harmonises_its_inputs() -> None:
    """demo-student (the phantom multi-class student) was trained on harmonised B-scans: it records it, and its
    proposer feeds the network harmonised B-scans."""
    path = bundled("student")
    assert Checkpoint.load(path).meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    proposer = StudentProposer.from_checkpoint(path, device="cpu")
    assert proposer.intensity == "harmonised" and proposer.provenance()["params"]["intensity"] == "harmonised"
    dark = cirrus_like(_phantom(), size=(128, 128))
    fed = network_input([dark], (128, 128), proposer.intensity)[0, 0].numpy()
    np.testing.assert_array_equal(fed, harmonise(dark))
    assert not np.allclose(fed, to_unit(dark))


def test_a_harmonised_checkpoint_harmonises_every_proposer_input(tmp_path: Path) -> None:
    ckpt = Checkpoint.load(bundled("student"))
    unit = Checkpoint(ckpt.state_dict, {**ckpt.meta, "normalisation": normalisation_meta("unit")})
    marked = Checkpoint(ckpt.state_dict, {**ckpt.meta, "normalisation": normalisation_meta("harmonised")})
    assert marked.meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    bscan = cirrus_like(_phantom(), size=(496, 512))
    plain = StudentProposer.from_checkpoint(unit.save(tmp_path / "u.safetensors"), device="cpu")
    harmonised = StudentProposer.from_checkpoint(marked.save(tmp_path / "s.safetensors"), device="cpu")
    assert plain.intensity == "unit" and harmonised.intensity == "harmonised"
    np.testing.assert_array_equal(unit_inputs([bscan], "harmonised")[0], harmonise(bscan))
    assert not np.allclose(plain.probabilities([bscan]), harmonised.probabilities([bscan]))
    vol = make_volume(2, n_bscans=1, height=96, width=80).volume
    result = propose(vol, "student", tmp_path / "s.safetensors", device="cpu")
    assert result.provenance["params"]["intensity"] == "harmonised"
    bad = Checkpoint(ckpt.state_dict, {**ckpt.meta, "normalisation": {"input": "unit", "intensity": "zscore"}})
    with pytest.raises(ProposalError, match="unknown intensity normalisation 'zscore'"):
        propose(vol, "student", bad.save(tmp_path / "bad.safetensors"), device="cpu")


def test_dfp_and_agm_read_the_option(tmp_path: Path) -> None:
    import torch

    from oct_wsss.explain.propagation import PropagationParams
    from oct_wsss.models.dfp import DfpConfig, DfpNet

    torch.manual_seed(0)
    net = DfpNet(DfpConfig(backbone="resnet18", width=8))
    for intensity in ("unit", "harmonised"):
        path = dfp_checkpoint(net, [7], (64, 64), threshold=0.3, propagation=PropagationParams(),
                              intensity=intensity).save(tmp_path / f"dfp-{intensity}.safetensors")
        proposer = DfpProposer.from_checkpoint(path, device="cpu")
        assert proposer.intensity == intensity and proposer.provenance()["params"]["intensity"] == intensity
    from conftest import tiny_agm_checkpoint

    from oct_wsss.propose.agm import AgmProposer
    agm = Checkpoint.load(tiny_agm_checkpoint(tmp_path / "agm.safetensors"))
    assert AgmProposer.from_checkpoint(agm, device="cpu").intensity == "unit"
    marked = Checkpoint(agm.state_dict, {**agm.meta, "normalisation": {**agm.meta["normalisation"],
                                                                        "intensity": "harmonised"}})
    assert AgmProposer.from_checkpoint(marked, device="cpu").intensity == "harmonised"


def test_student_training_records_and_applies_the_option(tmp_path: Path) -> None:
    from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
    from oct_wsss.training.student_data import PSEUDO, StudentDataset, Target

    phantom = make_volume(4, n_bscans=2, height=64, width=64)
    targets = [Target(lambda i=i: cirrus_like(phantom.volume.data[i], (64, 64)), lambda i=i: phantom.labels[i],
                      1.0, PSEUDO, ("v", i)) for i in range(2)]
    data = StudentDataset(targets, (1, 2, 3), (64, 64), intensity="harmonised")
    np.testing.assert_allclose(data.prepared(0)[0][0].numpy(), harmonise(cirrus_like(phantom.volume.data[0], (64, 64))),
                               atol=1e-6)
    config = StudentTrainConfig(epochs=1, batch_size=2, intensity="harmonised", augment=False)
    net, _ = train_student(targets, (1, 2, 3), (64, 64), {"arch": "unet", "width": 4, "depth": 2}, config,
                           tmp_path / "run", device="cpu", log=lambda _m: None)
    ckpt = student_checkpoint(net, (1, 2, 3), (64, 64), training={}, intensity=config.intensity)
    assert ckpt.meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    assert student_checkpoint(net, (1, 2, 3), (64, 64), training={}).meta["normalisation"] == {"input": "unit"}
    with pytest.raises(ValueError, match="intensity must be one of"):
        StudentTrainConfig(intensity="log")


def test_agm_and_dfp_training_take_the_option() -> None:
    from oct_wsss.training.agm import AgmTrainConfig
    from oct_wsss.training.data import Sample
    from oct_wsss.training.dfp import DfpTrainConfig
    from oct_wsss.training.ganomaly import GanomalyTrainConfig
    from oct_wsss.training.loader import BscanDataset

    for config in (AgmTrainConfig, DfpTrainConfig, GanomalyTrainConfig):
        assert config(intensity="harmonised").intensity == "harmonised"
        with pytest.raises(ValueError, match="intensity must be one of"):
            config(intensity="log")
    bscan = cirrus_like(_phantom(), size=(96, 96))
    sample = Sample(lambda: bscan, frozenset(), "p")
    item = BscanDataset([sample], (), (96, 96), intensity="harmonised")[0]
    np.testing.assert_allclose(item["image"][0].numpy(), harmonise(bscan), atol=1e-6)


def test_finetune_keeps_the_parents_harmonisation(tmp_path: Path) -> None:
    import torch

    from oct_wsss.models.student import StudentConfig, StudentNet
    from oct_wsss.store import CorrectionStore
    from oct_wsss.training.finetune import finetune
    from oct_wsss.training.student import StudentTrainConfig, student_checkpoint

    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=2))
    parent = student_checkpoint(net, (1, 2, 3), (64, 64), training={}, intensity="harmonised").save(
        tmp_path / "student.safetensors")
    store = CorrectionStore(tmp_path / "project")
    for seed in (6, 7):
        phantom = make_volume(seed, n_bscans=2, height=64, width=64, prevalence={"srf": 1.0})
        vid = store.volume_id(phantom.volume)
        for i in range(2):
            store.accept(vid, i, phantom.labels[i], image=phantom.volume.data[i], grader="g")
    child, _ = finetune(store.root, parent, config=StudentTrainConfig(epochs=1, batch_size=2, augment=False),
                        device="cpu", log=lambda _m: None)
    assert Checkpoint.load(child).meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}


def test_layer_anchors_land_on_the_layer_targets() -> None:
    """A constructed B-scan: vitreous 0.05, retina (rows 40-79) 0.1-0.7, choroid below 0.9; with the retina mask the
    floor is the vitreous and median / p99 the retina's, mapped onto LAYER_TARGETS (the choroid plays no part)."""
    rng = np.random.default_rng(0)
    x = np.full((120, 64), 0.05, np.float32)
    x[40:80] = rng.uniform(0.1, 0.7, (40, 64))
    x[80:] = 0.9
    retina = np.zeros(x.shape, bool)
    retina[40:80] = True
    y = harmonise(x, retina)
    floor, mid, high = LAYER_TARGETS
    assert float(np.median(y[:40])) == pytest.approx(floor, abs=1e-6)
    assert float(np.median(y[40:80])) == pytest.approx(mid, abs=2e-3)
    assert float(np.percentile(y[40:80], 99)) == pytest.approx(high, abs=2e-3)
    assert not np.allclose(y, harmonise(x))  # the tissue heuristic counts the choroid as retina


def test_harmonised_layers_needs_the_mask_and_the_layer_model_gives_it(tmp_path: Path) -> None:
    from oct_wsss.propose.layers import retina_mask
    from oct_wsss.propose.retina import bundled_model, unit_inputs_for

    bscan = _phantom()
    with pytest.raises(ValueError, match="needs the layer model's retina mask"):
        unit_inputs([bscan], "harmonised-layers")
    mask = retina_mask(bscan[None], model=bundled_model())[0]
    np.testing.assert_array_equal(unit_inputs_for([bscan], "harmonised-layers")[0], harmonise(bscan, mask))
    np.testing.assert_array_equal(unit_inputs_for([bscan], "harmonised")[0], harmonise(bscan))
    assert normalisation_meta("harmonised-layers") == {"input": "unit", "intensity": "harmonised-layers"}
    ckpt = Checkpoint.load(bundled("student"))
    marked = Checkpoint(ckpt.state_dict, {**ckpt.meta, "normalisation": normalisation_meta("harmonised-layers")})
    vol = make_volume(2, n_bscans=1, height=128, width=128).volume
    result = propose(vol, "student", marked.save(tmp_path / "l.safetensors"), device="cpu")
    assert result.provenance["params"]["intensity"] == "harmonised-layers"
    assert result.labels.shape == vol.shape
