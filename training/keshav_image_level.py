"""Image-level sanity check on ``keshav_fau_amd_oct/image_level_samples``: AMD vs macular hole, 11 B-scans.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/keshav_image_level.py \
        [--checkpoint src/oct_wsss/weights/real-student.safetensors] [--json runs/keshav-image-level.json]

No classifier in the project is trained for these two cohorts, so this is a check of whether simple, interpretable
features separate them at all, with leave-one-patient-out (9 patients; the two B-scans of a patient are held out
together). Features per B-scan (harmonised, ``preprocess.intensity``): the **foveal thickness ratio** (least tissue
thickness in the central half of the columns / median thickness: a macular hole thins or opens the centre), the
**dark fraction** of the tissue (pixels below the harmonised noise floor + 0.05: cysts, fluid, holes) and, with
``--checkpoint``, the real student's **drusen** and **fluid** fractions of the tissue. Each feature alone is scored
by AUROC (AMD positive, direction fixed beforehand: AMD has the higher thickness ratio and drusen fraction); the
tiny classifier is a nearest-centroid rule on the standardised features, fitted on the other patients in each fold.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import io

from oct_wsss.classes import DRUSEN, FLUID
from oct_wsss.evaluate import roc_auc
from oct_wsss.preprocess.intensity import FLOOR, harmonise, tissue_mask

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "keshav_fau_amd_oct"


def thickness_ratio(mask: np.ndarray) -> float:
    """Least (smoothed) tissue thickness over the central half of the columns holding tissue / the median one."""
    thick = ndi.uniform_filter1d(mask.sum(axis=0).astype(float), 9)
    cols = np.flatnonzero(thick > 0)
    if cols.size < 8:
        return 0.0
    a, b = cols[0] + (cols[-1] - cols[0]) // 4, cols[-1] - (cols[-1] - cols[0]) // 4
    return float(thick[a:b + 1].min() / max(np.median(thick[cols]), 1.0))


def features(path: Path, student: object | None) -> dict[str, float]:
    image = io.imread(path)
    image = image if image.ndim == 2 else image[..., 0]
    unit = harmonise(image)
    mask = tissue_mask(unit)
    out = {"thickness_ratio": thickness_ratio(mask),
           "dark_fraction": float((unit[mask] < FLOOR + 0.05).mean()) if mask.any() else 0.0}
    if student is not None:
        labels = student.predict(image)
        n = max(int(mask.sum()), 1)
        out.update(drusen_fraction=float((labels == DRUSEN).sum() / n),
                   fluid_fraction=float((labels == FLUID).sum() / n))
    return out


def nearest_centroid_lopo(x: np.ndarray, y: np.ndarray, groups: list[str]) -> np.ndarray:
    """Out-of-fold scores: distance to the macular-hole centroid minus distance to the AMD centroid (standardised on
    the training patients of each fold)."""
    scores = np.zeros(len(y))
    for g in sorted(set(groups)):
        test = np.array([p == g for p in groups])
        train = ~test
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        z = (x - mu) / sd
        amd, mh = z[train & (y == 1)].mean(0), z[train & (y == 0)].mean(0)
        scores[test] = np.linalg.norm(z[test] - mh, axis=1) - np.linalg.norm(z[test] - amd, axis=1)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--checkpoint", type=Path, help="a student checkpoint whose drusen / fluid fractions are features")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    student = None
    if args.checkpoint:
        from oct_wsss.propose.student import StudentProposer
        student = StudentProposer.from_checkpoint(args.checkpoint, device="cpu")
    with open(args.root / "image_level_samples" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([r["image_level_label"] == "AMD" for r in rows], int)
    groups = [r["patient_id"] for r in rows]
    feats = [features(args.root / r["file"], student) for r in rows]
    names = list(feats[0])
    x = np.array([[f[k] for k in names] for f in feats])
    sign = {"thickness_ratio": 1, "dark_fraction": -1, "drusen_fraction": 1, "fluid_fraction": 1}
    single = {k: roc_auc(sign[k] * x[:, i], y) for i, k in enumerate(names)}
    lopo = nearest_centroid_lopo(x, y, groups)
    result = {"n_bscans": len(y), "n_amd": int(y.sum()), "n_patients": len(set(groups)), "features": names,
              "per_bscan": [{"label": r["image_level_label"], **f} for r, f in zip(rows, feats, strict=True)],
              "auroc_single_feature": single, "lopo_nearest_centroid": {
                  "auroc": roc_auc(lopo, y), "accuracy": float(((lopo > 0).astype(int) == y).mean())}}
    print(f"{len(y)} B-scans ({y.sum()} AMD, {len(y) - y.sum()} macular hole), {len(set(groups))} patients")
    for k, v in single.items():
        print(f"AUROC {k} alone: {v:.3f}")
    print(f"leave-one-patient-out nearest centroid on {names}: AUROC {result['lopo_nearest_centroid']['auroc']:.3f}, "
          f"accuracy {result['lopo_nearest_centroid']['accuracy']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
