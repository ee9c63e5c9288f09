"""The grader loop after real-wsss (issue 19, the third stage): each Duke fold's adapted student fine-tuned on k
corrected B-scans of its four training patients (``CorrectionStore.accept``, then the code ``oct-wsss finetune``
runs) and scored on the held-out patient.

    OMP_NUM_THREADS=2 PYTHONPATH=src python training/real_wsss_grader_loop.py --parents /work/runs/real-wsss/pu \
        --out /work/runs/real-wsss/grader [--ks 5,10,20,44] [--lr 1e-3] [--steps 30] [--folds 0,1,2,3,4] [--table]

The simulated grader draws Duke's fluid (grader 1, label 9) and, as a grader in this plugin would, marks each
connected fluid region SRF or IRF: the class to which the parent student gives more probability over the region
(Duke marks fluid without the split; the score counts SRF or IRF as fluid, so the split only decides what is
taught). Every other pixel is background (Duke marks no other lesion in these DME eyes). The k corrected B-scans
are the first k of a permutation of the fold's 44 training B-scans seeded by the fold. Fine-tuning gives every k
about ``--steps`` optimiser steps (batch 8) at ``--lr``, the schedule docs/results-real.md §2 found to move a student,
with no corrections held out. k = 0 is the parent itself. Per-fold JSON under ``--out``; a rerun skips finished folds.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from real_wsss_lopo import PATIENTS, duke_rows, score, summary  # sibling script (training/ is on sys.path)
from skimage.measure import label

from oct_wsss.classes import IRF, SRF
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training.finetune import DEFAULTS, finetune


def graded_mask(proposer: StudentProposer, image: np.ndarray, fluid: np.ndarray) -> np.ndarray:
    """Duke's fluid as ontology ids: each connected region SRF or IRF by the parent's summed probability."""
    probs = proposer.probabilities([image])[0]
    p_srf, p_irf = probs[1 + proposer.classes.index(SRF)], probs[1 + proposer.classes.index(IRF)]
    regions = label(fluid, connectivity=2)
    mask = np.zeros(fluid.shape, np.uint8)
    for r in range(1, regions.max() + 1):
        inside = regions == r
        mask[inside] = SRF if p_srf[inside].sum() > p_irf[inside].sum() else IRF
    return mask


def run_fold(fold: int, parent: Path, out: Path, ks: list[int], lr: float, steps: int) -> dict:
    """Counts per held-out B-scan for k = 0 (the parent) and each k."""
    held = PATIENTS[fold]
    train = [(p, i, r) for p in PATIENTS if p != held for i, r in enumerate(duke_rows(p))]
    order = np.random.default_rng(fold).permutation(len(train))
    proposer = StudentProposer.from_checkpoint(parent, device="cpu")
    rows = duke_rows(held)
    result = {"held_out": held, "parent": str(parent), "k": {"0": score(parent, rows, None)["raw"]}}
    for k in ks:
        store = CorrectionStore(out / f"fold{fold}" / f"store-{k}")
        if not store.corrections():
            for j in order[:k]:
                patient, index, r = train[j]
                mask = graded_mask(proposer, r["image"], r["label"] == 9)
                store.accept(patient, index, mask, image=r["image"], grader="Duke grader 1, SRF/IRF by the parent")
        epochs = math.ceil(steps / max(1, k // 8))
        config = replace(DEFAULTS, epochs=epochs, lr=lr)
        ckpt, _ = finetune(store.root, parent, out_dir=out / f"fold{fold}" / f"ckpt-{k}", config=config,
                           held_out=0.0, device="cpu", seed=fold, log=lambda m: print(m, flush=True))
        result["k"][str(k)] = score(ckpt, rows, None)["raw"]
        print(f"fold {fold} ({held}) k={k}: {summary(result['k'][str(k)])}", flush=True)
    return result


def table(out: Path) -> None:
    """Pooled over the folds found: fluid IoU, per-image DSC, precision, recall per k."""
    folds = [json.loads(p.read_text()) for p in sorted(out.glob("fold_*.json"))]
    print(f"folds: {[f['held_out'] for f in folds]}")
    print("| corrected B-scans k | fluid IoU | per-image DSC | precision | recall |\n|---|---|---|---|---|")
    for k in folds[0]["k"] if folds else ():
        s = summary([c for f in folds for c in f["k"][k]])
        print(f"| {k} | {s['iou']:.1%} | {s['dsc_per_image']:.1%} | {s['precision']:.2f} | {s['recall']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=Path, required=True, help="real_wsss_lopo --runs folder: PARENTS/<patient>/"
                    "student.safetensors is each fold's adapted student")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ks", default="5,10,20,44")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--table", action="store_true", help="only print the table of the folds already run")
    args = ap.parse_args()
    if not args.table:
        args.out.mkdir(parents=True, exist_ok=True)
        for fold in (int(f) for f in args.folds.split(",")):
            target = args.out / f"fold_{fold}.json"
            if not target.exists():
                parent = args.parents / PATIENTS[fold] / "student.safetensors"
                result = run_fold(fold, parent, args.out, [int(k) for k in args.ks.split(",")], args.lr, args.steps)
                target.write_text(json.dumps(result))
    table(args.out)


if __name__ == "__main__":
    main()
