"""Train and score the real-data student (fluid + drusen, harmonised inputs) that ``src/oct_wsss/weights`` bundles.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_student.py training/real-student.yaml \
        [--bundle src/oct_wsss/weights/real-student.safetensors] [--intensity unit --out runs/real-student-unit]

Training targets are pixel labels: phantom volumes (SRF and IRF merged into fluid, drusen kept, other lesions
background), the Duke DME fluid masks of the training patients and the drusen derived from the Bonn volume's RPE/BM
lines (B-scans before ``test_from_bscan``). Scored on what training never saw: the held-out Duke patients (fluid),
the held-out Bonn B-scans (drusen; same eye), held-out phantom seeds (both classes), and, as transfer sets, SJTU eye A
(SRF vs rest: predicted fluid counts as SRF, its unlabelled cysts against it) and the Keshav masks (fluid); the
dark-retina baseline is scored beside the student for fluid. Writes OUT/student.safetensors, OUT/scores.json and
prints a markdown table; ``--bundle`` copies the checkpoint there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from real_transfer import keshav, sjtu  # the sibling script (training/ is on sys.path when run as a file)

from oct_wsss.classes import DRUSEN, FLUID, IRF, SRF, by_key
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.propose.student import StudentProposer
from oct_wsss.synth import make_volume
from oct_wsss.training.data import Sample
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.real_eval import dark_retina_baseline
from oct_wsss.training.student import StudentTrainConfig, student_checkpoint, train_student
from oct_wsss.training.student_data import Target

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "ground truth"


def phantom_pairs(seeds: list[int], n_bscans: int, prevalence: dict[str, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(B-scan, ids) pairs of phantom volumes, SRF and IRF as fluid (7), drusen (6) kept, other ids background."""
    out = []
    for seed in seeds:
        ph = make_volume(seed, n_bscans=n_bscans, prevalence=prevalence)
        labels = np.where(np.isin(ph.labels, (SRF, IRF)), FLUID, np.where(ph.labels == DRUSEN, DRUSEN, 0))
        out += [(ph.volume.data[i], labels[i].astype(np.uint8)) for i in range(n_bscans)]
    return out


def _const(a: np.ndarray) -> Any:
    return lambda: a


def targets_from(pairs: list[tuple[np.ndarray, np.ndarray]], name: str) -> list[Target]:
    return [Target(_const(img), _const(lab), 1.0, ORIGIN, (name, i)) for i, (img, lab) in enumerate(pairs)]


def sample_pairs(samples: list[Sample]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.load_image(), s.load_mask()) for s in samples]


def score(pairs: list[tuple[np.ndarray, np.ndarray]], predict: Any, classes: tuple[int, ...]) -> dict[str, Any]:
    """Per class: pooled IoU and Dice and per-image DSC over all B-scans, and the same over the B-scans whose truth
    holds a lesion (``lesion_bscans``: AGM's Table-1 protocol), from ``segmentation_scores``."""
    cms = image_confusions([t for _, t in pairs], [predict(i) for i, _ in pairs])
    out: dict[str, Any] = {"n_bscans": len(pairs)}
    for cls in classes:
        every, lesion = (segmentation_scores(cms, (cls,), lesion_images_only=only) for only in (False, True))
        key = next(k for k in every.classes if k != "background")
        out[key] = {"iou": every.classes[key].iou, "dice_pooled": every.classes[key].dice_pooled,
                    "dice_per_image": every.classes[key].dice_per_image,
                    "lesion_bscans": lesion.n_images_scored, "dice_per_image_lesion_bscans":
                        lesion.classes[key].dice_per_image, "iou_lesion_bscans": lesion.classes[key].iou}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--bundle", type=Path, help="copy the trained checkpoint here")
    ap.add_argument("--intensity", choices=("unit", "harmonised"), help="override the recipe's (the ablation)")
    ap.add_argument("--out", help="override the recipe's run folder")
    args = ap.parse_args()
    r = yaml.safe_load(args.recipe.read_text())
    r.update({k: v for k, v in (("intensity", args.intensity), ("out", args.out)) if v is not None})
    out = REPO / r["out"]
    out.mkdir(parents=True, exist_ok=True)
    classes = tuple(sorted(by_key(k).id for k in r["classes"]))
    size = tuple(r["input_size"])
    ph = r["phantom"]
    duke = load_dataset({"layout": "duke", "root": str(REPO / r["duke"]["root"])}).samples
    bonn = load_dataset({"layout": "bonn", "root": str(REPO / r["bonn"]["root"])}).samples
    held_duke = set(r["duke"]["test_patients"])
    cut = int(r["bonn"]["test_from_bscan"])
    train = {"phantom": phantom_pairs(ph["train_seeds"], ph["n_bscans"], ph["prevalence"]),
             "duke": sample_pairs([s for s in duke if s.patient not in held_duke]),
             "bonn": sample_pairs([s for s in bonn if s.bscan < cut])}
    test = {"phantom": phantom_pairs(ph["test_seeds"], ph["n_bscans"], ph["prevalence"]),
            "duke": sample_pairs([s for s in duke if s.patient in held_duke]),
            "bonn": sample_pairs([s for s in bonn if s.bscan >= cut]),
            "sjtu_eyeA (SRF vs rest)": sample_pairs(sjtu(out).samples),
            "keshav_pixel_masks": sample_pairs(keshav(out).samples)}
    targets = [t for name, pairs in train.items() for t in targets_from(pairs, name)]
    spec = dict(r["student"])
    architecture = spec.pop("config")
    config = StudentTrainConfig.from_dict({**spec, "intensity": r["intensity"]})
    t0 = time.time()
    net, info = train_student(targets, classes, size, architecture, config, out / "work", device="cpu",
                              seed=int(r["seed"]), log=print)
    minutes = (time.time() - t0) / 60
    student = StudentProposer(net, classes, size, device="cpu", intensity=config.intensity)

    def as_srf(image: np.ndarray) -> np.ndarray:
        return np.where(student.predict(image) == FLUID, SRF, 0).astype(np.uint8)

    scores: dict[str, Any] = {}
    for name, pairs in test.items():
        if name.startswith("sjtu"):
            scores[name] = {"student": score(pairs, as_srf, (SRF,)),
                            "dark-retina baseline": score(pairs, dark_retina_baseline(SRF), (SRF,))}
            continue
        cls = {"duke": (FLUID,), "bonn": (DRUSEN,), "keshav_pixel_masks": (FLUID,)}.get(name, classes)
        scores[name] = {"student": score(pairs, student.predict, cls)}
        if FLUID in cls and name != "phantom":
            scores[name]["dark-retina baseline"] = score(pairs, dark_retina_baseline(FLUID), (FLUID,))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    held_out = {"duke_patients": sorted(held_duke), "bonn_bscans_from": cut, "phantom_seeds": ph["test_seeds"],
                "transfer_only": ["sjtu_srf_fewshot eye A", "keshav_fau_amd_oct pixel_masks"]}
    training = {"recipe": args.recipe.name, "commit": commit.strip(), "seed": r["seed"],
                "minutes_cpu": round(minutes, 1), "data": {k: len(v) for k, v in train.items()}, "held_out": held_out,
                "schedule": {**spec, "architecture": architecture}, "losses": info["losses"],
                "class_weights": info["class_weights"]}
    ckpt = student_checkpoint(net, classes, size, training=training, metrics={"held_out": scores},
                              intensity=config.intensity)
    path = ckpt.save(out / "student.safetensors")
    (out / "scores.json").write_text(json.dumps({"training": training, "scores": scores}, indent=2, default=float))
    print(f"trained in {minutes:.1f} min on {training['data']}; {path}")
    print("| set | predictor | B-scans | class | IoU | pooled Dice | per-image DSC | B-scans with the class | "
          "per-image DSC on those |\n|---|---|---|---|---|---|---|---|---|")
    for name, by_pred in scores.items():
        for pred, s in by_pred.items():
            for cls, v in s.items():
                if cls != "n_bscans":
                    cells = " | ".join("—" if v[m] is None else f"{100 * v[m]:.2f} %"
                                       for m in ("iou", "dice_pooled", "dice_per_image"))
                    lesion = v["dice_per_image_lesion_bscans"]
                    cells += f" | {v['lesion_bscans']} | " + ("—" if lesion is None else f"{100 * lesion:.2f} %")
                    print(f"| {name} | {pred} | {s['n_bscans']} | {cls} | {cells} |")
    if args.bundle:
        shutil.copy(path, args.bundle)
        print(f"bundled as {args.bundle}")


if __name__ == "__main__":
    main()
