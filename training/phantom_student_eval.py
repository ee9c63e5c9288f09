"""Score a multi-class student (phantom or real-wsss): unseen phantom seeds, the demo volume, Duke, SJTU, Keshav, Bonn.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/phantom_student_eval.py CKPT [--data ../shared/data]
        [--seeds 5000-5005] [--input-size H,W] [--flip | --no-flip] [--json FILE]
    # CKPT = "ceiling" for the ceiling alone

- **Resolution ceiling** (no model): each truth mask resized to 128², 256² and 512² (one-hot, bilinear) and back to its
  native size, per-class IoU against itself: what a perfect student at that input size could reach.
- **Phantom, unseen seeds** (generator v5, random device look, the recipe's prevalence): pooled IoU per class and
  lesion mIoU over the classes present, with a 95 % bootstrap interval over volumes (``--seeds 5000-5029`` for a
  tight one: six volumes leave the figure several points to chance).
- **Demo volume** (``synth.demo_phantom``, calibrated Spectralis look): pooled Dice of fluid (SRF + IRF), PED, drusen.
- **Duke DME** (five shared patients, grader 1; evaluation only, never selection): predicted SRF or IRF as fluid
  against label 9, pooled IoU and per-image DSC (B-scans with fluid), raw and inside Duke's own retina (layer labels
  1-7 and 9: an oracle standing in for a layer model's retina mask).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from oct_wsss.classes import DRUSEN, FLUID, IRF, ONTOLOGY, PED, SRF, by_key
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.preprocess.inputs import resize
from oct_wsss.propose import load_proposer
from oct_wsss.synth import SyntheticVolume, demo_phantom, make_volume

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = tuple(by_key(k).id for k in ("srf", "irf", "ped", "ez", "hrf", "drusen"))
PREVALENCE = {"srf": 0.5, "irf": 0.6, "ped": 0.4, "ez": 0.4, "hrf": 0.6, "drusen": 0.25}


def phantom_volume(seed: int) -> SyntheticVolume:
    """One unseen phantom volume as this script scores them: 12 B-scans, random device look, the recipe's prevalence."""
    return make_volume(seed, n_bscans=12, look="random", prevalence=PREVALENCE)


def phantom_pairs(seeds: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(B-scan, truth) of unseen phantom volumes (``phantom_volume``)."""
    out = []
    for seed in seeds:
        v = phantom_volume(seed)
        out += list(zip(v.volume.data, v.labels, strict=True))
    return out


def per_class(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """Pooled IoU per class present in the truth and their mean (lesion mIoU over classes present)."""
    cms = image_confusions(truths, preds)
    s = segmentation_scores(cms, CLASSES).to_dict()["classes"]
    present = [ONTOLOGY[c].key for c in CLASSES if any((t == c).any() for t in truths)]
    ious = {k: s[k]["iou"] for k in present}
    return {"iou": ious, "miou_present": float(np.mean([v for v in ious.values() if v is not None]))}


def volume_interval(truths: list[np.ndarray], preds: list[np.ndarray], per_volume: int = 12, draws: int = 2000,
                    seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the lesion mIoU (classes present) with whole volumes resampled: how much the figure
    owes to which phantom volumes were drawn."""
    cms = image_confusions(truths, preds)
    vols = cms.reshape(-1, per_volume, *cms.shape[1:]).sum(1)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        cm = vols[rng.integers(0, len(vols), len(vols))].sum(0)
        scored = segmentation_scores(cm[None], CLASSES).classes
        ious = [scored[ONTOLOGY[c].key].iou for c in CLASSES if cm[c, :].sum() > 0]  # as per_class: classes present
        scores.append(float(np.mean(ious)))
    return [float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))]


def ceiling(pairs: list[tuple[np.ndarray, np.ndarray]], size: int) -> dict:
    """Per-class IoU of the truth after a round trip through ``size``² (one-hot, bilinear, argmax)."""
    back = []
    for _, t in pairs:
        hot = np.stack([(t == c) for c in (0, *CLASSES)]).astype(np.float32)
        small = resize(hot, (size, size))
        up = resize(small, t.shape)
        back.append(np.asarray((0, *CLASSES), np.uint8)[up.argmax(0)])
    return per_class([t for _, t in pairs], back)


def fluid_scores(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    cms = image_confusions(truths, preds)
    every = segmentation_scores(cms, (FLUID,)).classes["fluid"]
    lesion = segmentation_scores(cms, (FLUID,), lesion_images_only=True).classes["fluid"]
    return {"iou": every.iou, "dice_pooled": every.dice_pooled, "dice_per_image_fluid_bscans": lesion.dice_per_image}


def duke(root: Path, predict) -> dict:
    """Fluid on the shared Duke B-scans, raw and inside Duke's layer-label retina."""
    truths, raw, inside = [], [], []
    for r in csv.DictReader(open(root / "index.csv")):
        img, lab = iio.imread(root / r["image"]), iio.imread(root / r["label"])
        wet = np.isin(predict(img), (SRF, IRF))
        retina = np.isin(lab, (1, 2, 3, 4, 5, 6, 7, 9))
        truths.append(np.where(lab == 9, FLUID, 0).astype(np.uint8))
        raw.append(np.where(wet, FLUID, 0).astype(np.uint8))
        inside.append(np.where(wet & retina, FLUID, 0).astype(np.uint8))
    return {"bscans": len(truths), "raw": fluid_scores(truths, raw), "inside_retina": fluid_scores(truths, inside)}


def demo(predict) -> dict:
    """Pooled Dice on the demo volume: fluid (SRF + IRF), PED, drusen."""
    v = demo_phantom()
    preds = [predict(b) for b in v.volume.data]
    out = {}
    for name, ids in (("fluid", (SRF, IRF)), ("ped", (PED,)), ("drusen", (DRUSEN,))):
        t = np.isin(v.labels, ids)
        p = np.isin(np.stack(preds), ids)
        out[name] = float(2 * (t & p).sum() / max(t.sum() + p.sum(), 1))
    return out


def dice(truths: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """Pooled Dice and IoU of two lists of boolean masks."""
    t, p = np.concatenate([a.ravel() for a in truths]), np.concatenate([a.ravel() for a in preds])
    inter, total = int((t & p).sum()), int(t.sum() + p.sum())
    return {"dice": 2 * inter / max(total, 1), "iou": inter / max(total - inter, 1), "truth_px": int(t.sum())}


def real_sets(root: Path, predict) -> dict:
    """SJTU eye A (SRF vs rest; fluid = SRF or IRF vs SRF too, its cysts being unlabelled), the Keshav masks (SRF or
    IRF as fluid), and the Bonn drusen volume (drusen from its RPE/BM lines)."""
    from oct_wsss.training.datasets import load_dataset

    out = {}
    sjtu = load_dataset({"layout": "sjtu", "root": str(root / "sjtu_srf_fewshot")}).samples
    preds = [predict(s.load_image()) for s in sjtu]
    truths = [s.load_mask() == SRF for s in sjtu]
    out["sjtu_srf"] = dice(truths, [p == SRF for p in preds])
    out["sjtu_fluid_vs_srf"] = dice(truths, [np.isin(p, (SRF, IRF)) for p in preds])
    keshav = root / "keshav_fau_amd_oct"
    rows = list(csv.DictReader(open(keshav / "pixel_masks" / "index.csv")))
    out["keshav_fluid"] = dice([iio.imread(keshav / r["mask"]) > 0 for r in rows],
                               [np.isin(predict(iio.imread(keshav / r["image"])), (SRF, IRF)) for r in rows])
    bonn = load_dataset({"layout": "bonn", "root": str(root / "bonn_drusen_volume")}).samples
    out["bonn_drusen"] = dice([s.load_mask() == DRUSEN for s in bonn], [predict(s.load_image()) == DRUSEN
                                                                         for s in bonn])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", default="5000-5005")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--input-size", type=lambda v: tuple(int(x) for x in v.split(",")),
                    help="H,W: run the network at this input size instead of the checkpoint's (a size sweep)")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                    help="average each softmax with the mirrored B-scan's, or not (default: the checkpoint's choice)")
    args = ap.parse_args()
    lo, hi = map(int, args.seeds.split("-"))
    pairs = phantom_pairs(list(range(lo, hi + 1)))
    out: dict = {"seeds": args.seeds, "bscans": len(pairs),
                 "ceiling": {str(s): ceiling(pairs, s) for s in (128, 256, 512)}}
    if args.checkpoint != "ceiling":
        student = load_proposer("student", args.checkpoint, device="cpu", flip=args.flip)
        if args.input_size:  # the U-Net is fully convolutional: any multiple of its stride runs
            student.input_size = args.input_size
        out["input_size"], out["flip"] = list(student.input_size), student.flip
        truths, preds = [t for _, t in pairs], [student.predict(b) for b, _ in pairs]
        out["phantom"] = {**per_class(truths, preds), "miou_interval_95": volume_interval(truths, preds)}
        out["demo_dice"] = demo(student.predict)
        out["duke"] = duke(args.data / "duke_dme_chiu2015", student.predict)
        out["real_sets"] = real_sets(args.data, student.predict)
    print(json.dumps(out, indent=1, default=float))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
