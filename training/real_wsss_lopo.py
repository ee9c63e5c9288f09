"""Leave-one-patient-out on the shared Duke patients for the real-wsss recipe (issue 19): no real pixel label trains.

    OMP_NUM_THREADS=2 PYTHONPATH=src python training/real_wsss_lopo.py --init PHANTOM_STUDENT.safetensors \
        --runs /work/runs/real-wsss [--recipe training/real-wsss-native.yaml] \
        [--layer-folds /work/runs/layers] [--rounds 2] [--epochs 4] [--folds 0,1,2,3,4] \
        [--confidence '{"top_k": 200}'] [--cam /work/runs/dfp-unet/dfp-{held}.safetensors [--gate '{"moderate": 0.3}']]
        [--flip]

For each held-out patient the phantom student (``--init``; the table's ``phantom_only`` rows score it) is adapted by
``method: real-wsss`` on the other four patients' B-scans with their image-level ``has_fluid`` only (masks dropped
unread) and the SJTU B-scans with their ``has_srf`` only, beside a small phantom set. Confidence thresholds are the
recipe's defaults, fixed before any scoring; nothing is selected on Duke. Predicted SRF or IRF is scored as fluid
against grader 1, pooled IoU and mean per-image DSC (B-scans with fluid), three ways: raw; inside the retina of the
layer model of the same fold (``training/layers_train.py lopo``: trained on the other four patients' layer labels, a
separate model); inside Duke's own layer labels (an oracle, for reference only). Per-fold JSON under ``--runs``; a
rerun skips finished folds. ``--cam``: each fold's DFP classifier (``training/duke_dfp_variants.py``) or AGM
(``training/duke_agm_folds.py``), trained on the other patients' ``has_fluid`` and never the held-out one, gates the
weak targets (recipe key ``cam``, issue 19 item 2c). ``--flip`` also scores both models with flip averaging
(``StudentProposer(flip=True)``; rows ``*_flip``), for finished folds too, from their saved checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from oct_wsss.classes import IRF, SRF
from oct_wsss.propose.layers import retina_mask_from_bands
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.recipe import train_recipe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PATIENTS = ("Subject_01", "Subject_03", "Subject_04", "Subject_07", "Subject_09")  # layers_train's fold order
RECIPE = REPO / "training" / "real-wsss.yaml"  # the shipped recipe; each fold changes init, out, data root, real


def recipe(init: Path, held: str, runs: Path, rounds: int, epochs: int, confidence: dict | None = None,
           cam: dict | None = None, base: Path = RECIPE) -> dict:
    """The shipped recipe (``base``) for one fold: the held-out patient excluded, real paths absolute, run under
    ``runs`` (``confidence``: entries that replace the recipe's, e.g. {"top_k": 200}; ``cam``: the recipe's cam
    block)."""
    raw = yaml.safe_load(base.read_text())
    if cam:
        raw["cam"] = cam
    raw["confidence"] = {**(raw.get("confidence") or {}), **(confidence or {})}
    raw["data"]["root"] = str(runs / "phantom")
    for entry in raw["real"]:
        entry["root"] = str((REPO / entry["root"]).resolve())
    raw["real"][0]["exclude_patients"] = [held]
    raw["student"]["epochs"] = epochs
    return {**raw, "out": str(runs / held), "init": str(init), "rounds": rounds}


def duke_rows(held: str) -> list[dict]:
    """The held-out patient's B-scans in index order (the order of the layer folds' predictions)."""
    root = SHARED / "duke_dme_chiu2015"
    with open(root / "index.csv", newline="") as f:
        return [{"image": np.array(Image.open(root / r["image"]).convert("L")),
                 "label": np.array(Image.open(root / r["label"])), "has_fluid": r["has_fluid"] == "1"}
                for r in csv.DictReader(f) if r["subject"] == held]


def counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    return int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())


def score(ckpt: Path, rows: list[dict], layer_bands: list[np.ndarray] | None, flip: bool = False) -> dict:
    """Per-way (tp, fp, fn) per B-scan of predicted SRF or IRF against grader 1's fluid."""
    proposer = StudentProposer.from_checkpoint(ckpt, device="cpu", flip=flip)
    fluid = [j + 1 for j, c in enumerate(proposer.classes) if c in (SRF, IRF)]
    out: dict[str, list] = {"raw": [], "layer_retina": [], "oracle_retina": []}
    for i, r in enumerate(rows):
        pred = np.isin(proposer.probabilities([r["image"]])[0].argmax(0), fluid)
        truth = r["label"] == 9
        out["raw"].append(counts(pred, truth))
        out["oracle_retina"].append(counts(pred & (((r["label"] >= 1) & (r["label"] <= 7)) | truth), truth))
        if layer_bands is not None:
            out["layer_retina"].append(counts(pred & retina_mask_from_bands(layer_bands[i]), truth))
    return out


def whole_retina(rows: list[dict], layer_bands: list[np.ndarray] | None) -> dict:
    """A trivial reference: every retina pixel (of the fold's layer model) called fluid."""
    if layer_bands is None:
        return {}
    return {"layer_retina": [counts(retina_mask_from_bands(b), r["label"] == 9) for r, b in zip(rows, layer_bands,
                                                                                                 strict=True)]}


def summary(per_bscan: list[tuple[int, int, int]]) -> dict:
    tp, fp, fn = np.array(per_bscan).sum(0)
    ftp, ffp, ffn = np.array([c for c in per_bscan if c[0] + c[2] > 0]).sum(0)  # AGM's protocol: fluid B-scans
    dsc = [2 * a / (2 * a + b + c) for a, b, c in per_bscan if a + c > 0]
    return {"iou": tp / max(1, tp + fp + fn), "iou_fluid_bscans": ftp / max(1, ftp + ffp + ffn),
            "dsc_per_image": float(np.mean(dsc)) if dsc else None,
            "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="the start checkpoint; {held} stands for the held-out patient "
                    "(to continue each fold's own adapted student: RUNS/{held}/student.safetensors)")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="the real-wsss recipe each fold adapts "
                    "(default training/real-wsss.yaml; training/real-wsss-native.yaml for the native-resolution one)")
    ap.add_argument("--layer-folds", type=Path, default=Path("/work/runs/layers"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--confidence", type=json.loads, default=None, help='JSON replacing recipe confidence entries, '
                    'e.g. \'{"top_k": 200}\'')
    ap.add_argument("--cam", help="a DFP or AGM checkpoint per fold; {held} stands for the held-out patient")
    ap.add_argument("--gate", type=json.loads, default={}, help='JSON CamGate entries, e.g. \'{"moderate": 0.3}\'')
    ap.add_argument("--flip", action="store_true", help="also score with flip averaging (rows *_flip)")
    ap.add_argument("--table", action="store_true", help="only print the table of the folds already run")
    args = ap.parse_args()
    if args.table:
        return table(args.runs)
    args.runs.mkdir(parents=True, exist_ok=True)
    for k in (int(f) for f in args.folds.split(",")):
        held, out = PATIENTS[k], args.runs / f"fold_{k}.json"
        if out.exists():
            if args.flip:
                flipped(out, Path(args.init.format(held=held)).resolve(), args.runs / held / "student.safetensors",
                        args.layer_folds / f"fold_{k}_pred.npz")
            continue
        path = args.runs / f"recipe-{held}.yaml"
        init = Path(args.init.format(held=held)).resolve()
        cam = {"checkpoint": str(Path(args.cam.format(held=held)).resolve()), **args.gate} if args.cam else None
        path.write_text(yaml.safe_dump(recipe(init, held, args.runs, args.rounds, args.epochs, args.confidence, cam,
                                                   args.recipe)))
        adapted = train_recipe(path, log=lambda m: print(m, flush=True))
        folds = args.layer_folds / f"fold_{k}_pred.npz"
        bands = fold_bands(folds)
        rows = duke_rows(held)
        result = {"held_out": held, "phantom_only": score(init, rows, bands),
                  "real_wsss": score(adapted, rows, bands), "whole_retina": whole_retina(rows, bands)}
        out.write_text(json.dumps(result))
        if args.flip:
            flipped(out, init, adapted, folds)
    table(args.runs)


def fold_bands(path: Path) -> list[np.ndarray] | None:
    """The fold's layer-model bands per held-out B-scan, when ``training/layers_train.py lopo`` wrote them."""
    if not path.is_file():
        return None
    with np.load(path) as z:  # one open; layers_train writes arr_0, arr_1, ... in B-scan order
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def flipped(out: Path, init: Path, adapted: Path, folds: Path) -> None:
    """Add the flip-averaged rows to a finished fold's JSON (once)."""
    result = json.loads(out.read_text())
    if "real_wsss_flip" in result:
        return
    rows, bands = duke_rows(result["held_out"]), fold_bands(folds)
    result.update(phantom_only_flip=score(init, rows, bands, flip=True),
                  real_wsss_flip=score(adapted, rows, bands, flip=True))
    out.write_text(json.dumps(result))


def table(runs: Path) -> None:
    """Pooled over the folds found: a markdown table of both models, three ways."""
    folds = [json.loads(p.read_text()) for p in sorted(runs.glob("fold_*.json"))]
    print(f"folds: {[f['held_out'] for f in folds]}")
    print("| model | way | fluid IoU, all B-scans | fluid IoU, fluid B-scans | per-image DSC | precision | recall |\n"
          "|---|---|---|---|---|---|---|")
    for model in ("whole_retina", "phantom_only", "phantom_only_flip", "real_wsss", "real_wsss_flip"):
        for way in ("raw", "layer_retina", "oracle_retina"):
            rows = [c for f in folds for c in f.get(model, {}).get(way, [])]
            if rows:
                s = summary(rows)
                print(f"| {model} | {way} | {s['iou']:.1%} | {s['iou_fluid_bscans']:.1%} | {s['dsc_per_image']:.1%} | "
                      f"{s['precision']:.2f} | {s['recall']:.2f} |")


if __name__ == "__main__":
    main()
