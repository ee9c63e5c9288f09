"""The Duke grader loop (docs/results-real.md, experiment b) again with another fine-tuning schedule, reusing the
per-fold students and correction stores that ``training/duke_real.py`` wrote.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/duke_grader_loop.py --run runs/duke-real --tag lr1e-3 \
        --lr 1e-3 --steps 30 --folds 0 1 2 3 4 [--collect --plot docs/images/duke-grader-loop.png]

For each fold and k the store ``RUN/fold<i>/store-<k>`` (ground-truth masks of k training B-scans, written through
``CorrectionStore.accept``) is fine-tuned from ``RUN/fold<i>/student.safetensors`` with ``oct-wsss finetune --lr LR
--epochs E``, E chosen so that every k gets about STEPS optimiser steps (batch 8, last partial batch dropped), and
scored on the fold's held-out patient; per-image confusion matrices go to
``RUN/grader-<tag>/fold<i>.npz``. ``--collect`` pools every fold present into ``grader-loop.csv`` (and the plot).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from oct_wsss.classes import FLUID
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training.data import patient_folds
from oct_wsss.training.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "duke_dme_chiu2015"


def finetuned(fold_dir: Path, k: str, out: Path, args: argparse.Namespace, fold: int) -> Path:
    """The checkpoint ``oct-wsss finetune`` writes for store-<k> (k = 0: the parent itself)."""
    parent = fold_dir / "student.safetensors"
    if k == "0":
        return parent
    n = len(CorrectionStore(fold_dir / f"store-{k}").corrections())
    epochs = math.ceil(args.steps / max(1, n // 8))
    target = out / f"fold{fold}-ckpt-{k}"
    for old in target.glob("*.safetensors"):
        old.unlink()
    cmd = [sys.executable, "-m", "oct_wsss.cli", "finetune", "--store", str(fold_dir / f"store-{k}"), "--from",
           str(parent), "--out", str(target), "--held-out", "0", "--device", "cpu", "--epochs", str(epochs),
           "--lr", str(args.lr), "--seed", str(fold)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return next(target.glob("*.safetensors"))


def collect(out: Path, counts: list[str], plot_path: Path | None) -> None:
    """Pool the folds' confusion matrices per k; write grader-loop.csv and the plot."""
    from duke_real import plot  # the sibling script's figure (training/ is on sys.path when run as a file)

    files = sorted(out.glob("fold*.npz"))
    rows = []
    for k in counts:
        cms = np.concatenate([np.load(f)[f"k{k}"] for f in files])
        lesion = segmentation_scores(cms, (FLUID,), lesion_images_only=True)
        every = segmentation_scores(cms, (FLUID,))
        rows.append({"k": k, "dice_per_image": lesion.classes["fluid"].dice_per_image,
                     "dice_pooled": every.classes["fluid"].dice_pooled, "fluid_iou": every.classes["fluid"].iou,
                     "miou": lesion.miou, "folds": len(files)})
        print(rows[-1])
    with open(out / "grader-loop.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if plot_path:
        plot(rows, plot_path, f"Duke DME, leave-one-patient-out ({len(files)} of 5 folds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/duke-real"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--tag", default="lr1e-3")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per fine-tune (about)")
    ap.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--counts", nargs="+", default=["0", "5", "10", "20", "all"])
    ap.add_argument("--collect", action="store_true")
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    out = args.run / f"grader-{args.tag}"
    out.mkdir(parents=True, exist_ok=True)
    folds = patient_folds(load_dataset({"layout": "duke", "root": str(args.data)}).samples, 5, seed=0)
    for i in args.folds:
        test = folds[i][1]
        truths = [s.load_mask() for s in test]
        cms = {}
        for k in args.counts:
            student = StudentProposer.from_checkpoint(finetuned(args.run / f"fold{i}", k, out, args, i), device="cpu")
            cms[f"k{k}"] = image_confusions(truths, [student.predict(s.load_image()) for s in test])
            print(f"fold {i} k={k} done", flush=True)
        np.savez(out / f"fold{i}.npz", **cms)
    if args.collect:
        collect(out, args.counts, args.plot)


if __name__ == "__main__":
    main()
