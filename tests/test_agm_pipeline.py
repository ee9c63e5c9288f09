"""AGM's post-CAM steps and proposer: refinement input, retina mask, pseudo labels, checkpoint -> propose -> files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_agm_checkpoint

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.cli import main
from oct_wsss.evaluate import sweep_threshold
from oct_wsss.evaluate.metrics import evaluate_labels
from oct_wsss.explain.refine import enhance, roi_map
from oct_wsss.io import read_labels, write_volume
from oct_wsss.preprocess.inputs import retina_mask, soft_mask, to_unit
from oct_wsss.propose import ProposalCancelled, propose
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.propose.pseudo import class_scores, pseudo_labels
from oct_wsss.synth import make_volume
from oct_wsss.volume import OctVolume


def test_refinement_mask_formula_by_hand() -> None:
    # two classes on a 1x2 map: CAM_1 = [0, 1], CAM_2 = [1, 0.5] (already in [0, 1] after min-max: [1, 0])
    cams = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.5]]]])
    weights = torch.tensor([[0.8, 0.2]])
    # M = 0.8 * [0, 1] + 0.2 * [1, 0] = [0.2, 0.8] -> SM = [0, 1]
    assert torch.allclose(roi_map(cams, weights), torch.tensor([[[[0.0, 1.0]]]]), atol=1e-6)
    x = torch.tensor([[[[0.5, 0.25]]]])
    # SM * x = [0, 0.25] -> min-max -> [0, 1]
    assert torch.allclose(enhance(x, cams, weights), torch.tensor([[[[0.0, 1.0]]]]), atol=1e-6)
    # with weights favouring class 2 the emphasis flips
    assert torch.allclose(roi_map(cams, torch.tensor([[0.1, 0.9]])), torch.tensor([[[[1.0, 0.0]]]]), atol=1e-6)
    with pytest.raises(ValueError):
        roi_map(cams, torch.ones(1, 3))


def test_class_scores_and_pseudo_labels_by_hand() -> None:
    cams = np.array([[[[0.2, 0.6, 1.0]], [[1.0, 0.2, 0.0]]]], np.float32)  # (1, 2, 1, 3)
    soft = np.array([[[1.0, 1.0, 0.5]]], np.float32)  # last pixel outside the retina
    s = class_scores(cams, soft)
    # class 1: [0.2, 0.6, 0.5] -> min-max [0, 1, 0.75]; class 2: [1, 0.2, 0] -> [1, 0.2, 0]
    np.testing.assert_allclose(s[0, 0, 0], [0.0, 1.0, 0.75], atol=1e-6)
    np.testing.assert_allclose(s[0, 1, 0], [1.0, 0.2, 0.0], atol=1e-6)
    assert pseudo_labels(s, [1, 3], 0.5).tolist() == [[[3, 1, 1]]]
    assert pseudo_labels(s, [1, 3], 0.8).tolist() == [[[3, 1, 0]]]
    assert pseudo_labels(s, [1, 3], 1.0).tolist() == [[[0, 0, 0]]]  # ties go to background
    absent = class_scores(cams, soft, present=np.array([[True, False]]))
    assert pseudo_labels(absent, [1, 3], 0.5).tolist() == [[[0, 1, 1]]]


def test_pseudo_labels_reproduce_the_sweep_optimum() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice([0, 1, 2], size=(3, 16, 16), p=[0.6, 0.2, 0.2]).astype(np.uint8)
    scores = rng.uniform(size=(3, 2, 16, 16)).astype(np.float32)
    scores[:, 0][truth == 1] += 0.6
    scores[:, 1][truth == 2] += 0.6
    scores /= scores.max()
    sweep = sweep_threshold(scores, truth, [1, 2])
    labels = pseudo_labels(scores, [1, 2], sweep.best_alpha)
    assert evaluate_labels(truth, labels, [1, 2]).miou == pytest.approx(sweep.best_miou, abs=1e-9)
    # the list form (B-scans of any size) gives the same curve
    listed = sweep_threshold(list(scores), list(truth), [1, 2])
    np.testing.assert_allclose(listed.miou, sweep.miou)


def test_to_unit_handles_dtypes_and_nan() -> None:
    assert to_unit(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert to_unit(np.array([[0, 1000, 4000]], np.uint16)).tolist() == [[0.0, 0.25, 1.0]]
    assert to_unit(np.array([[np.nan, 0.5, 2.0]], np.float32)).tolist() == [[0.0, 0.5, 1.0]]


def test_retina_mask_covers_the_phantom_retina_not_the_vitreous() -> None:
    synth = make_volume(1, n_bscans=3)
    bscan, labels = synth.volume.data[1], synth.labels[1]
    mask = retina_mask(bscan)
    ilm = synth.layers["ILM"][1] if "ILM" in synth.layers else None
    lesion = labels > 0
    if lesion.any():
        assert mask[lesion].mean() > 0.95  # lesions lie inside the tissue mask
    assert mask[:20].mean() < 0.02  # the top rows are vitreous
    assert 0.1 < mask.mean() < 0.7
    if ilm is not None:
        rows = np.arange(bscan.shape[0])[:, None]
        above = rows < np.asarray(ilm)[None, :] - 10
        assert mask[above].mean() < 0.05
    assert soft_mask(mask)[~mask].max() == 0.5 and soft_mask(mask)[mask].min() == 1.0
    assert not retina_mask(np.zeros((32, 32), np.uint8)).any()


def test_retina_mask_filters_as_tensor_ops_equal_scipy_and_skimage() -> None:
    """The GPU path of retina_masks (min/median/closing as tensor ops), run here on CPU tensors, gives the very masks
    of the scipy/scikit-image path, borders included."""
    from scipy import ndimage as ndi
    from skimage import morphology

    from oct_wsss.preprocess.inputs import _closed, _smoothed, resize, resize_nearest, retina_masks

    x = torch.from_numpy(np.stack([to_unit(b) for b in make_volume(2, n_bscans=2, height=96, width=80).volume.data]))
    smooth = _smoothed(x[:, None], on_tensors=True)
    expected = np.stack([ndi.median_filter(ndi.minimum_filter(b, size=3), size=5) for b in x.numpy()])
    np.testing.assert_array_equal(smooth[:, 0].numpy(), expected)
    tissue = smooth > 0.3
    square = morphology.footprint_rectangle((15, 15))
    np.testing.assert_array_equal(_closed(tissue, on_tensors=True),
                                  np.stack([morphology.closing(t, square) for t in tissue[:, 0].numpy()]))
    masks = retina_masks(x[:, None])
    np.testing.assert_array_equal(masks, np.stack([retina_mask(b) for b in x.numpy()]))
    for size in ((496, 512), (37, 101)):  # the soft mask's resize on the proposer's device picks resize()'s pixels
        np.testing.assert_array_equal(resize_nearest(torch.from_numpy(masks), size).numpy(),
                                      resize(masks, size, order=0))


@pytest.fixture(scope="module")
def agm_ckpt(tmp_path_factory: pytest.TempPathFactory):
    return tiny_agm_checkpoint(tmp_path_factory.mktemp("ckpt") / "agm.safetensors")


def _volume(n: int = 3) -> OctVolume:
    vol = make_volume(2, n_bscans=n, height=96, width=80).volume
    vol.patient.update({"name": "Doe^Jane", "birth_date": "1950-01-31"})
    return vol


def test_proposal_at_native_size_reproducible_from_the_checkpoint(agm_ckpt) -> None:
    vol = _volume()
    seen: list[tuple[int, int]] = []
    a = propose(vol, "agm", agm_ckpt, device="cpu", progress=lambda d, t: seen.append((d, t)))
    b = propose(vol, proposer=AgmProposer.from_checkpoint(Checkpoint.load(agm_ckpt)))
    assert a.labels.shape == vol.shape and a.labels.dtype == np.uint8
    assert set(np.unique(a.labels)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    prov = a.provenance
    assert prov["method"] == "agm" and prov["params"]["threshold"] == 0.4
    assert prov["checkpoint"]["sha256"] == Checkpoint.load(agm_ckpt).sha256
    # a lower threshold labels at least as many pixels
    low = propose(vol, "agm", agm_ckpt, device="cpu", threshold=0.05)
    assert (low.labels > 0).sum() >= (a.labels > 0).sum()


def test_cancel_keeps_finished_bscans(agm_ckpt) -> None:
    vol = _volume(4)
    calls = iter([False, True])
    with pytest.raises(ProposalCancelled) as info:
        propose(vol, "agm", agm_ckpt, device="cpu", batch_size=2, cancel=lambda: next(calls, True))
    assert info.value.partial.done.tolist() == [True, True, False, False]


def test_bad_inputs_give_clear_errors(agm_ckpt, tmp_path) -> None:
    with pytest.raises(ValueError, match="empty"):
        propose(OctVolume(np.zeros((0, 8, 8), np.uint8)), "agm", agm_ckpt)
    with pytest.raises(ValueError, match="unknown method"):
        propose(_volume(1), "nope", agm_ckpt)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        propose(_volume(1), "agm", tmp_path / "missing.safetensors")
    other = Checkpoint.new({"w": torch.zeros(1)}, method="ganomaly", architecture={}, classes=[], input_size=[8, 8],
                           normalisation={}).save(tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="expected 'agm'"):
        propose(_volume(1), "agm", other)


def test_cli_propose_writes_labels_and_phi_free_provenance(agm_ckpt, tmp_path, capsys) -> None:
    vol = _volume(3)
    src = write_volume(vol, tmp_path / "scan.tif")
    out = tmp_path / "out"
    assert main(["propose", str(src), "--method", "agm", "--checkpoint", str(agm_ckpt), "--out", str(out),
                 "--device", "cpu", "--bscans", "0-1"]) == 0
    labels = read_labels(out / "labels.tif")
    assert labels.shape == vol.shape
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["bscans"] == [0, 1] and prov["image_level"]["probabilities"][2] == [None, None, None]
    for path in out.iterdir():
        text = path.read_bytes()
        assert b"Doe" not in text and b"1950" not in text
    assert not (out / "scores.npy").exists()
    assert main(["propose", str(src), "--method", "agm", "--checkpoint", str(agm_ckpt), "--out", str(tmp_path / "s"),
                 "--device", "cpu", "--keep-scores"]) == 0
    scores = np.load(tmp_path / "s" / "scores.npy")
    assert scores.shape == (3, 3, *vol.shape[1:]) and scores.dtype == np.float16
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    assert main(["propose", str(src), "--method", "agm", "--checkpoint", str(tmp_path / "x.pt"), "--out",
                 str(out)]) == 2
    assert "pickle" in capsys.readouterr().err
    assert main(["propose", str(src), "--method", "agm", "--checkpoint", str(agm_ckpt), "--out", str(out),
                 "--bscans", "7-9"]) == 2


def test_refinement_keeps_the_image_when_there_is_no_cam_evidence() -> None:
    cams = torch.zeros(2, 3, 4, 4)
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(roi_map(cams, torch.ones(2, 3)), torch.ones(2, 1, 4, 4))
    from oct_wsss.explain.gradcam import minmax

    assert torch.allclose(enhance(x, cams, torch.ones(2, 3)), minmax(x))


def test_tissue_levels_counted_on_tensors_equal_scikit_image_on_real_and_phantom_bscans(shared_data) -> None:
    """The GPU path's Otsu levels (histograms counted as tensor ops, run here on CPU tensors) are threshold_otsu's, to
    the bit, on real Duke and phantom B-scans at full size; a flat B-scan has no level."""
    from PIL import Image

    from oct_wsss.preprocess.inputs import _smoothed, _tissue_levels

    duke = sorted((shared_data / "duke_dme_chiu2015" / "images").glob("*.png"))[::9]
    real = [to_unit(np.array(Image.open(p).convert("L")))[:, :496] for p in duke]
    phantom = [to_unit(b) for b in make_volume(4, n_bscans=3, look="random").volume.data[:, :, :496]]
    x = torch.from_numpy(np.stack(real + phantom + [np.full((496, 496), 0.3, np.float32)]))[:, None]
    smooth = _smoothed(x, on_tensors=False)
    on_tensors, expected = _tissue_levels(smooth, True), _tissue_levels(smooth, False)
    assert len(expected) == len(duke) + 4 and np.isinf(expected[-1]) and np.isfinite(expected[:-1]).all()
    assert on_tensors == expected


def test_largest_region_with_holes_filled_equals_scipy_fill_holes() -> None:
    """_largest_filled is the largest 8-connected region with ndimage.binary_fill_holes on it, for random masks."""
    from scipy import ndimage as ndi
    from skimage import measure

    from oct_wsss.preprocess.inputs import _largest_filled

    rng = np.random.default_rng(3)
    masks = [rng.random((40, 56)) < p for p in (0.3, 0.5, 0.6, 0.8)] + [np.zeros((9, 9), bool), np.ones((9, 9), bool)]
    for mask in masks:
        labelled = measure.label(mask)
        largest = labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1 if labelled.max() else mask
        np.testing.assert_array_equal(_largest_filled(mask), ndi.binary_fill_holes(largest))
