"""Image statistics of the real shared sets and the phantom before and after ``preprocess.intensity.harmonise``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/intensity_stats.py [--data ../shared/data] [--json FILE]

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
from scipy import ndimage as ndi
from skimage import io

from oct_wsss.preprocess.inputs import SATURATED, resize, to_unit
from oct_wsss.preprocess.intensity import harmonise, tissue_mask
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
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
