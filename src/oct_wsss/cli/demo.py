"""The ``demo`` subcommand: the demo phantom proposed by a bundled checkpoint, in napari or headless.

``oct-wsss demo`` opens napari with the sample volume and the Propose widget preset to the bundled student, and
starts proposing. ``oct-wsss demo --headless --out DIR`` does the same without a window and writes
``DIR/labels.tif`` + ``provenance.json`` (as ``propose`` does), ``DIR/overlay.png`` (image | proposal | ground
truth for a few B-scans) and ``DIR/metrics.json`` (per-class DSC/IoU against the phantom's truth, timings).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.cli._common import CliError

PLUGIN = "napari-oct-wsss"


def demo_checkpoint(method: str, checkpoint: Path | None) -> Path:
    """The checkpoint the demo uses: the one given, else the bundled ``demo-<method>``."""
    from oct_wsss.weights import bundled

    path = checkpoint or bundled(method)
    if path is None:
        raise CliError(f"this install ships no bundled {method} checkpoint; pass --checkpoint FILE.safetensors")
    if not Path(path).is_file():
        raise CliError(f"{path}: no such checkpoint file")
    return Path(path)


def _demo(args: argparse.Namespace) -> None:
    if args.headless:
        if args.out is None:
            raise CliError("--headless needs --out DIR (where labels.tif, overlay.png and metrics.json go)")
        report = run_headless(args.out, method=args.method, checkpoint=args.checkpoint, n_bscans=args.bscans,
                              device=args.device, overlay=args.overlay)
        for key, value in report["scores"].items():
            print(f"{key:>8}: DSC {_fmt(value['dice_pooled'])}  IoU {_fmt(value['iou'])}")
        t = report["timings"]
        print(f"proposed {report['volume'][0]} B-scans in {t['propose_s']:.2f} s ({t['per_bscan_s']:.3f} s per "
              f"B-scan, {report['device']}); wrote {', '.join(report['files'].values())}")
        return
    try:
        import napari
    except ImportError as err:  # the GUI is an extra
        raise CliError("the demo needs napari and a Qt binding: pip install 'napari-oct-wsss[gui]' "
                       "(or run it without a window: oct-wsss demo --headless --out DIR)") from err
    from oct_wsss.propose.registry import preload

    ckpt = demo_checkpoint(args.method, args.checkpoint)
    preload(args.method)  # before Qt starts: a first torchvision import (triton) under a live viewer crashed
    populate_demo(napari.Viewer(title="napari-oct-wsss demo"), propose=args.method, checkpoint=ckpt,
                  device=args.device)
    napari.run()


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def populate_demo(viewer: Any, propose: str | None = None, checkpoint: Path | None = None,
                  device: str = "auto") -> Any:
    """Fill a napari viewer with the demo through the plugin's manifest (sample data, widgets), as a user would;
    with ``propose`` (a method) the Propose widget is preset to ``checkpoint`` and started (returns its worker)."""
    viewer.open_sample(PLUGIN, "synthetic_lesions")
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    _, workspace = viewer.window.add_plugin_dock_widget(PLUGIN, "OCT workspace")  # one tabbed dock; scale bar on
    if propose is None:
        return None
    widget = workspace.panels["Propose"]
    widget.image.value = viewer.layers[0]
    widget.method.value = propose
    widget.checkpoint.value = str(checkpoint)  # after the method: choosing one restores its remembered checkpoint
    widget.device.value = device if device in ("auto", "cpu", "cuda") else "auto"
    return widget.propose()


def run_headless(out: Path, *, method: str = "student", checkpoint: Path | None = None, n_bscans: int = 49,
                 device: str = "auto", overlay: int = 3) -> dict[str, Any]:
    """Propose the demo phantom with the bundled (or given) checkpoint and score it; returns what metrics.json holds."""
    from oct_wsss.classes import ONTOLOGY
    from oct_wsss.evaluate import evaluate_labels, write_json
    from oct_wsss.propose import load_proposer, propose
    from oct_wsss.propose.registry import write_proposal
    from oct_wsss.synth import demo_phantom
    from oct_wsss.synth.demo import DEMO_SEED

    if n_bscans < 1:
        raise CliError(f"--bscans must be at least 1; got {n_bscans}")
    if overlay < 0:
        raise CliError(f"--overlay must be 0 or more; got {overlay}")
    ckpt = demo_checkpoint(method, checkpoint)
    t0 = time.perf_counter()
    phantom = demo_phantom(n_bscans=n_bscans)
    t1 = time.perf_counter()
    proposer = load_proposer(method, ckpt, device=device)
    t2 = time.perf_counter()
    result = propose(phantom.volume, proposer=proposer)
    t3 = time.perf_counter()
    out = Path(out)
    files = {k: str(v) for k, v in write_proposal(result, out).items()}
    classes = tuple(proposer.classes)
    truth = _truth_for(phantom.labels, classes)
    scores = evaluate_labels(truth, result.labels, classes)
    lesion_scans = evaluate_labels(truth, result.labels, classes, lesion_images_only=True)
    shown = overlay_bscans(truth, classes, overlay)
    if shown:
        files["overlay"] = str(write_overlay(out / "overlay.png", phantom.volume.data, result.labels, truth, shown,
                                             title=f"{method} ({ckpt.name})"))
    report = {
        "method": method, "checkpoint": {"file": ckpt.name, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()},
        "phantom": {"seed": DEMO_SEED, "shape": list(phantom.volume.shape),
                    "note": "the napari sample data 'synthetic_lesions' (oct_wsss.synth.demo_phantom)"},
        "volume": list(phantom.volume.shape), "device": str(proposer.device),
        "scores": {ONTOLOGY[c].key: {"dice_pooled": scores.classes[ONTOLOGY[c].key].dice_pooled,
                                     "dice_per_image": scores.classes[ONTOLOGY[c].key].dice_per_image,
                                     "iou": scores.classes[ONTOLOGY[c].key].iou} for c in classes},
        "miou": scores.miou, "miou_lesions": scores.miou_lesions,
        "lesion_bscans": {"miou_lesions": lesion_scans.miou_lesions,
                          "dice_per_image_mean_lesions": lesion_scans.dice_per_image_mean_lesions},
        "overlay_bscans": shown,
        "timings": {"phantom_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3), "propose_s": round(t3 - t2, 3),
                    "per_bscan_s": round((t3 - t2) / phantom.volume.n_bscans, 4)},
        "files": files,
    }
    files["metrics"] = str(out / "metrics.json")
    write_json(report, out / "metrics.json")
    return report


def _truth_for(truth: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """The phantom's truth as the proposer sees it: SRF and IRF become "fluid" for a fluid-only model (DFP)."""
    from oct_wsss.classes import by_key

    fluid = by_key("fluid").id
    if fluid not in classes:
        return truth
    return np.where(np.isin(truth, (by_key("srf").id, by_key("irf").id)), fluid, truth).astype(truth.dtype)


def overlay_bscans(truth: np.ndarray, classes: tuple[int, ...], count: int) -> list[int]:
    """The ``count`` B-scans with the most ground-truth pixels of ``classes`` (ties: the lower index), sorted."""
    if count == 0:
        return []
    area = np.isin(truth, classes).reshape(truth.shape[0], -1).sum(1)
    best = np.argsort(-area, kind="stable")[:count]
    return sorted(int(i) for i in best)


def _coloured(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The grey B-scan as RGB with each ontology id blended in its colour."""
    from oct_wsss.classes import ONTOLOGY

    lut = np.array([c.colour[:3] for c in ONTOLOGY], np.float32)
    grey = image.astype(np.float32)
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    rgb = np.repeat(grey[..., None], 3, -1)
    mask = labels > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[labels[mask]]
    return rgb


def write_overlay(path: Path, images: np.ndarray, pred: np.ndarray, truth: np.ndarray, bscans: list[int], *,
                  title: str) -> Path:
    """A PNG with one row per B-scan: image | proposal | ground truth, in the ontology's colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oct_wsss.io import atomic_write

    aspect = images.shape[1] / images.shape[2]
    fig, axes = plt.subplots(len(bscans), 3, figsize=(12, 4 * aspect * len(bscans) + 0.6), squeeze=False)
    for row, i in enumerate(bscans):
        panels = [(_coloured(images[i], np.zeros_like(pred[i])), f"B-scan {i}"),
                  (_coloured(images[i], pred[i]), f"proposal: {title}"),
                  (_coloured(images[i], truth[i]), "ground truth (phantom)")]
        for ax, (img, name) in zip(axes[row], panels, strict=True):
            ax.imshow(img)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), ".png")
    plt.close(fig)
    return path


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("demo", help="the synthetic demo volume proposed by the bundled student: napari, or --headless")
    p.add_argument("--headless", action="store_true", help="no window: write labels.tif, overlay.png, metrics.json")
    p.add_argument("--out", type=Path, help="output folder (with --headless)")
    p.add_argument("--method", default="student", choices=("student", "agm", "dfp", "hrf"),
                   help="which bundled checkpoint proposes (default student)")
    p.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of the bundled one")
    p.add_argument("--bscans", type=int, default=49, help="B-scans of the demo phantom (default 49; fewer is faster)")
    p.add_argument("--overlay", type=int, default=3, help="B-scans shown in overlay.png (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_demo)
