"""Retinal layer network on the shared Duke DME labels: leave-one-patient-out evaluation and the bundled weights.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/layers_train.py lopo --runs /work/runs/layers [--folds 0,1]
    OMP_NUM_THREADS=1 PYTHONPATH=src python training/layers_train.py final --runs /work/runs/layers \
        --bundle src/oct_wsss/weights/layers.safetensors
    OMP_NUM_THREADS=1 PYTHONPATH=src python training/layers_train.py tta --runs /work/runs/layers   # flip averaging

Each fold trains a U-Net (width 8, depth 4, input at half the native rows and columns) on 4 patients' 44 B-scans
and scores the held-out patient's 11 B-scans after the topological post-processing (``oct_wsss.propose.layers``);
each fold also measures BM / RPE mean absolute error on the Bonn drusen volume's expert lines. Results per fold
are written as JSON under ``--runs`` (a rerun skips finished folds).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import FLUID, IRF, SRF
from oct_wsss.models.layers import BANDS, LayerNet, LayerNetConfig
from oct_wsss.propose.layers import normalise_bscan, ordered_labels
from oct_wsss.synth import make_volume
from oct_wsss.training.datasets.drusen import lines_from_layer_map

DUKE = Path("/work/shared/data/duke_dme_chiu2015")
BONN = Path("/work/shared/data/bonn_drusen_volume")
PATIENTS = ("Subject_01", "Subject_03", "Subject_04", "Subject_07", "Subject_09")
SCHEDULE = {"iterations": 650, "batch": 4, "crop_width": 128, "lr": 1e-2, "weight_decay": 1e-4,
            "fluid_weight": 2.0, "dice_weight": 1.0, "seed": 0}
CONFIG = LayerNetConfig(width=8, depth=4, scale=0.5)


def duke() -> list[dict]:
    rows = list(csv.DictReader(open(DUKE / "index.csv", newline="")))
    out = []
    for r in rows:
        img = np.array(Image.open(DUKE / r["image"]).convert("L"))
        lab = np.array(Image.open(DUKE / r["label"]))
        out.append({"subject": r["subject"], "image": img, "label": lab, "name": Path(r["image"]).stem})
    return out


#: phantom boundary (``synth.anatomy.BOUNDARIES``) at the top of each Duke band 1-8: NFL, GCL+IPL, INL, OPL, ONL+ISM
#: (ONL and myoid), ISE (the ellipsoid zone), OS+RPE (outer segments to Bruch's membrane), below BM
PHANTOM_TOPS = ("ILM", "NFL_GCL", "IPL_INL", "INL_OPL", "OPL_ONL", "EZ", "OS", "BM_BOTTOM")


def phantom_bands(case) -> np.ndarray:
    """Duke/ReLayNet band ids (n, H, W) of a ``make_volume`` case from its boundary truth; its SRF and IRF are fluid."""
    n, h, w = case.labels.shape
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    bands = np.zeros((n, h, w), np.uint8)
    for band, top in enumerate(PHANTOM_TOPS, start=1):
        bands[rows >= np.asarray(case.layers[top], np.float32)[:, None, :]] = band
    bands[np.isin(case.labels, (SRF, IRF))] = 9
    return bands


def phantom(count: int, seed: int = 1000) -> list[dict]:
    """``count`` phantom B-scans with their band truth: volumes of 7 B-scans, each in a random device look."""
    out = []
    for v in range(-(-count // 7)):
        case = make_volume(seed + v, n_bscans=7, look="random")
        bands = phantom_bands(case)
        out += [{"subject": "phantom", "image": case.volume.data[i], "label": bands[i], "name": f"phantom{v}_{i}"}
                for i in range(7)]
    return out[:count]


def _half(sample: dict, area: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The B-scan at the network's input size and its band targets there, (bands, h, w): one-hot of the nearest
    native pixel, or with ``area`` each band's share of the native pixels under the input pixel (nearest picks the
    upper of each two rows, which puts every learned boundary half a native row low on average)."""
    img = torch.from_numpy(normalise_bscan(sample["image"]))[None, None]
    size = CONFIG.input_size(*img.shape[-2:])
    x = F.interpolate(img, size=size, mode="bilinear", align_corners=False)[0]
    onehot = F.one_hot(torch.from_numpy(sample["label"].astype(np.int64)), len(BANDS)).permute(2, 0, 1)[None].float()
    y = F.interpolate(onehot, size=size, mode="area" if area else "nearest")[0]
    return x, y


def train(samples: list[dict], schedule: dict, log: Path | None = None) -> tuple[LayerNet, float]:
    torch.manual_seed(schedule["seed"])
    rng = np.random.default_rng(schedule["seed"])
    pairs = [_half(s, schedule.get("area_labels", False)) for s in samples]
    net = LayerNet(CONFIG)
    if schedule.get("bf16"):
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=schedule["lr"], weight_decay=schedule["weight_decay"])
    n_it = schedule["iterations"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=schedule["lr"], total_steps=n_it, pct_start=0.15)
    counts = torch.stack([y.sum((1, 2)) for _, y in pairs]).sum(0)
    freq = counts / counts.sum()
    # median-frequency balancing (as in ReLayNet's weighted cross-entropy), square-rooted to stay gentle; fluid x weight
    weights = (freq[freq > 0].median() / freq.clamp(min=1e-6)).sqrt().clamp(max=10.0)
    weights[9] *= schedule["fluid_weight"]
    cw = schedule["crop_width"]
    max_shift = round(12 * CONFIG.input_size(496, 512)[0] / 248)  # +-24 native rows at any row scale
    t0 = time.perf_counter()
    net.train()
    for it in range(n_it):
        xs, ys = [], []
        for _ in range(schedule["batch"]):
            x, y = pairs[rng.integers(len(pairs))]
            w = x.shape[-1]
            c = rng.integers(0, max(1, w - cw + 1))
            x, y = x[..., c:c + cw], y[..., c:c + cw]
            if rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            x = x.clamp(min=0) ** float(np.exp(rng.normal(0, 0.25))) * float(rng.uniform(0.85, 1.15))
            shift = int(rng.integers(-max_shift, max_shift + 1))
            if shift:
                x, y = torch.roll(x, shift, -2), torch.roll(y, shift, -2)
                band = F.one_hot(torch.tensor(0 if shift > 0 else 8), len(BANDS)).float()[:, None, None]
                if shift > 0:
                    x[..., :shift, :] = 0
                    y[:, :shift] = band
                else:
                    x[..., shift:, :] = x[..., shift - 1:shift, :] * 0 + x[..., shift:, :].mean()
                    y[:, shift:] = band
            xs.append(x)
            ys.append(y)
        x, y = torch.stack(xs), torch.stack(ys)
        if schedule.get("bf16"):  # bf16 autocast + channels-last: 2.5x on AVX512-BF16 cores (docs/benchmarks.md)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(x.contiguous(memory_format=torch.channels_last)).float()
        else:
            logits = net(x)
        loss = weighted_cross_entropy(logits, y, weights, schedule.get("boundary_weight", 0.0))
        prob = logits.softmax(1)
        inter = (prob * y).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + y.sum((0, 2, 3))
        dice = 1 - ((2 * inter + 1) / (denom + 1)).mean()
        loss = loss + schedule["dice_weight"] * dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (it % 100 == 0 or it == n_it - 1):
            with open(log, "a") as f:
                f.write(f"it {it} loss {loss.item():.4f} t {time.perf_counter() - t0:.0f}s\n")
    net.eval()
    return net, time.perf_counter() - t0


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                           boundary_weight: float) -> torch.Tensor:
    """Class-weighted cross-entropy against band targets (B, bands, H, W): one-hot or band shares. With
    ``boundary_weight`` w > 0 each pixel whose (majority) band differs from the pixel above or below it counts 1 + w
    times (ReLayNet's edge term), so thin bands' edges weigh as much as their area."""
    nll = -(weights[None, :, None, None] * target * logits.log_softmax(1)).sum(1)
    w = (weights[None, :, None, None] * target).sum(1)
    if boundary_weight:
        y = target.argmax(1)
        edge = torch.zeros_like(y, dtype=torch.bool)
        step = y[:, 1:] != y[:, :-1]
        edge[:, 1:] |= step
        edge[:, :-1] |= step
        scale = 1 + boundary_weight * edge.float()
        nll, w = nll * scale, w * scale
    return nll.sum() / w.sum()


@torch.inference_mode()
def predict(net: LayerNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = normalise_bscan(image)
    h, w = norm.shape
    x = F.interpolate(torch.from_numpy(norm)[None, None], size=CONFIG.input_size(h, w), mode="bilinear",
                      align_corners=False)
    logits = F.interpolate(net(x), size=(h, w), mode="bilinear", align_corners=False)
    p = logits.softmax(1)[0].numpy()
    return ordered_labels(p, norm)


def dice_table(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    p, t = np.stack(preds), np.stack(truths)
    out = {}
    for k, name in enumerate(BANDS):
        inter = np.logical_and(p == k, t == k).sum()
        denom = (p == k).sum() + (t == k).sum()
        out[name] = float(2 * inter / denom) if denom else float("nan")
    return out


def bonn_mae(net: LayerNet) -> dict[str, float]:
    rows = list(csv.DictReader(open(BONN / "index.csv", newline="")))
    err_bm, err_rpe = [], []
    for r in rows:
        img = np.array(Image.open(BONN / r["image"]).convert("L"))
        rpe_t, bm_t = lines_from_layer_map(np.array(Image.open(BONN / r["layers"])), (255, 170), (127,))
        _, b = predict(net, img)
        # boundary rows are split rows (first row of the band below); expert lines mark the line's own row
        bm_p, rpe_p = b[8] - 0.5, b[7]
        ok = ~np.isnan(bm_t)
        err_bm.append(np.abs(bm_p[ok] - bm_t[ok]))
        ok = ~np.isnan(rpe_t)
        err_rpe.append(np.abs(rpe_p[ok] - rpe_t[ok]))
    return {"bm_mae_px": float(np.concatenate(err_bm).mean()), "rpe_mae_px": float(np.concatenate(err_rpe).mean()),
            "bscans": len(rows)}


def lopo(runs: Path, folds: list[int], schedule: dict) -> None:
    data = duke()
    for k in folds:
        out = runs / f"fold_{k}.json"
        if out.exists():
            continue
        held = PATIENTS[k]
        extra = phantom(schedule["phantom"]) if schedule.get("phantom") else []
        net, secs = train([s for s in data if s["subject"] != held] + extra, schedule, runs / f"fold_{k}.log")
        test = [s for s in data if s["subject"] == held]
        preds = [predict(net, s["image"])[0] for s in test]
        table = dice_table(preds, [s["label"] for s in test])
        result = {"held_out": held, "train_s": round(secs, 1), "schedule": schedule, "dice": table,
                  "mean_band_dice": float(np.mean([table[b] for b in BANDS[1:8]])), "bonn": bonn_mae(net),
                  "threads": torch.get_num_threads()}
        np.savez_compressed(runs / f"fold_{k}_pred.npz", *preds)
        torch.save(net.state_dict(), runs / f"fold_{k}_state.pt")
        layer_checkpoint(net, {"data": f"duke_dme_chiu2015 (shared) without {held}", "schedule": schedule,
                               "wall_s": round(secs, 1)}, {"lopo_fold": result}).save(runs / f"fold_{k}.safetensors")
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)


@torch.inference_mode()
def flip_averaged(net: LayerNet, image: np.ndarray, flip: bool) -> np.ndarray:
    """Ordered bands of one B-scan from softmax probabilities, averaged with the mirrored B-scan's when ``flip``."""
    norm = normalise_bscan(image)
    h, w = norm.shape
    x = F.interpolate(torch.from_numpy(norm)[None, None], size=CONFIG.input_size(h, w), mode="bilinear",
                      align_corners=False)
    p = net(x).softmax(1)
    if flip:
        p = (p + net(x.flip(-1)).softmax(1).flip(-1)) / 2
    p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    return ordered_labels(p / p.sum(0, keepdims=True), norm)[0]


def tta(runs: Path, folds: list[int]) -> None:
    """Each finished fold's checkpoint scored on its held-out patient without and with flip averaging."""
    data = duke()
    for k in folds:
        net = Checkpoint.load(runs / f"fold_{k}.safetensors", expect_method="layers").build(
            lambda: LayerNet(CONFIG)).eval()
        test = [s for s in data if s["subject"] == PATIENTS[k]]
        row = {}
        for flip in (False, True):
            table = dice_table([flip_averaged(net, s["image"], flip) for s in test], [s["label"] for s in test])
            row["flip" if flip else "plain"] = {"mean_band_dice": float(np.mean([table[b] for b in BANDS[1:8]])),
                                                "fluid": table["fluid"]}
        print(json.dumps({"held_out": PATIENTS[k], **row}), flush=True)


def layer_checkpoint(net: LayerNet, training: dict, metrics: dict) -> Checkpoint:
    """A ``layers`` checkpoint of ``net`` (what ``oct-wsss layers --checkpoint`` and ``LayerModel`` load)."""
    return Checkpoint.new(net.state_dict(), method="layers", architecture=CONFIG.to_dict(), classes=[0, FLUID],
                          input_size=list(CONFIG.input_size(496, 512)),
                          normalisation={"input": "percentile 1 -> 0, 99.5 -> 1", "scale": CONFIG.scale,
                                         "row_scale": CONFIG.row_scale},
                          training=training, metrics=metrics,
                          params={"bands": list(BANDS), "fluid_band": 9, "fluid_ontology_id": FLUID,
                                  "input_size_note": "any B-scan size; the network sees it resized by `scale`"})


def final(runs: Path, bundle: Path | None, schedule: dict) -> None:
    data = duke()
    net, secs = train(data + (phantom(schedule["phantom"]) if schedule.get("phantom") else []), schedule,
                      runs / "final.log")
    folds = [json.loads((runs / f"fold_{k}.json").read_text()) for k in range(5) if (runs / f"fold_{k}.json").exists()]
    metrics = {"bonn_all_duke": bonn_mae(net)}
    if folds:
        metrics["lopo"] = {"folds": len(folds), "mean_band_dice": float(np.mean([f["mean_band_dice"] for f in folds])),
                           "fluid_dice": float(np.nanmean([f["dice"]["fluid"] for f in folds]))}
    ckpt = layer_checkpoint(net, {"data": "duke_dme_chiu2015 (shared): Subject_01/03/04/07/09, 55 B-scans, grader 1",
                                  "schedule": schedule, "wall_s": round(secs, 1), "threads": 1}, metrics)
    path = ckpt.save(bundle or runs / "layers.safetensors")
    print(json.dumps({"saved": str(path), "train_s": secs, **metrics}), flush=True)


def main() -> None:
    global CONFIG
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("lopo", "final", "tta", "speed"))
    ap.add_argument("--runs", type=Path, default=Path("/work/runs/layers"))
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast and channels-last (fast on AVX512-BF16 cores)")
    ap.add_argument("--row-scale", type=float, help="resize factor of the rows (default: the columns' 0.5)")
    ap.add_argument("--width", type=int, help=f"U-Net base width (default {CONFIG.width})")
    ap.add_argument("--phantom", type=int, default=0, help="add this many phantom B-scans (random device looks, "
                    "band truth from the generator's boundaries) to each training set")
    ap.add_argument("--area-labels", action="store_true",
                    help="targets at the input size as each band's share of the native pixels (default: nearest)")
    ap.add_argument("--boundary-weight", type=float, default=0.0,
                    help="extra cross-entropy weight of pixels at a band edge (ReLayNet's 10; default 0: none)")
    args = ap.parse_args()
    if args.row_scale:
        CONFIG = replace(CONFIG, row_scale=args.row_scale)
    if args.width:
        CONFIG = replace(CONFIG, width=args.width)
    torch.set_num_threads(1)
    args.runs.mkdir(parents=True, exist_ok=True)
    schedule = dict(SCHEDULE)
    if args.iterations:
        schedule["iterations"] = args.iterations
    if args.bf16:
        schedule["bf16"] = True
    if args.phantom:
        schedule["phantom"] = args.phantom
    if args.area_labels:
        schedule["area_labels"] = True
    if args.boundary_weight:
        schedule["boundary_weight"] = args.boundary_weight
    if args.mode == "lopo":
        lopo(args.runs, [int(f) for f in args.folds.split(",")], schedule)
    elif args.mode == "final":
        final(args.runs, args.bundle, schedule)
    elif args.mode == "tta":
        tta(args.runs, [int(f) for f in args.folds.split(",")])
    else:
        data = duke()[:8]
        schedule["iterations"] = 10
        net, secs = train(data, schedule)
        print("10 its", secs)


if __name__ == "__main__":
    main()
