"""Lesions from layers (``--method layers``) against the phantom student on unseen phantom volumes, per class: can
the layer rules take drusen, PED or EZ disruption over from the student (a class-wise composition, issue 19)?

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/phantom_layer_lesions.py --seeds 6000-6003 \
        [--student src/oct_wsss/weights/demo-student.safetensors] [--layers src/oct_wsss/weights/layers.safetensors]

Volumes as ``phantom_student_eval.py`` draws them (12 B-scans, random device look, the recipe's prevalence), whole,
so that the layer rules get the volume's physical scale; pooled IoU per class present, each method on its own classes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from phantom_student_eval import per_class, phantom_volume  # sibling script (training/ is on sys.path)

from oct_wsss.propose import load_proposer

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "oct_wsss" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="6000-6003")
    ap.add_argument("--student", default=str(WEIGHTS / "demo-student.safetensors"))
    ap.add_argument("--layers", default=str(WEIGHTS / "layers.safetensors"))
    args = ap.parse_args()
    lo, hi = map(int, args.seeds.split("-"))
    student = load_proposer("student", args.student, device="cpu")
    layers = load_proposer("layers", args.layers, device="cpu")
    truths, by_student, by_layers = [], [], []
    for seed in range(lo, hi + 1):
        case = phantom_volume(seed)
        truths += list(case.labels)
        by_student += [student.predict(b) for b in case.volume.data]
        by_layers += [r.labels for r in layers.run(case.volume, range(len(case.volume.data)))]
    print(json.dumps({"seeds": args.seeds, "student": per_class(truths, by_student),
                      "layers": per_class(truths, by_layers)}, indent=1, default=float))


if __name__ == "__main__":
    main()
