"""Real and synthetic B-scans side by side with the real student's proposals, so a reader sees where the phantom is
unlike real OCT. Each panel's title gives the intensity anchors of ``preprocess.intensity`` (noise floor, retinal
median, retinal 99th percentile, in [0, 1]) and the proposal's Dice against the truth.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_vs_phantom_figure.py --out docs/images/real-vs-phantom.png

Left: Duke Subject_01 B-scan 5 (held-out patient, fluid) and Bonn B-scan 62 (held-out B-scan, drusen). Right: the
demo phantom's B-scans with the most fluid and the most drusen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from real_student_figure import DATA, overlay
from skimage import io

from oct_wsss.classes import DRUSEN, FLUID, IRF, SRF
from oct_wsss.preprocess.inputs import to_unit
from oct_wsss.preprocess.intensity import anchors
from oct_wsss.propose.student import StudentProposer
from oct_wsss.synth import demo_phantom
from oct_wsss.training.datasets.bonn import load_bonn
from oct_wsss.training.hrf_eval import dice
from oct_wsss.weights import bundled


def panels(data: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(title, B-scan, truth in fluid/drusen ids, scored class): two real, then two phantom B-scans."""
    duke = data / "duke_dme_chiu2015"
    duke_truth = np.where(io.imread(duke / "labels" / "Subject_01_05.png") == 9, FLUID, 0)
    bonn = {s.bscan: s for s in load_bonn(data / "bonn_drusen_volume").samples}[62]
    phantom = demo_phantom()
    truth = np.where(np.isin(phantom.labels, (SRF, IRF)), FLUID, np.where(phantom.labels == DRUSEN, DRUSEN, 0))
    wet = int(np.argmax((truth == FLUID).sum((1, 2))))
    dry = int(np.argmax((truth == DRUSEN).sum((1, 2))))
    return [("Duke Subject_01 B-scan 5", io.imread(duke / "images" / "Subject_01_05.png"), duke_truth, FLUID),
            ("Bonn B-scan 62", bonn.load_image(), bonn.load_mask(), DRUSEN),
            (f"phantom B-scan {wet}", phantom.volume.data[wet], truth[wet], FLUID),
            (f"phantom B-scan {dry}", phantom.volume.data[dry], truth[dry], DRUSEN)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("docs/images/real-vs-phantom.png"))
    args = ap.parse_args()
    student = StudentProposer.from_checkpoint(bundled("student", domain="real"), device="cpu")
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))
    for k, (title, image, truth, cls) in enumerate(panels(args.data)):
        image = image if image.ndim == 2 else image[..., 0]
        pred = student.predict(image)
        floor, mid, high = anchors(to_unit(image))
        score = dice(pred == cls, truth == cls)
        name = "fluid" if cls == FLUID else "drusen"
        line = f"{title}: floor {floor:.2f}, median {mid:.2f}, p99 {high:.2f}; {name} Dice {score:.2f}"
        print(line)
        ax = axes[k % 2, k // 2]
        ax.imshow(overlay(image, pred))
        ax.contour(truth == cls, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(line, fontsize=7)
        ax.axis("off")
    fig.suptitle("real (left) vs phantom (right); real student's proposal filled (fluid cyan, drusen magenta), "
                 "truth outlined yellow", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
