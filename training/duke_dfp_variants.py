"""Why DFP's Duke pseudo labels were empty: the per-fold DFP networks of ``training/duke_real.py`` reloaded (their
resumable state; no training) and scored with and without feature propagation.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/duke_dfp_variants.py --run runs/duke-real
    OMP_NUM_THREADS=2 PYTHONPATH=src python training/duke_dfp_variants.py --run /work/runs/dfp-unet --size 256 \
        --backbone unet --width 12 --intensity harmonised --init src/oct_wsss/weights/demo-student.safetensors

For each fold: the largest soft-label value on the held-out patient's fluid B-scans (0 = an empty soft label), the
threshold chosen on the validation patient's masks, and pooled scores of ``dfp`` (propagation with the empty-label
guard, the proposer's default), ``dfp_noguard`` (propagation alone, ``fallback=False``) and ``saliency`` (the
min-max saliency M alone, propagation off) with the image-level labels given, plus ``dfp_proposals`` (guard on, the
classifier deciding). Without RUN's DFP states it trains them first (about 1-2 min per fold on 2 cores).
Writes RUN/dfp-variants.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from duke_real import DATA, dfp_labels, scores  # the sibling script (training/ is on sys.path when run as a file)

from oct_wsss.classes import FLUID
from oct_wsss.explain.propagation import PropagationParams
from oct_wsss.models.dfp import DfpConfig
from oct_wsss.propose.dfp import DfpProposer, dfp_checkpoint
from oct_wsss.training.data import patient_folds, patient_split
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.dfp import DfpTrainConfig, train_dfp
from oct_wsss.training.dfp_recipe import choose_threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/duke-real"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--dfp-epochs", type=int, default=15, help="the epochs the run trained (its state is reused)")
    ap.add_argument("--backbone", default="resnet18", help="resnet18 (section 1) or unet (the student's encoder)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--intensity", default="unit", help="unit (section 1) or harmonised (the phantom student's)")
    ap.add_argument("--init", help="a student checkpoint whose U-Net encoder starts the unet backbone")
    args = ap.parse_args()
    folds = patient_folds(load_dataset({"layout": "duke", "root": str(args.data)}).samples, 5, seed=0)
    names = ("dfp", "dfp_noguard", "saliency", "dfp_proposals")
    truths, preds, per_fold = [], {n: [] for name in names for n in (name, f"{name}_fixed")}, []
    size = (args.size,) * 2
    for i, (train, test) in enumerate(folds):
        fit, val = patient_split(train, 0.25, seed=i)
        cfg = DfpConfig(backbone=args.backbone, n_classes=1, image_channels=1, width=args.width)
        opts = DfpTrainConfig(epochs=args.dfp_epochs, batch_size=8, optimizer={"name": "adam", "lr": 1e-3},
                              augment={"rotation": 10}, intensity=args.intensity, init=args.init)
        net = train_dfp(fit, val, (FLUID,), cfg, opts, size, args.run / f"fold{i}" / "dfp",
                        device="cpu", seed=i, log=lambda _m: None).net  # resumes after the last epoch: no training
        row = {"fold": i, "test": sorted({s.patient for s in test})}
        dfp_checkpoint(net, (FLUID,), size, threshold=0.5, propagation=PropagationParams(), intensity=args.intensity,
                       training={"data": "duke shared, has_fluid only", "fit_patients": len({s.patient for s in fit}),
                                 "init": args.init and Path(args.init).name}).save(
            args.run / f"dfp-{'+'.join(row['test'])}.safetensors")
        truths += [s.load_mask() for s in test]
        for name in names:
            proposer = DfpProposer(net, (FLUID,), size, device="cpu", propagate=name != "saliency",
                                   fallback=name != "dfp_noguard", intensity=args.intensity)
            fluid = [s for s in test if s.labels]
            soft = [proposer.scores_and_fallbacks([s.load_image()], np.array([[True]])) for s in fluid]
            row[f"{name}_max_soft"] = float(max(float(x[0].max()) for x in soft)) if soft else None
            row[f"{name}_fallbacks"] = int(sum(int(x[2].sum()) for x in soft))
            proposer.threshold = choose_threshold(proposer, val, 0.5, True)
            row[f"{name}_threshold"] = proposer.threshold
            preds[name] += dfp_labels(proposer, test, name != "dfp_proposals")
            proposer.threshold = 0.5
            preds[f"{name}_fixed"] += dfp_labels(proposer, test, name != "dfp_proposals")
        per_fold.append(row)
        print(row, flush=True)
    pooled = {name: scores(truths, p) for name, p in preds.items()}
    for name, s in pooled.items():
        print(name, json.dumps(s, default=float))
    (args.run / "dfp-variants.json").write_text(json.dumps({"per_fold": per_fold, "pooled": pooled}, indent=2,
                                                           default=float))


if __name__ == "__main__":
    main()
