"""Issue 21, item 6: each defect fixed with a test that failed before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from oct_wsss.cli import main
from oct_wsss.cli.batch import is_batch
from oct_wsss.io import read_labels, read_volume, write_labels


def test_a_synth_volume_folder_with_bscans_is_one_volume_not_a_batch(tmp_path: Path) -> None:
    assert main(["synth", "--out", str(tmp_path / "ds"), "--volumes", "1", "--bscans", "2", "--seed", "1"]) == 0
    volume = tmp_path / "ds" / "synth_0000"
    assert {p.name for p in volume.iterdir()} >= {"bscans", "masks", "volume.json"}
    assert read_volume(volume).n_bscans == 2
    assert not is_batch(volume)  # the reader opens it as one volume; propose must not see bscans/ and masks/
    assert is_batch(tmp_path / "ds")  # the dataset folder holds volumes


def _labels(*bscans: list[list[int]]) -> np.ndarray:
    return np.array(bscans, dtype=np.uint8)


def test_evaluate_scores_undistinguished_fluid_against_srf_and_irf_truth(tmp_path: Path, capsys) -> None:
    truth = _labels([[0, 1, 1, 0], [0, 2, 2, 0]])  # SRF and IRF, no "fluid" (7)
    pred = _labels([[0, 7, 7, 7], [0, 7, 0, 0]])  # undistinguished fluid: TP 3, FP 1, FN 1
    write_labels(tmp_path / "t.tif", truth)
    write_labels(tmp_path / "p.tif", pred)
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif"),
                 "--report", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    fluid = report["classes"]["fluid"]
    assert (fluid["tp"], fluid["fp"], fluid["fn"], fluid["truth_pixels"]) == (3, 1, 1, 4)
    assert fluid["iou"] == pytest.approx(3 / 5)
    assert report["fluid_scored_against"] == ["srf", "irf"]
    assert "SRF or IRF" in out and "SRF or IRF" in (tmp_path / "r.md").read_text()
    # truth that itself uses id 7 is scored as before, id against id
    write_labels(tmp_path / "t7.tif", np.where(truth > 0, 7, 0).astype(np.uint8))
    assert main(["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t7.tif"),
                 "--report", str(tmp_path / "r7.json")]) == 0
    assert json.loads((tmp_path / "r7.json").read_text())["fluid_scored_against"] is None


def test_a_phantom_volume_not_marked_healthy_holds_a_lesion(tmp_path: Path) -> None:
    from oct_wsss.synth import make_volume
    from oct_wsss.synth.dataset import volume_seed, write_dataset

    seed = volume_seed(5, 0)  # volume 0 of `oct-wsss synth --seed 5` drew no lesion class at all
    vol = make_volume(seed, n_bscans=6, height=96, width=64)
    assert not vol.params["healthy"] and vol.params["placed"] and (vol.labels > 0).any()
    assert make_volume(seed, n_bscans=6, height=96, width=64).labels.tobytes() == vol.labels.tobytes()  # reproducible
    out = write_dataset(tmp_path / "ds", 1, healthy_fraction=0.0, seed=5, n_bscans=6, height=96, width=64)
    generation = json.loads((out / "generation.json").read_text())
    assert generation["volumes"][0]["healthy"] is False
    assert (read_labels(out / "synth_0000" / "masks") > 0).any()
    # prevalence 0 for every class: nothing can be placed, so the volume is marked healthy, not "with lesions"
    none = make_volume(3, n_bscans=2, height=64, width=64, prevalence={k: 0.0 for k in vol.params["prevalence"]})
    assert not none.labels.any() and none.params["healthy"] and none.volume.meta["healthy"]


def test_sam2_hrf_masks_are_capped_like_the_classical_ones() -> None:
    import torch

    pytest.importorskip("sam2")
    from oct_wsss.propose.hrf_refine import MAX_AREA, Crop, sam_region
    from oct_wsss.propose.sam2_backend import Sam2Backend

    torch.set_num_threads(1)
    torch.manual_seed(0)
    backend = Sam2Backend("sam2.1_hiera_t", allow_random=True, device="cpu")
    image = np.random.default_rng(0).random((96, 128)).astype(np.float32)
    peak = (48, 64)
    crop = Crop.around(peak, 72, image.shape)
    raw = backend.box(crop.take(image), (32.0, 32.0, 40.0, 40.0)).mask
    assert raw.sum() > MAX_AREA  # random weights: SAM 2 returns a mask far larger than any focus
    mask, score = sam_region(backend, crop.take(image), peak, crop, 4)
    assert mask.shape == (72, 72) and 0 < mask.sum() <= MAX_AREA
    assert mask[peak[0] - crop.y0, peak[1] - crop.x0]  # shrunk to the box square around the peak, as classically


def test_readme_agrees_with_results_that_the_hrf_classifiers_learn_on_the_phantom() -> None:
    import re

    root = Path(__file__).resolve().parents[1]
    readme, results = (root / "README.md").read_text(), (root / "docs" / "results.md").read_text()
    assert "The CCT learns HRF presence" in results and "it\nlearns too" in results  # the MIL: results.md says so
    assert not re.search(r"do(es)? not (yet )?learn", readme)
    aurocs = re.findall(r"\*\*AUROC (0\.\d+)\*\*", results)[:2]  # test AUROC of the CCT, then the MIL
    assert len(aurocs) == 2 and all(a in readme for a in aurocs)


def test_mixed_size_message_counts_files_in_good_english(tmp_path: Path) -> None:
    import imageio.v3 as iio

    from oct_wsss.io import OctReadError

    iio.imwrite(tmp_path / "a.png", np.zeros((496, 536), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((496, 512), np.uint8))
    with pytest.raises(OctReadError) as tie:
        read_volume(tmp_path)
    assert "most are" not in str(tie.value) and "(1 files)" not in str(tie.value)  # one of each: no majority
    assert "a.png is 496x536" in str(tie.value) and "b.png is 496x512" in str(tie.value)
    iio.imwrite(tmp_path / "c.png", np.zeros((496, 512), np.uint8))
    with pytest.raises(OctReadError, match=r"most are 496x512 \(2 files\) but a.png is 496x536"):
        read_volume(tmp_path)


def test_a_refused_sam2_pickle_says_why_without_terminal_escapes(tmp_path: Path) -> None:
    import argparse

    import torch

    pytest.importorskip("sam2")
    from oct_wsss.checkpoint import CheckpointError
    from oct_wsss.propose.sam2_backend import Sam2Backend

    path = tmp_path / "sam2.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-4)}, path)  # a non-tensor global
    with pytest.warns(UserWarning, match="third-party pickle"), pytest.raises(CheckpointError) as err:
        Sam2Backend("sam2.1_hiera_t", path)
    message = str(err.value)
    assert "\x1b" not in message and "\033" not in message
    assert "refused" in message and "argparse.Namespace" in message


def test_evaluate_maps_truth_in_another_label_convention(tmp_path: Path, capsys) -> None:
    truth = _labels([[0, 9, 9, 3], [0, 5, 9, 0]])  # Duke's convention: 9 fluid, 1..8 retinal layers
    pred = _labels([[0, 7, 7, 0], [0, 0, 7, 7]])
    tifffile.imwrite(tmp_path / "t.tif", truth)  # write_labels only writes ontology ids
    write_labels(tmp_path / "p.tif", pred)
    args = ["evaluate", "--pred", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif")]
    assert main([*args, "--report", str(tmp_path / "r.json"), "--truth-map", "9:7"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    fluid = report["classes"]["fluid"]
    assert (fluid["tp"], fluid["fp"], fluid["fn"]) == (3, 1, 0)  # the layers (3, 5) are background, not PED/HRF
    assert report["truth_map"] == {"9": 7} and report["truth_values_to_background"] == [3, 5]
    assert report["classes"]["ped"]["truth_pixels"] == 0
    # comma-separated and repeated, keys or ids as targets
    assert main([*args, "--report", str(tmp_path / "r2.json"), "--truth-map", "9:fluid,3:ped", "--truth-map",
                 "5:hrf"]) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["truth_map"] == {"3": 3, "5": 5, "9": 7}
    capsys.readouterr()
    for bad, says in (("9-7", "SRC:DST"), ("9:8", "ontology"), ("9:cnv", "ontology"), ("x:7", "SRC:DST"),
                      ("-1:7", "SRC:DST"), ("300:7", "8-bit"),
                      ("9:7,9:1", "twice")):
        assert main([*args, f"--truth-map={bad}"]) == 2, bad
        err = capsys.readouterr().err
        assert says in err and "--truth-map" in err and "Traceback" not in err, (bad, err)


def test_a_synth_dataset_root_batches_its_volumes_not_its_csv_and_json(tmp_path: Path) -> None:
    from oct_wsss.cli.batch import batch_items
    from oct_wsss.synth.dataset import write_dataset

    root = write_dataset(tmp_path / "ds", 2, healthy_fraction=0.5, seed=1, n_bscans=2, height=64, width=48)
    assert {p.name for p in root.iterdir()} >= {"labels.csv", "generation.json"}
    assert is_batch(root) and [i.id for i in batch_items(root)] == ["synth_0000", "synth_0001"]
