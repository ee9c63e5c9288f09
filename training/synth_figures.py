"""Render the docs/synthetic.md figures: phantom B-scans next to real Spectralis ones, and a
ground-truth overlay in the ontology colours. Usage: ``python training/synth_figures.py [--data DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from oct_wsss.classes import ONTOLOGY
from oct_wsss.synth import make_volume

REPO = Path(__file__).resolve().parents[1]


def _pair(real: np.ndarray, synth: np.ndarray, titles: tuple[str, str], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=100)
    for ax, img, title in zip(axes, (real, synth), titles, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _busiest(labels: np.ndarray, cid: int) -> int:
    return int(np.argmax((labels == cid).sum(axis=(1, 2))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    out = REPO / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)

    duke = iio.imread(args.data / "duke_dme_chiu2015" / "images" / "Subject_04_05.png")[:, :512]
    s = make_volume(4, prevalence={"srf": 0.0, "irf": 1.0, "hrf": 1.0, "ped": 0.0, "ez": 0.0, "drusen": 0.0})
    b = _busiest(s.labels, 2)
    _pair(duke, s.volume.data[b], ("real: Duke DME, Subject_04 B-scan 5 (Spectralis)",
                                   f"synthetic: seed 4, B-scan {b} (IRF + HRF)"), out / "synthetic_vs_real_duke.png")

    bonn = iio.imread(args.data / "bonn_drusen_volume" / "bscans" / "060.png")
    s2 = make_volume(2, prevalence={"srf": 0.0, "irf": 0.0, "hrf": 0.0, "ped": 0.0, "ez": 1.0, "drusen": 1.0})
    b2 = _busiest(s2.labels, 6)
    _pair(bonn, s2.volume.data[b2], ("real: Bonn drusen volume, B-scan 60 (Spectralis)",
                                     f"synthetic: seed 2, B-scan {b2} (drusen + EZ disruption)"),
          out / "synthetic_vs_real_bonn.png")

    healthy = make_volume(9, healthy=True)
    s3 = make_volume(7, prevalence={k: 1.0 for k in ("srf", "irf", "ped", "ez", "hrf", "drusen")})
    b3 = int(np.argmax([len(np.unique(lab)) * 1e6 + (lab > 0).sum() for lab in s3.labels]))
    img = s3.volume.data[b3]
    rgb = np.repeat(img[..., None] / 255.0, 3, axis=2)
    colours = np.array([c.colour[:3] for c in ONTOLOGY])
    lab = s3.labels[b3]
    over = np.where(lab[..., None] > 0, 0.45 * rgb + 0.55 * colours[lab], rgb)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2), dpi=100)
    for ax, im, title in zip(axes, (healthy.volume.data[24], img, over),
                             ("synthetic healthy (seed 9, B-scan 24)", f"synthetic, all lesions (seed 7, B-scan {b3})",
                              "ground truth overlay"), strict=True):
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c.colour[:3]) for c in ONTOLOGY[1:7]]
    axes[2].legend(handles, [c.key.upper() for c in ONTOLOGY[1:7]], loc="lower right", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "synthetic_ground_truth.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
