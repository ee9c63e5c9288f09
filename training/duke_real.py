"""Duke DME real-data experiments of docs/results-real.md: weak supervision (a) and the grader loop (b).

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/duke_real.py --run runs/duke-real \
        [--data ../shared/data/duke_dme_chiu2015] [--counts 0 5 10 20 all] [--folds 5]

Patient-level cross-validation inside the shared Duke patients: each fold holds one patient out. Per fold:
(a) DFP (ResNet-18 at width 16, CPU-sized) trains on the other patients' image-level ``has_fluid`` labels only (one
of them is validation: it picks the epoch-free soft-label threshold on its masks, as AGM sweeps alpha on its
validation set); its fluid pseudo labels of the held-out patient are scored with labels given (pseudo labels, AGM's
Table 1 protocol) and with the classifier deciding (proposals).
(b) a U-Net student trains on the DFP pseudo labels of the training patients (k = 0), then for each k the ground-truth
masks of k training B-scans (seeded order) go into a fresh CorrectionStore through ``CorrectionStore.accept``,
``oct-wsss finetune`` continues the student on them, and the new checkpoint is scored on the held-out patient.
Writes RUN/results.json, RUN/grader-loop.csv and (with --plot) docs/images/duke-grader-loop.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import FLUID
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.models.dfp import DfpConfig
from oct_wsss.propose.dfp import DfpProposer
from oct_wsss.propose.pseudo import pseudo_labels
from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training.data import Sample, patient_folds, patient_split
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.dfp import DfpTrainConfig, train_dfp
from oct_wsss.training.dfp_recipe import choose_threshold
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
from oct_wsss.training.student_data import PSEUDO, Target

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "duke_dme_chiu2015"
AGM_DUKE = {"fluid_iou": 0.3006, "dice_per_image": 0.4017, "miou": 0.6417}  # AGM paper, Table 1, Duke row


def scores(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, Any]:
    """Fluid IoU (pooled), per-image DSC and mIoU with background, on the B-scans whose truth holds fluid (AGM's
    protocol) and on all B-scans."""
    out = {}
    for name, lesion_only in (("fluid_bscans", True), ("all_bscans", False)):
        s = segmentation_scores(image_confusions(truths, preds), (FLUID,), lesion_images_only=lesion_only)
        f = s.classes["fluid"]
        out[name] = {"fluid_iou": f.iou, "dice_pooled": f.dice_pooled, "dice_per_image": f.dice_per_image,
                     "miou": s.miou, "n_bscans": s.n_images_scored}
    return out


def dfp_labels(proposer: DfpProposer, samples: list[Sample], given: bool) -> list[np.ndarray]:
    """DFP fluid label maps at native size; ``given``: the image-level labels decide which B-scans get fluid."""
    out = []
    for s in samples:
        present = np.array([[FLUID in s.labels]]) if given else None
        soft, _ = proposer.scores([s.load_image()], present)
        out.append(pseudo_labels(soft, proposer.classes, proposer.threshold)[0])
    return out


def _array(path: Path) -> np.ndarray:
    return np.load(path)


def run_fold(fold: int, train: list[Sample], test: list[Sample], args: argparse.Namespace, run: Path,
             log: Any) -> dict[str, Any]:
    """One fold: DFP (a), student and grader loop (b); predictions on the held-out patient."""
    fdir = run / f"fold{fold}"
    size = (args.size, args.size)
    fit, val = patient_split(train, 0.25, seed=fold)
    cfg = DfpConfig(backbone="resnet18", n_classes=1, image_channels=1, width=16)
    opts = DfpTrainConfig(epochs=args.dfp_epochs, batch_size=8, optimizer={"name": "adam", "lr": 1e-3},
                          augment={"rotation": 10})
    t0 = time.time()
    dfp = train_dfp(fit, val, (FLUID,), cfg, opts, size, fdir / "dfp", device="cpu", seed=fold,
                    log=lambda _m: None)
    proposer = DfpProposer(dfp.net, (FLUID,), size, device="cpu")
    proposer.threshold = choose_threshold(proposer, val, 0.5, True)
    log(f"fold {fold}: DFP trained in {time.time() - t0:.0f} s, threshold {proposer.threshold:.2f}")
    truths = [s.load_mask() for s in test]
    preds = {"dfp_pseudo_labels": dfp_labels(proposer, test, True), "dfp_proposals": dfp_labels(proposer, test, False)}
    # (b) student on DFP pseudo labels of every training patient (image labels given), then the grader loop
    pseudo_dir = fdir / "pseudo"
    pseudo_dir.mkdir(parents=True, exist_ok=True)
    targets = []
    for s, label in zip(train, dfp_labels(proposer, train, True), strict=True):
        path = pseudo_dir / f"{s.patient}_{s.bscan:02d}.npy"
        np.save(path, label)
        targets.append(Target(s.load_image, partial(_array, path), 1.0, PSEUDO, (s.volume, s.bscan)))
    t0 = time.time()
    net, info = train_student(targets, (FLUID,), size, {"arch": "unet", "width": 16, "depth": 4},
                              StudentTrainConfig(epochs=args.student_epochs, batch_size=8, lr=3e-3),
                              fdir / "student-work", device="cpu", seed=fold, log=lambda _m: None)
    parent = student_checkpoint(net, (FLUID,), size, training={"data": "duke shared, DFP pseudo labels",
                                                               "fold": fold}).save(fdir / "student.safetensors")
    log(f"fold {fold}: student trained in {time.time() - t0:.0f} s")
    order = np.random.default_rng(fold).permutation(len(train))
    for k in args.counts:
        n = len(train) if k == "all" else int(k)
        ckpt = parent
        if n:
            store = CorrectionStore(fdir / f"store-{k}")
            if not store.corrections():
                for i in order[:n]:
                    s = train[int(i)]
                    store.accept(s.volume, s.bscan, s.load_mask(), image=s.load_image(), grader="ground truth")
            out = fdir / f"ckpt-{k}"
            for old in out.glob("*.safetensors"):
                old.unlink()
            cmd = [sys.executable, "-m", "oct_wsss.cli", "finetune", "--store", str(store.root), "--from",
                   str(parent), "--out", str(out), "--held-out", "0", "--device", "cpu", "--epochs",
                   str(args.finetune_epochs), "--seed", str(fold)]
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            ckpt = next(out.glob("*.safetensors"))
        student = StudentProposer.from_checkpoint(ckpt, device="cpu")
        preds[f"student_k{k}"] = [student.predict(s.load_image()) for s in test]
        log(f"fold {fold}: k={k} scored")
    return {"truths": truths, "preds": preds, "threshold": proposer.threshold,
            "dfp_history": dfp.history[-1] if dfp.history else {}, "student_losses": info["losses"][-1:]}


def plot(rows: list[dict[str, Any]], path: Path, title: str = "Duke DME, leave-one-patient-out (5 patients)") -> None:
    """Dice of the fine-tuned student on held-out patients against the number of corrected B-scans."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for key, label in (("dice_per_image", "per-image DSC (fluid B-scans)"), ("dice_pooled", "pooled Dice")):
        ax.plot(x, [r[key] for r in rows], "o-", label=label)
    ax.set_xticks(x, [str(r["k"]) for r in rows])
    ax.set_xlabel("corrected B-scans from the training patients (k)")
    ax.set_ylabel("fluid Dice, held-out patients")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/duke-real"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--counts", nargs="+", default=["0", "5", "10", "20", "all"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dfp-epochs", type=int, default=20)
    ap.add_argument("--student-epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--plot", type=Path, help="write the grader-loop figure here (PNG)")
    args = ap.parse_args()
    args.run.mkdir(parents=True, exist_ok=True)
    ds = load_dataset({"layout": "duke", "root": str(args.data)})
    folds = patient_folds(ds.samples, args.folds, seed=0)

    def log(msg: str) -> None:
        print(msg, flush=True)

    results = [run_fold(i, train, test, args, args.run, log) for i, (train, test) in enumerate(folds)]
    truths = [t for r in results for t in r["truths"]]
    variants = list(results[0]["preds"])
    pooled = {v: scores(truths, [p for r in results for p in r["preds"][v]]) for v in variants}
    per_fold = [{v: scores(r["truths"], r["preds"][v]) for v in variants} for r in results]
    summary = {"data": str(args.data), "n_bscans": len(truths), "folds": [sorted({s.patient for s in te})
                                                                         for _, te in folds],
               "settings": {k: str(v) for k, v in vars(args).items()}, "agm_paper_duke": AGM_DUKE,
               "thresholds": [r["threshold"] for r in results], "pooled": pooled, "per_fold": per_fold}
    (args.run / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    rows = []
    for k in args.counts:
        s = pooled[f"student_k{k}"]
        rows.append({"k": k, "dice_per_image": s["fluid_bscans"]["dice_per_image"],
                     "dice_pooled": s["all_bscans"]["dice_pooled"], "fluid_iou": s["all_bscans"]["fluid_iou"],
                     "miou": s["fluid_bscans"]["miou"]})
    with open(args.run / "grader-loop.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for v in variants:
        a, b = pooled[v]["fluid_bscans"], pooled[v]["all_bscans"]
        log(f"{v:20s} fluid-B-scans: IoU {a['fluid_iou']:.4f} DSC/img {a['dice_per_image']:.4f} mIoU "
            f"{a['miou']:.4f} | all: IoU {b['fluid_iou']:.4f} pooled Dice {b['dice_pooled']:.4f}")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
