"""Measure the real-scan numbers that `oct_wsss.synth` uses as defaults and print them.

Reads the shared real data (never copied into the repo):
- Duke DME (Chiu 2015), 55 Spectralis B-scans with dense layer maps: per-layer thickness (px) and
  uint8 intensity statistics per layer class, fluid intensity, vitreous noise floor.
- Bonn drusen volume, 70 Spectralis B-scans with expert RPE/BM lines: RPE-BM distance, drusen
  heights and widths, BM curvature and tilt.

Usage: ``python training/calibrate_synth.py [--data ../shared/data] [--synth SEED ...]`` (``--synth``:
the same statistics on healthy phantoms instead). The printed numbers are quoted
in ``docs/synthetic.md`` and as named constants in ``src/oct_wsss/synth/anatomy.py``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage, optimize

DUKE_CLASSES = ["vitreous", "NFL", "GCL+IPL", "INL", "OPL", "ONL+ISM", "ISE(EZ)", "OS+RPE", "below BM", "fluid"]


def duke_stats(root: Path) -> None:
    """Per-class intensity and per-layer thickness on the Duke DME label maps."""
    rows = list(csv.DictReader(open(root / "index.csv")))
    values: dict[int, list[np.ndarray]] = {c: [] for c in range(10)}
    core: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 8)}
    thick: dict[int, list[np.ndarray]] = {c: [] for c in range(1, 8)}
    choroid_top: list[np.ndarray] = []
    deep: list[np.ndarray] = []
    foveal_min, totals = [], []
    for r in rows:
        img = iio.imread(root / r["image"])
        lab = iio.imread(root / r["label"])
        valid = img != 255
        for c in range(10):
            values[c].append(img[(lab == c) & valid])
        annotated = (lab == 0).any(axis=0)
        nofluid_cols = annotated & ~(lab == 9).any(axis=0)
        for c in range(1, 8):
            m = lab == c
            t = m.sum(axis=0)
            thick[c].append(t[nofluid_cols])
            # Band core: the middle half of the band in each column (less partial-volume blur at edges).
            frac = np.cumsum(m, axis=0) / np.maximum(t, 1)
            sel = m & (frac > 0.25) & (frac <= 0.75) & valid & nofluid_cols[None, :]
            core[c].append(img[sel])
        # Choroid: first 60 px below BM vs 150-250 px below BM (depth attenuation).
        bm = np.argmax(lab == 8, axis=0)
        rows_idx = np.arange(lab.shape[0])[:, None]
        below = rows_idx - bm[None, :]
        choroid_top.append(img[(below >= 0) & (below < 60) & valid & annotated[None, :]])
        deep.append(img[(below >= 150) & (below < 250) & valid & annotated[None, :]])
        if r["has_fluid"] == "0":
            tot = ((lab >= 1) & (lab <= 7)).sum(axis=0)[annotated]
            totals.append(tot)
            foveal_min.append(np.percentile(tot, 2))
    print("== Duke DME (Chiu 2015): 55 Spectralis B-scans, uint8, 255 padding ignored ==")
    print(f"{'class':<10} {'mean':>6} {'sd':>6} {'p5':>5} {'p25':>5} {'p50':>5} {'p75':>5} {'p95':>5} {'n_px':>9}")
    for c in range(10):
        v = np.concatenate(values[c]).astype(np.float64)
        p = np.percentile(v, [5, 25, 50, 75, 95])
        print(f"{DUKE_CLASSES[c]:<10} {v.mean():6.1f} {v.std():6.1f} " + " ".join(f"{x:5.0f}" for x in p)
              + f" {v.size:9d}")
    ct, dp = np.concatenate(choroid_top).astype(float), np.concatenate(deep).astype(float)
    print(f"choroid 0-60 px below BM: mean {ct.mean():.1f} sd {ct.std():.1f}; "
          f"150-250 px below BM: mean {dp.mean():.1f}")
    print("layer thickness (px, fluid-free annotated columns): median [p10, p90]; band-core intensity mean / p50")
    for c in range(1, 8):
        t = np.concatenate(thick[c])
        k = np.concatenate(core[c]).astype(float)
        print(f"  {DUKE_CLASSES[c]:<10} {np.median(t):5.1f} [{np.percentile(t, 10):5.1f}, {np.percentile(t, 90):5.1f}]"
              f"   core {k.mean():6.1f} / {np.median(k):4.0f}")
    tot = np.concatenate(totals)
    print(f"ILM-BM total (fluid-free B-scans): median {np.median(tot):.0f} px, "
          f"per-B-scan 2nd percentile (foveal) median {np.median(foveal_min):.0f} px")
    vit = np.concatenate(values[0]).astype(float)
    print(f"vitreous: fraction of pixels == 0: {np.mean(vit == 0):.3f}; fraction > 50: {np.mean(vit > 50):.3f}")
    fit_display_model(vit, {c: np.concatenate(values[c]).astype(float) for c in (1, 2, 3, 5)})


def _wilson_hilferty(g: np.ndarray, k: float) -> np.ndarray:
    """Unit-mean gamma(k) from standard normal ``g`` (the transform ``oct_wsss.synth.noise`` uses)."""
    c = 1.0 / (9.0 * k)
    return np.maximum(1.0 - c + np.sqrt(c) * g, 0.0) ** 3


def fit_display_model(vitreous: np.ndarray, tissue: dict[int, np.ndarray]) -> None:
    """Fit the vitreous model of ``oct_wsss.synth.noise``: a separate population of exact zeros
    (pixels whose single-frame noise, exponential, falls under a threshold t; the zero mask shares half
    its Gaussian field with the displayed value) and, elsewhere, out = clip(A * N**0.25 - O) with
    frame-averaged noise N ~ gamma(k_noise). A, O, k_noise fit the non-zero quantiles; then the tissue
    speckle shape k from the layers' sd / (median + O)."""
    rng = np.random.default_rng(0)
    g1, g2 = rng.standard_normal((2, 400_000))
    ez = _wilson_hilferty(0.5 * g1 + np.sqrt(0.75) * g2, 1.0)
    zero_frac = float(np.mean(vitreous == 0))
    nz = vitreous[vitreous > 0]
    qs = [5, 10, 25, 50, 75, 90, 95]
    target = np.percentile(nz, qs)

    def simulate(p: np.ndarray, t: float) -> np.ndarray:
        return np.where(ez < t, 0.0, np.clip(np.rint(p[0] * _wilson_hilferty(g1, p[2]) ** 0.25 - p[1]), 0, 255))

    def resid(p: np.ndarray) -> np.ndarray:
        x = simulate(p, -1.0)
        return np.r_[(np.percentile(x, qs) - target) / 5, (x.mean() - nz.mean()) / 2]

    a, o, k_noise = optimize.least_squares(resid, [100.0, 70.0, 4.0], diff_step=0.05,
                                           bounds=([10, 0, 0.5], [400, 400, 40])).x
    clip_zeros = np.mean(simulate(np.array([a, o, k_noise]), -1.0) == 0)
    t = float(np.quantile(ez, max(zero_frac - clip_zeros, 0.0)))
    sim = simulate(np.array([a, o, k_noise]), t)
    ratio = np.mean([v.std() / (np.median(v) + o) for v in tissue.values()])
    ks = np.linspace(1, 12, 111)
    r = [np.std(u := rng.gamma(k, 1 / k, 100_000) ** 0.25) / np.median(u) for k in ks]
    k_tissue = ks[int(np.argmin(np.abs(np.array(r) - ratio)))]
    print(f"vitreous non-zero p5/10/25/50/75/90/95: {' '.join(f'{q:.0f}' for q in target)}; "
          f"display model: A = {a:.1f}, O = {o:.1f}, noise gamma k = {k_noise:.2f}, zero threshold t = {t:.3f} "
          f"(model: mean {sim.mean():.1f} sd {sim.std():.1f} zeros {np.mean(sim == 0):.3f})")
    print(f"tissue sd/(p50+O) = {ratio:.3f} -> tissue speckle gamma k = {k_tissue:.2f}")


def _line_rows(layer: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """Per column, the mean row of pixels with any of ``values`` (NaN where absent)."""
    mask = np.isin(layer, values)
    rows = np.arange(layer.shape[0])[:, None]
    n = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (mask * rows).sum(axis=0) / n, np.nan)


def bonn_stats(root: Path) -> None:
    """RPE/BM geometry, drusen heights and intensities on the Bonn Spectralis drusen volume."""
    rows = list(csv.DictReader(open(root / "index.csv")))
    gaps, heights, widths, curv, tilt, rpe_int, vit_int, bm_depth = [], [], [], [], [], [], [], []
    under_rpe: list[np.ndarray] = []
    for r in rows:
        lay = iio.imread(root / r["layers"])
        img = iio.imread(root / r["image"]).astype(float)
        rpe = _line_rows(lay, (255, 170))
        bm = _line_rows(lay, (127,))
        ok = np.isfinite(rpe) & np.isfinite(bm)
        x = np.arange(lay.shape[1])
        gap = bm - rpe
        gaps.append(gap[ok])
        bm_depth.append(bm[ok])
        c2, c1, _ = np.polyfit((x[ok] - 256) / 256, bm[ok], 2)
        curv.append(c2)
        tilt.append(c1)
        elev = ok & (gap > 5)  # drusen: RPE more than ~5 px (20 um) above BM
        lab, n = ndimage.label(elev)
        for i in range(1, n + 1):
            sel = lab == i
            if sel.sum() >= 3:
                heights.append(np.nanmax(gap[sel]))
                widths.append(sel.sum())
                # inside drusen: rows strictly between RPE+3 and BM-1 in those columns
                for col in np.flatnonzero(sel):
                    a, b = int(rpe[col]) + 3, int(bm[col]) - 1
                    if b > a:
                        under_rpe.append(img[a:b, col])
        cols = np.flatnonzero(ok)
        rpe_int.append(img[np.round(rpe[cols]).astype(int), cols])
        top = np.nanmin(rpe[ok]) - 150
        if top > 20:
            vit_int.append(img[5:int(top) - 10].ravel())
    g = np.concatenate(gaps)
    print("== Bonn drusen volume: 70 Spectralis B-scans 496x512, expert RPE/BM lines ==")
    print(f"RPE-BM distance (px): median {np.median(g):.1f}, p10 {np.percentile(g, 10):.1f}, "
          f"p90 {np.percentile(g, 90):.1f}, max {g.max():.0f}")
    print(f"BM depth (row): median {np.median(np.concatenate(bm_depth)):.0f}")
    h, w = np.array(heights), np.array(widths)
    print(f"drusen (RPE > 5 px above BM, >= 3 columns): n = {h.size} cross-sections; "
          f"height px median {np.median(h):.1f} p90 {np.percentile(h, 90):.1f} max {h.max():.0f}; "
          f"width px median {np.median(w):.0f} p90 {np.percentile(w, 90):.0f} max {w.max():.0f}")
    print(f"BM quadratic coefficient (px at image edge vs centre): median {np.median(curv):.1f} "
          f"[p10 {np.percentile(curv, 10):.1f}, p90 {np.percentile(curv, 90):.1f}]; "
          f"linear tilt (px, centre to edge): median {np.median(tilt):.1f} "
          f"[{np.percentile(tilt, 10):.1f}, {np.percentile(tilt, 90):.1f}]")
    ri, vi = np.concatenate(rpe_int), np.concatenate(vit_int)
    print(f"intensity at RPE line: mean {ri.mean():.1f} p50 {np.median(ri):.0f}; vitreous mean {vi.mean():.1f} "
          f"p50 {np.median(vi):.0f} p95 {np.percentile(vi, 95):.0f}")
    if under_rpe:
        d = np.concatenate(under_rpe)
        print(f"inside drusen (RPE+3 .. BM-1): mean {d.mean():.1f} sd {d.std():.1f}")


#: Duke classes as phantom boundaries (top, bottom): ISE = EZ + OS, OS+RPE = IZ + RPE.
SYNTH_BANDS = {"NFL": ("ILM", "NFL_GCL"), "GCL+IPL": ("NFL_GCL", "IPL_INL"), "INL": ("IPL_INL", "INL_OPL"),
               "OPL": ("INL_OPL", "OPL_ONL"), "ONL+ISM": ("OPL_ONL", "EZ"), "ISE(EZ)": ("EZ", "IZ"),
               "OS+RPE": ("IZ", "RPE_BOTTOM")}


def synth_check(seeds: list[int]) -> None:
    """The same statistics on healthy OD phantoms (pooled): band-core p50 and thickness (as Duke's),
    vitreous, choroid, NFL nasal vs temporal thickness."""
    from oct_wsss.synth import make_volume

    vols = [make_volume(seed, healthy=True) for seed in seeds]
    data = np.concatenate([s.volume.data for s in vols]).astype(float)
    lay = {k: np.concatenate([s.layers[k] for s in vols]) for k in vols[0].layers}
    y = np.arange(data.shape[1])[None, :, None] + 0.5
    print(f"== healthy phantoms, seeds {seeds} (band core = middle half; Duke in docs/synthetic.md) ==")
    for name, (top, bottom) in SYNTH_BANDS.items():
        t0, t1 = lay[top][:, None, :], lay[bottom][:, None, :]
        frac = (y - t0) / np.maximum(t1 - t0, 1e-3)
        core = data[(frac > 0.25) & (frac <= 0.75)]
        th = (lay[bottom] - lay[top]).ravel()
        print(f"  {name:<8} core p50 {np.median(core):4.0f}  thickness px median {np.median(th):5.1f} "
              f"[{np.percentile(th, 10):.1f}, {np.percentile(th, 90):.1f}]")
    vit = data[y < lay["ILM"][:, None, :] - 5]
    print(f"vitreous (> 5 px above ILM): mean {vit.mean():.1f} sd {vit.std():.1f} zeros {np.mean(vit == 0):.3f} "
          f"p10/25/50/75/90/95/99 {' '.join(f'{v:.0f}' for v in np.percentile(vit, [10, 25, 50, 75, 90, 95, 99]))}")
    below = y - lay["BM"][:, None, :]
    print(f"choroid 0-60 px below BM mean {data[(below >= 0) & (below < 60)].mean():.1f}; "
          f"150-250 px {data[(below >= 150) & (below < 250)].mean():.1f}")
    nfl = lay["NFL_GCL"] - lay["ILM"]
    half = nfl.shape[1] // 2
    print(f"NFL thickness px, outer thirds of the scan: right {np.median(nfl[:, -half // 3:]):.1f}, "
          f"left {np.median(nfl[:, : half // 3]):.1f} (OD: nasal is right)")


def duke_far_vitreous(root: Path) -> None:
    """Duke vitreous more than 5 px above the ILM (the phantom check's definition) and per-image spread."""
    far, means = [], []
    for r in csv.DictReader(open(root / "index.csv")):
        img, lab = iio.imread(root / r["image"]), iio.imread(root / r["label"])
        y = np.arange(img.shape[0])[:, None]
        annotated = (lab >= 1).any(axis=0)
        sel = (lab == 0) & (img != 255) & annotated[None, :] & (y < np.argmax(lab >= 1, axis=0)[None, :] - 5)
        far.append(img[sel].astype(float))
        means.append(far[-1].mean())
    v = np.concatenate(far)
    print(f"Duke vitreous > 5 px above ILM: mean {v.mean():.1f} sd {v.std():.1f} zeros {np.mean(v == 0):.3f} "
          f"p10/25/50/75/90/95/99 {' '.join(f'{q:.0f}' for q in np.percentile(v, [10, 25, 50, 75, 90, 95, 99]))}; "
          f"per-image mean sd {np.std(means):.1f} (range {min(means):.0f}-{max(means):.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--synth", type=int, nargs="+", metavar="SEED", help="only check healthy phantoms against Duke")
    args = ap.parse_args()
    if args.synth:
        synth_check(args.synth)
        return
    duke_stats(args.data / "duke_dme_chiu2015")
    duke_far_vitreous(args.data / "duke_dme_chiu2015")
    print()
    bonn_stats(args.data / "bonn_drusen_volume")


if __name__ == "__main__":
    main()
