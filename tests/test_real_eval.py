"""``oct-wsss evaluate`` on a small slice of the real shared data (Duke DME, SJTU SRF): the metrics it writes equal
those recomputed here, independently, from the masks it read (plain numpy counts, no project metric code).

Skips, with the reason, only where ../shared/data is absent (the data are read by path, never copied).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oct_wsss.classes import FLUID, SRF
from oct_wsss.io import read_labels
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.real_eval import dark_retina_baseline, volume_id, write_eval_set

SRC = Path(__file__).resolve().parents[1] / "src"


def _evaluate(pred: Path, truth: Path, report: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-m", "oct_wsss.cli", "evaluate", "--pred", str(pred), "--truth",
                             str(truth), "--report", str(report), *extra], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text())


def _recount(root: Path, ids: list[str], cls: int) -> dict[str, float]:
    """Pooled IoU / Dice and per-image Dice of class ``cls`` from the written labels.tif files."""
    tp = fp = fn = 0
    per_image = []
    for vid in ids:
        t = read_labels(root / "truth" / vid / "labels.tif") == cls
        p = read_labels(root / "pred" / vid / "labels.tif") == cls
        a, b, c = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        tp, fp, fn = tp + a, fp + b, fn + c
        if t.any() or p.any():
            per_image.append(2 * a / (2 * a + b + c))
    return {"iou": tp / (tp + fp + fn), "dice_pooled": 2 * tp / (2 * tp + fp + fn),
            "dice_per_image": float(np.mean(per_image)), "tp": tp, "fp": fp, "fn": fn}


def test_evaluate_on_real_duke_slice_matches_recount(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "duke_dme_chiu2015"
    if not root.is_dir():
        pytest.skip(f"{root} is missing from the shared data")
    ds = load_dataset({"layout": "duke", "root": str(root)})
    chosen = [s for p in ("Subject_01", "Subject_07") for s in [x for x in ds.samples if x.patient == p][3:6]]
    assert any(s.labels for s in chosen) and len(chosen) == 6
    written = write_eval_set(chosen, tmp_path / "eval", dark_retina_baseline(FLUID))
    report = _evaluate(written["pred"], written["truth"], tmp_path / "report.json", "--classes", "fluid")
    ids = [volume_id(s) for s in chosen]
    assert sorted(report["volumes"]) == sorted(ids)
    expected = _recount(tmp_path / "eval", ids, FLUID)
    fluid = report["classes"]["fluid"]
    assert (fluid["tp"], fluid["fp"], fluid["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    assert expected["tp"] > 0 and expected["fp"] > 0  # a real, imperfect prediction: the check can fail
    for key in ("iou", "dice_pooled", "dice_per_image"):
        assert fluid[key] == pytest.approx(expected[key], abs=1e-9), key
    truth_px = sum(int((s.load_mask() == FLUID).sum()) for s in chosen)
    assert fluid["truth_pixels"] == truth_px  # the written truth is the adapter's mask, unchanged


def test_evaluate_on_real_sjtu_srf_vs_rest(shared_data: Path, tmp_path: Path) -> None:
    """SJTU eye A: SRF only is labelled (its cysts are not), so it is scored SRF vs rest."""
    root = shared_data / "sjtu_srf_fewshot"
    if not root.is_dir():
        pytest.skip(f"{root} is missing from the shared data")
    ds = load_dataset({"layout": "csv", "root": str(sjtu_manifest(root, tmp_path))})
    written = write_eval_set(ds.samples[:4], tmp_path / "eval", dark_retina_baseline(SRF), keep=(SRF,))
    report = _evaluate(written["pred"], written["truth"], tmp_path / "r.json", "--classes", "srf")
    expected = _recount(tmp_path / "eval", [volume_id(s) for s in ds.samples[:4]], SRF)
    srf = report["classes"]["srf"]
    assert srf["tp"] == expected["tp"] and srf["iou"] == pytest.approx(expected["iou"], abs=1e-9)
    assert srf["truth_pixels"] == sum(int((s.load_mask() == SRF).sum()) for s in ds.samples[:4]) > 0


def sjtu_manifest(root: Path, tmp: Path) -> Path:
    """A manifest CSV for the shared SJTU copy (its index.csv: image, label, eye, bscan_index, has_srf); its masks
    hold 1 = SRF, which is the ontology id of SRF, so they serve as masks unchanged."""
    import csv

    table = tmp / "manifest.csv"
    with open(root / "index.csv", newline="") as f, open(table, "w", newline="") as out:
        rows = list(csv.DictReader(f))
        writer = csv.writer(out)
        writer.writerow(["image", "mask", "patient", "bscan", "srf"])
        for r in rows:
            writer.writerow([root / r["image"], root / r["label"], r["eye"], r["bscan_index"], r["has_srf"]])
    return table
