"""How separable is HRF presence on a phantom at all? A classical presence score as a floor for the classifiers.

Scores each B-scan by the maximum of a difference of Gaussians (sigma s vs 3s, the scale of a 2-8 px focus) and
reports the AUROC of that score against the B-scan's label (a focus of >= 5 px in the mask, as training/hrf.py
counts). It also reports the foci's local contrast: mean grey level of each focus minus that of a 4-px ring around
it, and that difference over the ring's standard deviation (local CNR). A learned classifier that stays below the
AUROC floor has not learned HRF presence; a floor near 0.5 says the phantom's foci are not separable from speckle by
their brightness alone.

Usage: ``python training/hrf_presence_baseline.py DATA_DIR [--sigmas 1 2] [--limit N]`` (DATA_DIR in the synth
layout, e.g. ``data/synth-hrf`` from ``training/hrf-synth.yaml``).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from oct_wsss.classes import HRF
from oct_wsss.evaluate.classification import roc_auc
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.hrf import hrf_count


def dog_max(image: np.ndarray, sigma: float) -> float:
    """Largest difference-of-Gaussians response (sigma vs 3 sigma) in a B-scan."""
    img = image.astype(np.float32)
    return float((ndimage.gaussian_filter(img, sigma) - ndimage.gaussian_filter(img, 3 * sigma)).max())


def focus_contrast(image: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """(contrast, ring s.d.) of every HRF focus in one B-scan: focus mean minus the mean of a 4-px ring around it."""
    img = image.astype(np.float32)
    foci, n = ndimage.label(mask == HRF)
    out = []
    for k in range(1, n + 1):
        focus = foci == k
        ring = ndimage.binary_dilation(focus, iterations=4) & ~ndimage.binary_dilation(focus, iterations=1)
        out.append((float(img[focus].mean() - img[ring].mean()), float(img[ring].std())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="data set folder in the synth layout")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--limit", type=int, help="score only the first N B-scans")
    args = parser.parse_args()
    samples = load_dataset({"layout": "synth", "root": args.data}).samples[: args.limit]
    labels = np.array([hrf_count(s.load_mask()) > 0 for s in samples])
    print(f"{len(samples)} B-scans, {int(labels.sum())} with a focus of >= 5 px")
    contrast = np.array([c for s in samples if s.load_mask() is not None
                         for c in focus_contrast(s.load_image(), s.load_mask())])
    if len(contrast):
        print(f"{len(contrast)} foci: contrast to a 4-px ring median {np.median(contrast[:, 0]):.1f} grey levels, "
              f"ring s.d. median {np.median(contrast[:, 1]):.1f}, local CNR median "
              f"{np.median(contrast[:, 0] / np.maximum(contrast[:, 1], 1e-6)):.1f}")
    for sigma in args.sigmas:
        scores = np.array([dog_max(s.load_image(), sigma) for s in samples])
        print(f"DoG sigma {sigma:g} px: AUROC {roc_auc(scores, labels):.3f}")


if __name__ == "__main__":
    main()
