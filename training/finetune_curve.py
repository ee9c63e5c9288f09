"""The fine-tuning curve of docs/results.md: student mIoU on the test split against the number of corrections.

    python training/finetune_curve.py [--run runs/student-synth] [--counts 0 12 24 48] [--epochs 10]

Ground-truth masks of training B-scans that hold a lesion stand in for a grader's corrections (the recipe's classes;
other lesions count as background, as the student cannot predict them): for each count N the
first N of them (a seeded shuffle) go into a fresh CorrectionStore, ``oct-wsss finetune`` continues the recipe's
student on them, and the new checkpoint is scored on the test split, the same B-scans the recipe scored.
Writes RUN/finetune-curve.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from oct_wsss.propose.student import StudentProposer
from oct_wsss.store import CorrectionStore
from oct_wsss.training import Recipe
from oct_wsss.training.finetune import DEFAULTS, finetune
from oct_wsss.training.student_recipe import compare_on_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/student-synth"))
    ap.add_argument("--counts", type=int, nargs="+", default=[0, 12, 24, 48])
    ap.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    recipe = Recipe.from_dict(json.loads((args.run / "recipe.json").read_text()), args.run / "recipe.json")
    train, _, test = recipe.splits()
    pool = [s for s in train if np.isin(s.load_mask(), recipe.classes).any()]
    order = np.random.default_rng(recipe.seed).permutation(len(pool))
    parent = args.run / "student.safetensors"
    rows = []
    for n in args.counts:
        if n == 0:
            ckpt = parent
        else:
            store = CorrectionStore(args.run / f"curve-store-{n}")
            if not store.corrections():
                for i in order[:n]:
                    s = pool[int(i)]
                    mask = s.load_mask()  # a grader correcting this student's classes: other lesions are background
                    mask = np.where(np.isin(mask, recipe.classes), mask, 0).astype(np.uint8)
                    store.accept(s.volume, s.bscan, mask, image=s.load_image(), grader="ground truth")
            config = replace(DEFAULTS, epochs=args.epochs)
            ckpt, _ = finetune(store.root, parent, out_dir=store.root / "checkpoints", config=config,
                               held_out=0.0, device=args.device, seed=recipe.seed, log=lambda _m: None)
        report = compare_on_test(StudentProposer.from_checkpoint(ckpt, device=args.device), test, None,
                                 recipe.classes)["student"]["all_bscans"]
        rows.append({"corrections": n, "miou": round(report["miou"], 4),
                     "miou_lesions": round(report["miou_lesions"], 4),
                     **{f"iou_{k}": round(report["classes"][k]["iou"] or 0.0, 4)
                        for k in ("srf", "irf", "ped") if k in report["classes"]}})
        print(rows[-1], flush=True)
    with open(args.run / "finetune-curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    (args.run / "finetune-curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
