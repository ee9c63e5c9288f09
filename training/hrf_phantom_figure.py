"""HRF proposals of a trained classifier on the demo phantom (496 x 512, the size graders see): per-B-scan Dice and a
figure of ground truth (green) beside the proposal (red) on the four B-scans richest in HRF.

Usage: ``python training/hrf_phantom_figure.py CHECKPOINT [--out docs/images/hrf-phantom.png]``
"""

from __future__ import annotations

import argparse

import numpy as np
from skimage.io import imsave
from skimage.segmentation import find_boundaries

from oct_wsss.classes import HRF
from oct_wsss.propose import propose
from oct_wsss.synth import demo_phantom
from oct_wsss.training.hrf_eval import dice


def panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, rows: int = 120) -> np.ndarray:
    """Truth and proposal outlines side by side on a band of ``rows`` around the foci."""
    ys = np.nonzero(truth | pred)[0]
    y0 = int(np.clip(ys.mean() - rows // 2, 0, image.shape[0] - rows)) if ys.size else 0
    band = np.stack([image[y0:y0 + rows]] * 3, -1).astype(np.uint8)
    left, right = band.copy(), band.copy()
    left[find_boundaries(truth[y0:y0 + rows], mode="outer")] = (0, 255, 0)
    right[find_boundaries(pred[y0:y0 + rows], mode="outer")] = (255, 60, 60)
    return np.concatenate([left, np.full((rows, 6, 3), 255, np.uint8), right], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="docs/images/hrf-phantom.png")
    args = parser.parse_args()
    phantom = demo_phantom()
    truth = phantom.labels == HRF
    richest = sorted(int(i) for i in np.argsort(-truth.sum((1, 2)), kind="stable")[:4])
    healthy = [int(i) for i in np.flatnonzero(truth.sum((1, 2)) == 0)[:4]]
    result = propose(phantom.volume, method="hrf", checkpoint=args.checkpoint, bscans=richest + healthy,
                     device="cpu")
    pred = result.labels == HRF
    for i in richest + healthy:
        print(f"B-scan {i}: {int(truth[i].sum())} HRF px, proposed {int(pred[i].sum())} px, "
              f"Dice {dice(pred[i], truth[i]):.3f}")
    gap = np.full((6, 2 * phantom.volume.data.shape[2] + 6, 3), 255, np.uint8)
    rows = [panel(phantom.volume.data[i], truth[i], pred[i]) for i in richest]
    imsave(args.out, np.concatenate([r for row in rows for r in (row, gap)][:-1], 0), check_contrast=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
