"""Drusen ground truth of the shared Bonn volume from its expert RPE / BM lines, measured and drawn.

    PYTHONPATH=src python training/bonn_drusen.py [--figure docs/images/bonn-drusen.png] [--bscans 10 41 63]

Opens ``../shared/data/bonn_drusen_volume`` with ``oct_wsss.io.read_volume`` (B-scan folder + its stripped Heyex
XML, which gives the physical scale), derives drusen with the ``bonn`` adapter (eyepy's drusen rule) and prints the
drusen volume and per-B-scan areas through ``oct_wsss.evaluate.measure.measure_labels`` (the Quantify table's code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from oct_wsss.evaluate.measure import measure_labels
from oct_wsss.io import read_volume
from oct_wsss.training.datasets._util import read_plane
from oct_wsss.training.datasets.bonn import BM_VALUES, RPE_VALUES, load_bonn

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bonn_drusen_volume"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--bscans", type=int, nargs="+", default=[10, 41, 63], help="B-scan numbers to draw")
    args = ap.parse_args()
    vol = read_volume(args.root)
    ds = load_bonn(args.root)
    labels = np.stack([s.load_mask() for s in ds.samples])
    m = measure_labels(labels, vol.spacing_mm)
    area = {r["bscan"]: r["area_mm2"] for r in m.bscans if r["class"] == "drusen"}
    areas = np.array([area.get(i, 0.0) for i in range(len(ds.samples))])
    print(f"spacing (z, y, x) mm: {vol.spacing_mm}; B-scans: {len(ds.samples)}; with drusen: "
          f"{ds.info['bscans_with_drusen']}; drusen pixels: {ds.info['drusen_pixels']}")
    print(f"drusen volume: {m.volume[0]['volume_mm3']:.4f} mm3; B-scan area mm2: median {np.median(areas):.4f}, "
          f"max {areas.max():.4f}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        by = {s.bscan: (i, s) for i, s in enumerate(ds.samples)}
        fig, axes = plt.subplots(len(args.bscans), 1, figsize=(8, 2.4 * len(args.bscans)), dpi=100)
        for ax, n in zip(np.atleast_1d(axes), args.bscans, strict=True):
            i, s = by[n]
            lines = read_plane(s.mask.args[0][i])  # the line map this B-scan's mask came from
            rows = np.flatnonzero(np.isin(lines, (*RPE_VALUES, *BM_VALUES)).any(axis=1))
            top, bottom = max(int(rows.min()) - 60, 0), int(rows.max()) + 30
            ax.imshow(vol.data[i, top:bottom], cmap="gray", aspect="auto")
            rpe = np.nonzero(np.isin(lines, RPE_VALUES)[top:bottom])
            bm = np.nonzero(np.isin(lines, BM_VALUES)[top:bottom])
            ax.plot(rpe[1], rpe[0], ",", color="yellow")
            ax.plot(bm[1], bm[0], ",", color="cyan")
            ax.contour(labels[i, top:bottom] > 0, levels=[0.5], colors=["magenta"], linewidths=0.8)
            ax.set_title(f"B-scan {n}: RPE (yellow), BM (cyan), derived drusen (magenta), "
                         f"{areas[i]:.4f} mm2", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure)


if __name__ == "__main__":
    main()
