"""Markdown table of the layer model's leave-one-patient-out folds (``training/layers_train.py lopo``'s JSON files).

    PYTHONPATH=src python training/layers_report.py --runs /work/runs/layers
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BANDS = ("NFL", "GCL_IPL", "INL", "OPL", "ONL_ISM", "ISE", "OS_RPE")
RELAYNET = {"NFL": 0.90, "GCL_IPL": 0.94, "INL": 0.87, "OPL": 0.84, "ONL_ISM": 0.93, "ISE": 0.92, "OS_RPE": 0.90,
            "fluid": 0.77}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, default=Path("/work/runs/layers"))
    args = ap.parse_args()
    folds = [json.loads(p.read_text()) for p in sorted(args.runs.glob("fold_*.json"))]
    cols = [*BANDS, "fluid"]
    print("| held-out patient | " + " | ".join(cols) + " | mean band (NFL..OS+RPE) | Bonn BM MAE px | Bonn RPE MAE px "
          "| train s |")
    print("|---" * (len(cols) + 5) + "|")
    for f in folds:
        d = f["dice"]
        print(f"| {f['held_out']} | " + " | ".join(f"{d[c]:.3f}" for c in cols) +
              f" | {f['mean_band_dice']:.3f} | {f['bonn']['bm_mae_px']:.2f} | {f['bonn']['rpe_mae_px']:.2f} "
              f"| {f['train_s']:.0f} |")
    if folds:
        mean = {c: float(np.nanmean([f["dice"][c] for f in folds])) for c in cols}
        print(f"| **mean of {len(folds)} folds** | " + " | ".join(f"**{mean[c]:.3f}**" for c in cols) +
              f" | **{np.mean([f['mean_band_dice'] for f in folds]):.3f}** "
              f"| **{np.mean([f['bonn']['bm_mae_px'] for f in folds]):.2f}** "
              f"| **{np.mean([f['bonn']['rpe_mae_px'] for f in folds]):.2f}** "
              f"| {np.mean([f['train_s'] for f in folds]):.0f} |")
        print("| ReLayNet (Roy et al. 2017, other split) | " + " | ".join(f"{RELAYNET[c]:.2f}" for c in cols) +
              " | 0.90 | – | – | – |")


if __name__ == "__main__":
    main()
