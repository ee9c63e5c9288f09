"""Tiny real-data checks of docs/results-real.md: a Duke-trained fluid student on other real sets, plus a figure.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_transfer.py --checkpoint CKPT --out runs/real-transfer \
        [--figure docs/images/real-transfer.png]

Sets (all under ../shared/data, read by path): ``sjtu_srf_fewshot`` eye A (11 B-scans; SRF only is labelled, its
intraretinal cysts are not, so it is scored SRF vs rest: predicted fluid counts as SRF and the unlabelled cysts count
against it) and ``keshav_fau_amd_oct/pixel_masks`` (3 B-scans; a binary fluid-like mask, scored as fluid); the Duke
B-scans with fluid get the baseline only (the student learnt from Duke). For each
set and predictor (the student; the dark-retina baseline) the truth and labels are written as
``OUT/<set>/<predictor>/{truth,pred}/<id>/labels.tif`` and scored with ``oct-wsss evaluate``; the report JSON lands
beside them. Prints one table row per set and predictor.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from oct_wsss.classes import FLUID, SRF
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.data import LabelledSet
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.real_eval import dark_retina_baseline, write_eval_set

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def manifest(rows: list[list[str]], path: Path) -> Path:
    """A manifest CSV (image, mask, patient, bscan, <class>) for the csv layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def sjtu(out: Path) -> LabelledSet:
    """SJTU eye A; its masks hold 1 = SRF, the ontology id of SRF, so they serve unchanged."""
    root = SHARED / "sjtu_srf_fewshot"
    with open(root / "index.csv", newline="") as f:
        rows = [[str(root / r["image"]), str(root / r["label"]), r["eye"], r["bscan_index"], r["has_srf"]]
                for r in csv.DictReader(f)]
    return load_dataset({"layout": "csv", "root": str(manifest([["image", "mask", "patient", "bscan", "srf"], *rows],
                                                                 out / "sjtu-manifest.csv"))})


def keshav(out: Path) -> LabelledSet:
    """Keshav pixel masks: 1 = fluid-like lesion, remapped to the ontology's fluid id (7) in a copy under OUT."""
    import imageio.v3 as iio

    root = SHARED / "keshav_fau_amd_oct"
    rows = [["image", "mask", "patient", "bscan", "fluid"]]
    with open(root / "pixel_masks" / "index.csv", newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            mask = np.asarray(iio.imread(root / r["mask"]))
            path = out / "keshav-masks" / f"{r['id']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, (mask > 0).astype(np.uint8) * np.uint8(FLUID))
            rows.append([str(root / r["image"]), str(path.resolve()), "keshav-shared-cluster", str(i),
                         str(int(mask.any()))])
    return load_dataset({"layout": "csv", "root": str(manifest(rows, out / "keshav-manifest.csv"))})


def evaluate(folders: dict[str, Path], report: Path, cls: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "oct_wsss.cli", "evaluate", "--pred", str(folders["pred"]), "--truth",
                    str(folders["truth"]), "--classes", cls, "--report", str(report)], check=True,
                   capture_output=True, env=env)
    return json.loads(report.read_text())["classes"][cls]


def figure(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of (title, B-scan, truth, prediction) as image | truth outline | prediction outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(9, 2.6 * len(panels)), dpi=100)
    for row, (title, image, truth, pred) in zip(np.atleast_2d(axes), panels, strict=True):
        for ax, overlay, name in zip(row, (None, truth, pred), ("B-scan", "ground truth", "student"), strict=True):
            ax.imshow(image, cmap="gray")
            if overlay is not None and overlay.any():
                ax.contour(overlay > 0, levels=[0.5], colors=["red" if name == "student" else "lime"],
                           linewidths=0.8)
            ax.set_title(f"{title}: {name}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a fluid student (e.g. from training/duke_real.py)")
    ap.add_argument("--out", type=Path, default=Path("runs/real-transfer"))
    ap.add_argument("--figure", type=Path, help="write the qualitative figure here (PNG)")
    args = ap.parse_args()
    student = StudentProposer.from_checkpoint(args.checkpoint, device="cpu")
    if FLUID not in student.classes:
        raise SystemExit(f"{args.checkpoint} does not predict fluid (classes {student.classes})")

    def as_srf(image: np.ndarray) -> np.ndarray:
        return np.where(student.predict(image) == FLUID, np.uint8(SRF), np.uint8(0))

    duke = load_dataset({"layout": "duke", "root": str(SHARED / "duke_dme_chiu2015")})
    sets = {"sjtu_srf_eyeA": (sjtu(args.out), "srf", (SRF,), as_srf, dark_retina_baseline(SRF)),
            "keshav_pixel_masks": (keshav(args.out), "fluid", (FLUID,), student.predict,
                                   dark_retina_baseline(FLUID)),
            "duke_fluid_bscans": (LabelledSet([s for s in duke.samples if s.labels], duke.classes), "fluid",
                                  (FLUID,), None, dark_retina_baseline(FLUID))}
    panels = []
    print("| set | predictor | B-scans | IoU | pooled Dice | per-image DSC |\n|---|---|---|---|---|---|")
    for name, (ds, cls, keep, learnt, baseline) in sets.items():
        for pname, predict in (("student", learnt), ("dark-retina baseline", baseline)):
            if predict is None:  # the student learnt from Duke: scoring it on Duke here would be leakage
                continue
            folder = args.out / name / pname.split()[0]
            written = write_eval_set(ds.samples, folder, predict, keep=keep)
            s = evaluate(written, folder / "report.json", cls)
            print(f"| {name} | {pname} | {len(ds.samples)} | {s['iou']:.4f} | {s['dice_pooled']:.4f} | "
                  f"{s['dice_per_image']:.4f} |", flush=True)
        for sample in ds.samples[:2] if learnt is not None else []:
            image = sample.load_image()
            truth = np.isin(sample.load_mask(), keep)
            panels.append((name, image, truth, learnt(image) > 0))
    if args.figure:
        figure(panels, args.figure)


if __name__ == "__main__":
    main()
