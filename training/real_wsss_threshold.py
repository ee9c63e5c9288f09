"""A proposal threshold for real-wsss chosen from image-level labels only (issue 19: "pick thresholds on the phantom or
with image-level criteria"), checked leave-one-patient-out on the shared Duke patients.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_wsss_threshold.py --parents /work/runs/real-wsss/pu \
        [--json runs/real-wsss-threshold.json]
    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_wsss_threshold.py \
        --checkpoint src/oct_wsss/weights/real-wsss.safetensors        # the rule on all five patients' labels

The student's lesion threshold τ (``StudentProposer.threshold``: a lesion only where its probability reaches τ) is
chosen per fold on the fold's four training patients: a B-scan counts as "predicted fluid" when any pixel is
proposed SRF or IRF, and τ maximises the balanced accuracy of that against the B-scans' ``has_fluid`` labels (ties:
the larger τ; "argmax" is the proposer without τ). The held-out patient is then scored at the chosen τ against
grader 1's fluid masks, as ``real_wsss_lopo.py`` scores it. No pixel label is read to choose τ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from real_wsss_lopo import PATIENTS, counts, duke_rows, summary  # sibling script (training/ is on sys.path)

from oct_wsss.classes import IRF, SRF
from oct_wsss.propose.student import StudentProposer

#: candidate thresholds, most conservative first (None: argmax, the proposer's default)
TAUS = (None, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)


def fluid_maps(proposer: StudentProposer, images: list[np.ndarray]) -> dict:
    """τ -> per B-scan boolean map of proposed SRF or IRF."""
    probs = [proposer.probabilities([im])[0] for im in images]
    out = {}
    for tau in TAUS:
        proposer.threshold = tau
        out[tau] = [np.isin(proposer.labels(p[None])[0], (SRF, IRF)) for p in probs]
    return out


def balanced_accuracy(predicted: list[bool], labelled: list[bool]) -> float:
    p, y = np.array(predicted), np.array(labelled)
    sens = (p & y).sum() / max(1, y.sum())
    spec = (~p & ~y).sum() / max(1, (~y).sum())
    return float((sens + spec) / 2)


def choose(maps: dict, labelled: list[bool]) -> tuple[float | None, dict]:
    """The τ of highest image-level balanced accuracy (first, i.e. largest, on ties) and every τ's score."""
    scores = {str(t): balanced_accuracy([bool(m.any()) for m in maps[t]], labelled) for t in TAUS}
    best = max(TAUS, key=lambda t: (scores[str(t)], -TAUS.index(t)))
    return best, scores


def lopo(parents: Path) -> dict:
    rows = {p: duke_rows(p) for p in PATIENTS}
    result = {}
    for held in PATIENTS:
        proposer = StudentProposer.from_checkpoint(parents / held / "student.safetensors", device="cpu")
        train = [r for p in PATIENTS if p != held for r in rows[p]]
        tau, scores = choose(fluid_maps(proposer, [r["image"] for r in train]),
                             [r["has_fluid"] for r in train])  # the index's image-level label
        test = fluid_maps(proposer, [r["image"] for r in rows[held]])
        result[held] = {"tau": tau, "image_level": scores,
                        "argmax": [counts(m, r["label"] == 9) for m, r in zip(test[None], rows[held], strict=True)],
                        "chosen": [counts(m, r["label"] == 9) for m, r in zip(test[tau], rows[held], strict=True)]}
        print(held, "tau", tau, {k: round(v, 3) for k, v in scores.items()}, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=Path, help="real_wsss_lopo --runs folder (PARENTS/<patient>/student.safetensors)")
    ap.add_argument("--checkpoint", type=Path, help="choose τ for this checkpoint on all five patients' labels")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.checkpoint:
        rows = [r for p in PATIENTS for r in duke_rows(p)]
        proposer = StudentProposer.from_checkpoint(args.checkpoint, device="cpu")
        tau, scores = choose(fluid_maps(proposer, [r["image"] for r in rows]), [r["has_fluid"] for r in rows])
        print("tau", tau, scores)
        return
    result = lopo(args.parents)
    for way in ("argmax", "chosen"):
        s = summary([c for f in result.values() for c in f[way]])
        print(f"| {way} | {s['iou']:.1%} | {s['dsc_per_image']:.1%} | {s['precision']:.2f} | {s['recall']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
