"""Lesion-shape and shadow statistics of the real shared sets against the phantom (issue 8's realism check).

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/phantom_realism.py [--data ../shared/data] [--json FILE]

Intensity, speckle and layer thickness are calibrated by ``training/calibrate_synth.py``; this script measures what
that leaves out, on the ground truth masks (the same pixel scale: Spectralis, 3.9 um axial, ~11 um lateral):

- **fluid**: Duke DME's manual fluid (label 9) against the phantom's SRF + IRF (volumes with IRF, seeds 0-5). Per
  B-scan with fluid: connected pieces (>= 5 px), fluid area, the largest piece's share, and the area-weighted
  solidity (area / convex hull) of pieces >= 30 px: a smooth convex pocket scores ~1, lobed cyst clusters less.
- **drusen**: the Bonn eye's drusen (RPE elevation above BM, the adapter's rule) against the phantom's (volumes
  with drusen, seeds 0-5). Per B-scan with drusen: drusen count (runs of drusen columns), their widths and heights.
- **shadows**: share of columns whose outer choroid (5-40 px below BM) is under 0.6 x the B-scan's median column,
  on Duke (BM = top of label 8), Bonn (its BM line) and the phantom (its BM surface), calibrated and random look.
- **device look**: ``intensity_stats.stats`` (noise floor, retinal median, p90, p99, contrast) per real set (mean
  over its B-scans) against the phantom with ``look="random"`` (seeds 0-11, 4 B-scans each: p5-p95 over B-scans).
  A real set inside the phantom's p5-p95 on every statistic is inside the randomisation's range.

Prints one markdown table per statistic (docs/synthetic.md, docs/results-real.md).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from intensity_stats import SETS, stats  # the sibling script (training/ is on sys.path when run as a file)

from oct_wsss.classes import DRUSEN, IRF, SRF
from oct_wsss.preprocess.inputs import to_unit
from oct_wsss.preprocess.intensity import tissue_mask
from oct_wsss.synth import make_volume
from oct_wsss.synth.phantom import GENERATOR_VERSION
from oct_wsss.synth.realism import drusen_stats, fluid_stats, shadow_share
from oct_wsss.training.datasets.bonn import BM_VALUES, RPE_VALUES, line_map_pairs, load_bonn
from oct_wsss.training.datasets.drusen import lines_from_layer_map

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEEDS = range(6)


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median of each statistic over the B-scans."""
    return {k: float(np.nanmedian([r[k] for r in rows])) for k in rows[0]} | {"bscans": len(rows)}


def duke(root: Path) -> tuple[list[dict], list[float]]:
    fluid, shadows = [], []
    for r in csv.DictReader(open(root / "index.csv")):
        img, lab = iio.imread(root / r["image"]), iio.imread(root / r["label"])
        if (lab == 9).sum() >= 20:
            fluid.append(fluid_stats(lab == 9))
        below = lab == 8
        bm = np.where(below.any(0), below.argmax(0), np.nan).astype(np.float32)
        shadows.append(shadow_share(np.where(img == 255, 0, img), bm))
    return fluid, shadows


def bonn(root: Path) -> tuple[list[tuple[int, int]], list[int], list[float]]:
    data = load_bonn(root)
    sizes, counts, shadows = [], [], []
    for s in data.samples:
        mask = s.load_mask() == DRUSEN
        if mask.any():
            found = drusen_stats(mask)
            sizes += found
            counts.append(len(found))
    for img_path, map_path, _ in line_map_pairs(root):
        _, bm = lines_from_layer_map(iio.imread(map_path), RPE_VALUES, BM_VALUES)
        shadows.append(shadow_share(iio.imread(img_path), bm))
    return sizes, counts, shadows


def phantom() -> tuple[list[dict], list[tuple[int, int]], list[int], list[float]]:
    fluid, sizes, counts, shadows = [], [], [], []
    for seed in SEEDS:
        v = make_volume(seed, prevalence={"irf": 1.0, "drusen": 1.0})
        for i, (img, lab) in enumerate(zip(v.volume.data, v.labels, strict=True)):
            wet = np.isin(lab, (SRF, IRF))
            if wet.sum() >= 20:
                fluid.append(fluid_stats(wet))
            if (lab == DRUSEN).any():
                found = drusen_stats(lab == DRUSEN)
                sizes += found
                counts.append(len(found))
            shadows.append(shadow_share(img, v.layers["BM"][i]))
    return fluid, sizes, counts, shadows


LOOK_STATS = ("floor", "retinal median", "retinal p90", "retinal p99", "contrast")


def look_rows(data: Path) -> tuple[dict, list[float]]:
    """Device-look statistics: real sets' means and the random-look phantom's p5/p95 per statistic; shadows too."""
    def one(b: np.ndarray) -> list[float]:
        unit = to_unit(b if b.ndim == 2 else b[..., 0])
        return stats(unit, tissue_mask(unit))

    out = {name: np.mean([one(iio.imread(p)) for p in sorted(data.glob(pattern))], 0) for name, pattern in SETS.items()}
    rows, shadows = [], []
    for seed in range(12):
        v = make_volume(seed, n_bscans=4, look="random", prevalence={"irf": 1.0, "drusen": 1.0})
        rows += [one(b) for b in v.volume.data]
        shadows += [shadow_share(b, v.layers["BM"][i]) for i, b in enumerate(v.volume.data)]
    table = {name: dict(zip(LOOK_STATS, map(float, vals), strict=True)) for name, vals in out.items()}
    for q in (5, 95):
        table[f"phantom v{GENERATOR_VERSION} random look p{q}"] = dict(
            zip(LOOK_STATS, map(float, np.percentile(rows, q, axis=0)), strict=True))
    return table, shadows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    d_fluid, d_shadow = duke(args.data / "duke_dme_chiu2015")
    b_sizes, b_counts, b_shadow = bonn(args.data / "bonn_drusen_volume")
    p_fluid, p_sizes, p_counts, p_shadow = phantom()
    look, r_shadow = look_rows(args.data)
    out = {"generator_version": GENERATOR_VERSION,
           "fluid": {"duke": summarise(d_fluid), "phantom": summarise(p_fluid)},
           "drusen": {}, "shadow": {}}
    for name, sizes, counts in (("bonn", b_sizes, b_counts), ("phantom", p_sizes, p_counts)):
        w, h = np.array(sizes).T
        out["drusen"][name] = {"bscans": len(counts), "drusen per B-scan": float(np.median(counts)),
                               "per B-scan p90": float(np.percentile(counts, 90)),
                               "width median": float(np.median(w)), "width p90": float(np.percentile(w, 90)),
                               "height median": float(np.median(h)), "height p90": float(np.percentile(h, 90))}
    for name, vals in (("duke", d_shadow), ("bonn", b_shadow), ("phantom", p_shadow),
                       ("phantom random look", r_shadow)):
        out["shadow"][name] = {"bscans": len(vals), "shadowed columns (median)": float(np.nanmedian(vals)),
                               "p90": float(np.nanpercentile(vals, 90))}
    print(f"phantom generator v{GENERATOR_VERSION}, seeds {SEEDS.start}-{SEEDS.stop - 1}, 49 x 496 x 512, "
          "prevalence irf 1, drusen 1\n")
    for stat, table in out.items():
        if stat == "generator_version":
            continue
        keys = list(next(iter(table.values())))
        print(f"| {stat} | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
        for name, row in table.items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.3g}" for k in keys) + " |")
        print()
    out["device look"] = look
    lo, hi = (look[f"phantom v{GENERATOR_VERSION} random look p{q}"] for q in (5, 95))
    print("| device look | " + " | ".join(LOOK_STATS) + " | inside p5-p95 |\n|---|" + "---|" * (len(LOOK_STATS) + 1))
    for name, row in look.items():
        inside = all(lo[k] <= row[k] <= hi[k] for k in LOOK_STATS)
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in LOOK_STATS) + f" | {'yes' if inside else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
