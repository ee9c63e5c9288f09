"""AGM on Duke DME with leave-one-patient-out folds: one recipe run per held-out patient, pooled.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/duke_agm_folds.py training/agm-duke-cpu.yaml \
        --run runs/agm-duke-cpu [--layers-folds runs/layers] [--alpha 0.5]

Each fold is the recipe with ``split.seed`` chosen so that its test split is one patient (the recipe's
``patient_split``: a seed's patient is printed); the run folders are RUN/fold-<patient>. Scores are the test
pseudo labels (AGM's CAMs with the image-level labels given, the paper's Duke protocol), pooled over the folds from
each fold's TP / FP / FN: fluid IoU, mIoU with background, and the mean per-image fluid DSC over the B-scans
with fluid. Writes RUN/folds.json and prints a markdown row. α is swept on the validation patient's masks as the
paper does; ``--alpha A`` rescores the finished folds' networks at a fixed α instead (no pixel label chooses it),
written to RUN/folds-alpha-A.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from oct_wsss.propose.agm import AgmProposer
from oct_wsss.training.agm_recipe import score_test
from oct_wsss.training.data import Sample, patient_split
from oct_wsss.training.recipe import Recipe, train_recipe

#: the patient order of training/layers_train.py's folds
LAYER_FOLDS = ("Subject_01", "Subject_03", "Subject_04", "Subject_07", "Subject_09")


def fold_seeds(samples: list[Sample], fraction: float) -> dict[str, int]:
    """The first split seed whose test split is exactly one patient, for each patient."""
    seeds: dict[str, int] = {}
    for seed in range(200):
        _, test = patient_split(samples, fraction, seed + 1)
        patients = {s.patient for s in test}
        if len(patients) == 1 and (p := patients.pop()) not in seeds:
            seeds[p] = seed
    return seeds


def fixed_alpha(fold: Path, alpha: float) -> dict:
    """The fold's test pseudo labels (image labels given) with its network at a fixed α."""
    recipe = Recipe.load(fold / "fold-recipe.yaml")
    proposer = AgmProposer.from_checkpoint(fold / "agm.safetensors", threshold=alpha, device="cpu")
    scores_dir = fold / f"alpha-{alpha:g}"
    scores_dir.mkdir(exist_ok=True)
    return score_test(proposer, recipe.splits()[2], scores_dir)["pseudo_labels"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--layers-folds", type=Path, help="retina from the layer model: DIR/fold_<k>.safetensors of "
                    "training/layers_train.py lopo, k = the held-out patient's place in Subject_01, 03, 04, 07, 09 "
                    "(so the layer model never saw the held-out patient either)")
    ap.add_argument("--alpha", type=float, help="rescore the finished folds at this fixed α (no sweep)")
    args = ap.parse_args()
    base = Recipe.load(args.recipe)
    samples = base.dataset("data").samples
    n_patients = len({s.patient for s in samples})
    seeds = fold_seeds(samples, 1.0 / n_patients)
    totals = {"background": [0, 0, 0], "fluid": [0, 0, 0]}
    dsc_sum, dsc_n, folds = 0.0, 0, {}
    for patient, seed in sorted(seeds.items()):
        raw = dict(base.raw, split={**base.raw.get("split", {}), "seed": seed, "test_fraction": 1.0 / n_patients})
        if args.layers_folds:
            fold = args.layers_folds.resolve() / f"fold_{LAYER_FOLDS.index(patient)}.safetensors"
            raw["agm"] = {**raw["agm"], "retina": "layers", "layers_checkpoint": str(fold)}
        out = args.run / f"fold-{patient}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "fold-recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        if not (out / "metrics.json").is_file():
            train_recipe(out / "fold-recipe.yaml", out=out.resolve(),
                         log=lambda m, p=patient: print(f"{p}: {m}", flush=True))
        scored = (fixed_alpha(out, args.alpha) if args.alpha is not None
                  else json.loads((out / "metrics.json").read_text())["pseudo_labels"])["classes"]
        for key, t in totals.items():
            for j, field in enumerate(("tp", "fp", "fn")):
                t[j] += int(scored[key][field])
        fluid = scored["fluid"]
        dsc_sum += (fluid["dice_per_image"] or 0.0) * fluid["images_scored"]
        dsc_n += fluid["images_scored"]
        folds[patient] = {"split_seed": seed, "fluid_iou": fluid["iou"],
                          "fluid_dice_per_image": fluid["dice_per_image"], "images_with_fluid": fluid["images_scored"]}
    iou = {k: tp / max(tp + fp + fn, 1) for k, (tp, fp, fn) in totals.items()}
    pooled = {"fluid_iou": iou["fluid"], "miou_with_background": (iou["fluid"] + iou["background"]) / 2,
              "fluid_dice_per_image": dsc_sum / max(dsc_n, 1), "images_with_fluid": dsc_n}
    name = "folds.json" if args.alpha is None else f"folds-alpha-{args.alpha:g}.json"
    (args.run / name).write_text(json.dumps({"folds": folds, "pooled": pooled}, indent=2))
    print(json.dumps(folds, indent=1))
    print(f"| AGM, {len(folds)} leave-one-patient-out folds | {100 * pooled['fluid_iou']:.2f} | "
          f"{100 * pooled['fluid_dice_per_image']:.2f} | {100 * pooled['miou_with_background']:.2f} |")


if __name__ == "__main__":
    main()
