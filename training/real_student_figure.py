"""Figure of the bundled real student on held-out real B-scans: ground truth beside its proposal.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/real_student_figure.py --out docs/images/real-student.png

Rows: Duke Subject_01 B-scan 5 and Subject_07 B-scan 6 (held-out patients, fluid), Bonn B-scan 62 (held-out B-scan
of the training eye, drusen), SJTU eye A B-scan 25 (never seen; SRF labelled only). Columns: the B-scan, the truth
(fluid cyan, drusen magenta), the student's proposal in the same colours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage import io

from oct_wsss.classes import DRUSEN, FLUID, SRF
from oct_wsss.propose.student import StudentProposer
from oct_wsss.training.datasets.bonn import load_bonn
from oct_wsss.weights import bundled

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLOURS = {FLUID: (0.0, 1.0, 1.0), DRUSEN: (1.0, 0.0, 1.0)}


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32) / max(float(image.max()), 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for cls, colour in COLOURS.items():
        rgb[labels == cls] = 0.45 * rgb[labels == cls] + 0.55 * np.array(colour)
    return rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("docs/images/real-student.png"))
    args = ap.parse_args()
    student = StudentProposer.from_checkpoint(bundled("student", domain="real"), device="cpu")
    duke = args.data / "duke_dme_chiu2015"
    rows = []
    for name in ("Subject_01_05", "Subject_07_06"):
        truth = io.imread(duke / "labels" / f"{name}.png")
        rows.append((f"Duke {name} (held-out patient)", io.imread(duke / "images" / f"{name}.png"),
                     np.where(truth == 9, FLUID, 0)))
    bonn = {s.bscan: s for s in load_bonn(args.data / "bonn_drusen_volume").samples}[62]
    rows.append(("Bonn B-scan 62 (held-out B-scan, training eye)", bonn.load_image(), bonn.load_mask()))
    sjtu = args.data / "sjtu_srf_fewshot"
    truth = io.imread(sjtu / "labels" / "eyeA_TRAIN001_25.png")
    rows.append(("SJTU eye A B-scan 25 (unseen eye; SRF labelled only)", io.imread(sjtu / "images" /
                                                                               "eyeA_TRAIN001_25.png"),
                 np.where(truth == SRF, FLUID, 0)))
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.1 * len(rows)))
    for r, (title, image, truth) in enumerate(rows):
        image = image if image.ndim == 2 else image[..., 0]
        pred = student.predict(image)
        for c, (panel, label) in enumerate(((image, "B-scan"), (overlay(image, truth), "truth"),
                                            (overlay(image, pred), "real student"))):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
            ax.set_title(f"{title}: {label}" if c == 0 else label, fontsize=8)
            ax.axis("off")
    fig.suptitle("real-student.safetensors on held-out real B-scans (fluid cyan, drusen magenta)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
