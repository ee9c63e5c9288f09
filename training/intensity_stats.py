"""Image statistics of the real shared sets and the phantom before and after ``preprocess.intensity.harmonise``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/intensity_stats.py [--data ../shared/data] [--json FILE] [--layers]

Per set, the mean over its B-scans of: noise floor (median of the non-zero pixels outside the tissue mask), retinal
median, retinal 90th and 99th percentile, and contrast (p99 - floor) / (p99 + floor); the tissue mask of the raw
B-scan serves both columns, so before and after are measured on the same pixels. Then the Cirrus-like round trip
(gamma 0.7, gain 0.85, floor + 0.1, resampled to 400 x 640) on Duke and the phantom: blurred mean absolute gap to
the original, without and with harmonisation. Prints markdown tables (docs/results-real.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from layers_train import phantom_bands  # training/ is the script's folder, first on sys.path
from scipy import ndimage as ndi
from skimage import io

from oct_wsss.preprocess.inputs import SATURATED, resize, to_unit
from oct_wsss.preprocess.intensity import harmonise, layer_anchors, tissue_mask, vitreous
from oct_wsss.propose.layers import LayerModel
from oct_wsss.propose.layers import retina_mask as layer_retina
from oct_wsss.synth import make_volume

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"duke_dme_chiu2015 (Spectralis)": "duke_dme_chiu2015/images/*.png",
        "sjtu_srf_fewshot (Cirrus-like, 512²)": "sjtu_srf_fewshot/images/*.png",
        "bonn_drusen_volume (Spectralis)": "bonn_drusen_volume/bscans/*.png",
        "keshav pixel_masks (resampled 512²)": "keshav_fau_amd_oct/pixel_masks/images/*.png",
        "keshav image_level_samples": "keshav_fau_amd_oct/image_level_samples/*.png"}


def stats(unit: np.ndarray, mask: np.ndarray) -> list[float]:
    """[floor, retinal median, p90, p99, contrast] of one B-scan in [0, 1] on ``mask``; saturated and zero pixels
    (padding) left out, as ``harmonise`` leaves them out."""
    valid = (unit < SATURATED) & (unit > 0)
    out, ins = unit[~mask & valid], unit[mask & valid]
    floor, p99 = float(np.median(out)), float(np.percentile(ins, 99))
    return [floor, float(np.median(ins)), float(np.percentile(ins, 90)), p99, (p99 - floor) / max(p99 + floor, 1e-6)]


def cirrus_like(bscan: np.ndarray, size: tuple[int, int] = (400, 640)) -> np.ndarray:
    """The synthetic Cirrus-like copy of tests/test_intensity.py."""
    y = np.clip(0.85 * to_unit(bscan) ** 0.7 + 0.1, 0.0, 1.0).astype(np.float32)
    return np.round(resize(y, size) * 255).astype(np.uint8)


def gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(ndi.gaussian_filter(a, 3) - ndi.gaussian_filter(b, 3)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--layers", action="store_true", help="also compare with the layer model's retina (harmonise's "
                    "retina argument, intensity 'harmonised-layers') on that mask")
    args = ap.parse_args()
    images = {name: [io.imread(p) for p in sorted(args.data.glob(pattern))] for name, pattern in SETS.items()}
    images["phantom (make_volume seeds 0-5, 3 B-scans each)"] = [
        b for seed in range(6) for b in make_volume(seed, n_bscans=3).volume.data]
    rows = {}
    print("| set | B-scans | floor | retinal median | retinal p90 | retinal p99 | contrast |")
    print("|---|---|---|---|---|---|---|")
    for name, bscans in images.items():
        before, after = [], []
        for b in bscans:
            b = b if b.ndim == 2 else b[..., 0]
            unit = to_unit(b)
            mask = tissue_mask(unit)
            before.append(stats(unit, mask))
            after.append(stats(harmonise(b), mask))
        rows[name] = {"n": len(bscans), "before": np.mean(before, 0).tolist(), "after": np.mean(after, 0).tolist()}
        cells = " | ".join(f"{x:.3f} → {y:.3f}" for x, y in zip(rows[name]["before"], rows[name]["after"], strict=True))
        print(f"| {name} | {len(bscans)} | {cells} |")
    print("\n| Cirrus-like round trip | B-scans | gap without | gap with harmonisation |\n|---|---|---|---|")
    trips = {"duke": images["duke_dme_chiu2015 (Spectralis)"],
             "phantom": images["phantom (make_volume seeds 0-5, 3 B-scans each)"]}
    for name, bscans in trips.items():
        raw = [gap(resize(to_unit(cirrus_like(b)), b.shape), to_unit(b)) for b in bscans]
        fixed = [gap(resize(harmonise(cirrus_like(b)), b.shape), harmonise(b)) for b in bscans]
        rows[f"roundtrip_{name}"] = {"without": float(np.mean(raw)), "with": float(np.mean(fixed)), "n": len(bscans)}
        print(f"| {name} | {len(bscans)} | {np.mean(raw):.4f} | {np.mean(fixed):.4f} (max {np.max(fixed):.4f}) |")
    if args.layers:
        rows["layers"] = layer_comparison(images)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def retina_stats(unit: np.ndarray, retina: np.ndarray) -> list[float]:
    """[vitreous floor, median, p75, p90, p99] on the layer model's retina (padding left out)."""
    valid = (unit < SATURATED) & (unit > 0)
    ins = unit[retina & valid]
    return [float(np.median(unit[vitreous(retina) & valid])), *(float(np.percentile(ins, q)) for q in (50, 75, 90, 99))]


def phantom_truth_anchors() -> list[float]:
    """``layer_anchors`` of phantom seeds 0-5 (3 B-scans each, the default look) on the generator's ILM-to-BM truth."""
    rows = []
    for seed in range(6):
        case = make_volume(seed, n_bscans=3)
        bands = phantom_bands(case)
        truth = ((bands >= 1) & (bands <= 7)) | (bands == 9)
        rows += [layer_anchors(to_unit(case.volume.data[i]), truth[i]) for i in range(3)]
    return np.mean(rows, 0).tolist()


def layer_comparison(images: dict[str, list[np.ndarray]]) -> dict:
    """The same B-scans measured on the layer model's ILM-to-BM mask after each harmonisation, and the spread
    (max - min over the sets) of each statistic: floor, median and p99 are what each map pins, p75 / p90 are not."""
    model = LayerModel()
    out: dict = {"phantom_truth_anchors": phantom_truth_anchors()}
    print("\nphantom anchors on its true retina (LAYER_TARGETS): " + " / ".join(
        f"{v:.4f}" for v in out["phantom_truth_anchors"]))
    print("\n| set | retina fraction | raw p75 / p90 | tissue-harmonised p75 / p90 | layer-harmonised p75 / p90 |")
    print("|---|---|---|---|---|")
    for name, bscans in images.items():
        bscans = [b if b.ndim == 2 else b[..., 0] for b in bscans]
        masks = [layer_retina(b[None], model=model)[0] for b in bscans]
        row = {key: np.mean([retina_stats(f(b, m), m) for b, m in zip(bscans, masks, strict=True)], 0).tolist()
               for key, f in (("raw", lambda b, m: to_unit(b)), ("tissue", lambda b, m: harmonise(b)),
                              ("layers", harmonise))}
        out[name] = {**row, "retina_fraction": float(np.mean([m.mean() for m in masks]))}
        cells = " | ".join(f"{row[k][2]:.3f} / {row[k][3]:.3f}" for k in ("raw", "tissue", "layers"))
        print(f"| {name} | {out[name]['retina_fraction']:.2f} | {cells} |")
    names = ("floor", "median", "p75", "p90", "p99")
    for key in ("raw", "tissue", "layers"):
        a = np.array([out[n][key] for n in images])
        out[f"spread_{key}"] = dict(zip(names, (a.max(0) - a.min(0)).tolist(), strict=True))
        print(f"spread over the sets, {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in out[f"spread_{key}"].items()))
    return out


if __name__ == "__main__":
    main()
