"""oct_wsss.evaluate and ``oct-wsss evaluate``: metrics against hand-computed confusion matrices, edge cases, AUC,
the threshold sweep, the CLI on real files, and real Duke DME fluid labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from oct_wsss.cli import main
from oct_wsss.evaluate import (
    binary_scores,
    binary_volume_scores,
    classification_scores,
    confusion_matrix,
    confusion_per_image,
    evaluate_labels,
    mean_sd,
    plot_sweep,
    roc_auc,
    sweep_threshold,
    write_json,
    write_sweep_csv,
)
from oct_wsss.io import write_labels

DUKE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "duke_dme_chiu2015"
SCRIPT = str(Path(sys.executable).with_name("oct-wsss"))

# one 2×4 B-scan; pairs (truth, pred): (0,0) (0,1) (1,1) (1,0) / (0,0) (2,2) (2,0) (0,0)
TRUTH = np.array([[[0, 0, 1, 1], [0, 2, 2, 0]]], dtype=np.uint8)
PRED = np.array([[[0, 1, 1, 0], [0, 2, 0, 0]]], dtype=np.uint8)


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(TRUTH, PRED)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[0, 0], expected[0, 1] = 3, 1
    expected[1, 1], expected[1, 0] = 1, 1
    expected[2, 2], expected[2, 0] = 1, 1
    np.testing.assert_array_equal(cm, expected)
    assert confusion_per_image(np.concatenate([TRUTH, TRUTH]), np.concatenate([PRED, PRED])).shape == (2, 8, 8)


def test_scores_by_hand() -> None:
    s = evaluate_labels(TRUTH, PRED)
    bg, srf, irf = s.classes["background"], s.classes["srf"], s.classes["irf"]
    assert (bg.tp, bg.fp, bg.fn) == (3, 2, 1)
    assert bg.iou == pytest.approx(3 / 6) and bg.dice_pooled == pytest.approx(6 / 9)
    assert (srf.tp, srf.fp, srf.fn) == (1, 1, 1)
    assert srf.iou == pytest.approx(1 / 3) and srf.dice_pooled == pytest.approx(0.5)
    assert srf.under_ratio == pytest.approx(1.0) and srf.over_ratio == pytest.approx(1.0)
    assert irf.iou == pytest.approx(0.5) and irf.dice_pooled == pytest.approx(2 / 3)
    assert irf.under_ratio == pytest.approx(1.0) and irf.over_ratio == 0.0
    assert s.averaged == ("background", "srf", "irf")
    assert s.miou == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert s.miou_lesions == pytest.approx((1 / 3 + 0.5) / 2)
    assert s.dice_per_image_mean == pytest.approx((6 / 9 + 0.5 + 2 / 3) / 3)  # one image: per image = pooled


def test_class_absent_from_both_is_undefined_and_not_averaged() -> None:
    ped = evaluate_labels(TRUTH, PRED).classes["ped"]
    assert ped.iou is None and ped.dice_pooled is None and ped.dice_per_image is None
    assert ped.under_ratio is None and ped.over_ratio is None and ped.images_scored == 0


def test_class_only_in_prediction() -> None:
    pred = PRED.copy()
    pred[0, 0, 0] = 3  # a PED pixel where truth is background
    s = evaluate_labels(TRUTH, pred)
    ped = s.classes["ped"]
    assert (ped.tp, ped.fp, ped.fn) == (0, 1, 0)
    assert ped.iou == 0.0 and ped.dice_per_image == 0.0 and ped.images_scored == 1
    assert ped.over_ratio is None and ped.under_ratio is None  # FP/TP and FN/TP with TP = 0
    assert "ped" not in s.averaged  # no truth pixels: outside the means (the paper's convention)
    assert s.classes["background"].fn == 2  # ... but it costs background its pixel


def test_class_only_in_truth() -> None:
    pred = PRED.copy()
    pred[0, 1, 1:3] = 0  # IRF never predicted
    s = evaluate_labels(TRUTH, pred)
    irf = s.classes["irf"]
    assert (irf.tp, irf.fp, irf.fn) == (0, 0, 2)
    assert irf.iou == 0.0 and irf.dice_per_image == 0.0 and irf.under_ratio is None
    assert "irf" in s.averaged and s.miou_lesions == pytest.approx((1 / 3 + 0.0) / 2)


def test_pooled_and_per_image_differ() -> None:
    truth = np.zeros((3, 20, 20), dtype=np.uint8)
    truth[0, :10, :10] = 1  # a big SRF, found exactly
    truth[1, 0, 0] = 1  # a one-pixel SRF, missed
    pred = truth.copy()
    pred[1, 0, 0] = 0  # image 2 (index 2) holds no SRF in either: left out of the per-image mean
    srf = evaluate_labels(truth, pred).classes["srf"]
    assert srf.dice_pooled == pytest.approx(200 / 201)
    assert srf.dice_per_image == pytest.approx((1.0 + 0.0) / 2)
    assert srf.images_scored == 2
    assert srf.iou == pytest.approx(100 / 101) and srf.iou_per_image == pytest.approx(0.5)


def test_classes_argument_folds_others_into_background() -> None:
    s = evaluate_labels(TRUTH, PRED, classes=[1])
    assert set(s.classes) == {"background", "srf"}
    bg = s.classes["background"]
    assert (bg.tp, bg.fp, bg.fn) == (5, 1, 1)  # the IRF pixels are background now; (2,0) became a hit


def test_lesion_images_only() -> None:
    truth = np.zeros((2, 2, 2), dtype=np.uint8)
    truth[0, 0, 0] = 1
    s = evaluate_labels(truth, truth, lesion_images_only=True)
    assert (s.n_images, s.n_images_scored) == (2, 1) and s.classes["background"].tp == 3


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        confusion_matrix(TRUTH, PRED[:, :, :3])
    with pytest.raises(ValueError, match="outside the ontology"):
        confusion_matrix(TRUTH + 8, PRED)


def test_json_has_null_for_undefined_ratios(tmp_path: Path) -> None:
    pred = PRED.copy()
    pred[0, 0, 0] = 3
    report = evaluate_labels(TRUTH, pred).to_dict()
    report["weird"] = [float("nan"), float("inf"), np.float32(0.5)]
    text = write_json(report, tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["classes"]["ped"]["over_ratio"] is None and loaded["classes"]["ped"]["iou"] == 0.0
    assert loaded["weird"] == [None, None, 0.5]


def test_binary_dfp_metrics_by_hand() -> None:
    truth = np.zeros((1, 2, 4), dtype=np.uint8)
    truth[0, 0, :3] = [1, 2, 2]  # |G| = 3 (SRF + IRF)
    pred = np.zeros_like(truth)
    pred[0, 0, 1:] = 7  # "fluid" on 3 pixels: 2 hit, 1 false
    b = binary_volume_scores(truth, pred)
    assert (b.tp, b.fp, b.fn) == (2, 1, 1)
    assert b.dsc == pytest.approx(4 / 6) and b.tpvf == pytest.approx(2 / 3) and b.ppv == pytest.approx(2 / 3)
    empty = binary_scores(np.zeros((8, 8), dtype=np.int64))
    assert empty.dsc is None and empty.tpvf is None and empty.ppv is None
    summary = mean_sd([0.5, 0.7, None])
    assert summary["mean"] == pytest.approx(0.6) and summary["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summary["n"] == 2 and mean_sd([0.5])["sd"] is None


def test_auc_rank_statistic_with_ties() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # ties between a positive and two negatives count 1/2 each: (0.5 + 0.5 + 1 + 1) / 4
    assert roc_auc([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(0.75)
    assert roc_auc([0.3, 0.3, 0.3], [0, 1, 1]) == pytest.approx(0.5)
    assert roc_auc([0.2, 0.9], [1, 1]) is None


def test_classification_scores() -> None:
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4], [0.3, 0.8]])
    labels = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    r = classification_scores(probs, labels, keys=["srf", "ped"])
    srf, ped = r["classes"]["srf"], r["classes"]["ped"]
    assert srf["accuracy"] == pytest.approx(0.5) and srf["f1"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert srf["auc"] == pytest.approx(0.75)  # pos {0.9, 0.3} vs neg {0.6, 0.1}: 3 of 4 pairs ordered right
    assert ped["accuracy"] == 1.0 and ped["f1"] == 1.0 and ped["auc"] == 1.0
    assert r["auc"] == pytest.approx(0.875) and r["exact_match"] == pytest.approx(0.5)


def test_sweep_finds_planted_alpha(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(np.array([0, 1, 3], dtype=np.uint8), size=(4, 32, 40), p=[0.8, 0.1, 0.1])
    scores = rng.uniform(0.0, 0.595, size=(4, 2, 32, 40)).astype(np.float32)  # background: every score ≤ 0.595
    for k, c in enumerate((1, 3)):
        scores[:, k][truth == c] = rng.uniform(0.605, 1.0, size=int((truth == c).sum()))
    result = sweep_threshold(scores, truth, [1, 3])
    assert result.best_alpha == pytest.approx(0.60) and result.best_miou == pytest.approx(1.0)
    assert len(result.alphas) == 101 and result.miou[50] < 1.0 and result.miou[70] < 1.0
    # agrees with the brute-force argmax over [α, scores] at a few α
    for a in (0.0, 0.3, 0.6, 0.95):
        stack = np.concatenate([np.full((4, 1, 32, 40), a, np.float32), scores], axis=1)
        pseudo = np.array([0, 1, 3], dtype=np.uint8)[stack.argmax(axis=1)]
        assert result.miou[round(a * 100)] == pytest.approx(evaluate_labels(truth, pseudo).miou)
    csv = write_sweep_csv(result, tmp_path / "sweep.csv").read_text().splitlines()
    assert csv[0] == "alpha,miou,miou_lesions,iou_background,iou_srf,iou_ped" and len(csv) == 102
    png = plot_sweep(result, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------- CLI


def _eroded(labels: np.ndarray) -> np.ndarray:
    """Lesion pixels on the lesion boundary (1 px, 4-connected) set to background."""
    out = labels.copy()
    inner = np.stack([binary_erosion(b > 0) for b in labels])
    out[(labels > 0) & ~inner] = 0
    return out


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oct_wsss.synth import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synth") / "ds", 2, n_bscans=3, height=96, width=128,
                         healthy_fraction=0.0, seed=1)


def _read(folder: Path) -> np.ndarray:
    from oct_wsss.io import read_labels

    return read_labels(folder)


def test_cli_labels_tif_vs_mask_folder(tmp_path: Path, synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = synth_root / "synth_0000" / "masks"
    truth = _read(masks)
    assert (truth > 0).any()
    pred = write_labels(tmp_path / "pred" / "labels.tif", _eroded(truth))
    rc = main(["evaluate", "--pred", str(pred), "--truth", str(masks), "--report", str(tmp_path / "r.json"),
               "--markdown", str(tmp_path / "r.md")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "background" in out
    r = json.loads((tmp_path / "r.json").read_text())
    for key in ("miou", "miou_lesions", "dice_per_image_mean", "classes"):
        assert key in r
    lesions = [k for k in r["averaged_classes"] if k != "background"]
    assert lesions
    for k in lesions:
        c = r["classes"][k]
        assert set(c) >= {"iou", "dice_pooled", "dice_per_image", "under_ratio", "over_ratio"}
        assert c["over_ratio"] == 0.0 and c["under_ratio"] > 0 and c["dice_pooled"] < 1
    assert r["classes"]["drusen"]["iou"] is None or "drusen" in lesions
    assert "| **Overall** |" in (tmp_path / "r.md").read_text()
    # the volume folder (with masks/) is accepted as truth, and scoring against itself is perfect
    assert main(["evaluate", "--pred", str(masks), "--truth", str(synth_root / "synth_0000"),
                 "--report", str(tmp_path / "self.json")]) == 0
    self_r = json.loads((tmp_path / "self.json").read_text())
    assert self_r["miou"] == 1.0 and self_r["volume_summary"]["dsc"]["mean"] == 1.0


def test_cli_dataset_roots_match_by_volume_id(tmp_path: Path, synth_root: Path) -> None:
    for vid in ("synth_0000", "synth_0001"):
        write_labels(tmp_path / "pred" / vid / "labels.tif", _read(synth_root / vid / "masks"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(synth_root),
                 "--report", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r["volumes"]) == {"synth_0000", "synth_0001"} and r["n_images"] == 6
    assert r["miou"] == 1.0 and r["unmatched_truth_volumes"] == []


def test_cli_shape_mismatch_and_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_labels(tmp_path / "a.tif", np.zeros((2, 10, 12), np.uint8))
    b = write_labels(tmp_path / "b.tif", np.zeros((2, 10, 13), np.uint8))
    assert main(["evaluate", "--pred", str(a), "--truth", str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(2, 10, 12)" in err[0] and "(2, 10, 13)" in err[0]
    assert main(["evaluate", "--pred", str(tmp_path / "missing.tif"), "--truth", str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.tif" in err[0] and "no such file" in err[0]
    assert main(["evaluate", "--pred", str(a), "--truth", str(b), "--classes", "nonsense"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_console_script_end_to_end(tmp_path: Path) -> None:
    truth = np.zeros((2, 16, 16), np.uint8)
    truth[:, 4:8, 4:8] = 2
    pred = truth.copy()
    pred[0, 4, 4:8] = 0
    t, p = write_labels(tmp_path / "t.tif", truth), write_labels(tmp_path / "p.tif", pred)
    result = subprocess.run([SCRIPT, "evaluate", "--pred", str(p), "--truth", str(t), "--report",
                             str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    irf = json.loads((tmp_path / "r.json").read_text())["classes"]["irf"]
    assert irf["tp"] == 28 and irf["fn"] == 4 and irf["under_ratio"] == pytest.approx(4 / 28)
    bad = subprocess.run([SCRIPT, "evaluate", "--pred", str(tmp_path / "nope"), "--truth", str(t)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------------- real data


def test_duke_dme_fluid_against_itself_and_eroded(tmp_path: Path) -> None:
    labels_dir = DUKE / "labels"
    if not labels_dir.is_dir():
        pytest.skip(f"Duke DME labels not present at {labels_dir} (see shared/data/README.md)")
    from skimage.io import imread, imsave

    files = sorted(labels_dir.glob("Subject_*.png"))
    assert files
    subjects = sorted({f.name[:10] for f in files})
    truth_root, pred_root = tmp_path / "truth", tmp_path / "pred"
    for s in subjects:
        vol = np.stack([np.where(imread(f) == 9, 7, 0).astype(np.uint8) for f in files if f.name.startswith(s)])
        (truth_root / s / "masks").mkdir(parents=True)
        for i, page in enumerate(vol):
            imsave(truth_root / s / "masks" / f"{i:03d}.png", page, check_contrast=False)
        write_labels(pred_root / "self" / s / "labels.tif", vol)
        write_labels(pred_root / "eroded" / s / "labels.tif", _eroded(vol))

    assert main(["evaluate", "--pred", str(pred_root / "self"), "--truth", str(truth_root),
                 "--report", str(tmp_path / "self.json")]) == 0
    same = json.loads((tmp_path / "self.json").read_text())
    assert same["classes"]["fluid"]["dice_pooled"] == 1.0 and same["classes"]["fluid"]["dice_per_image"] == 1.0
    assert same["volume_summary"]["dsc"]["mean"] == 1.0

    assert main(["evaluate", "--pred", str(pred_root / "eroded"), "--truth", str(truth_root),
                 "--report", str(tmp_path / "eroded.json"), "--classes", "fluid"]) == 0
    r = json.loads((tmp_path / "eroded.json").read_text())
    fluid = r["classes"]["fluid"]
    assert set(r["classes"]) == {"background", "fluid"}
    assert fluid["dice_pooled"] < 1 and fluid["dice_per_image"] < 1 and fluid["under_ratio"] > 0
    assert fluid["over_ratio"] == 0.0 and fluid["fp"] == 0
    assert len(r["volumes"]) == len(subjects) and r["volume_summary"]["ppv"]["mean"] == 1.0
