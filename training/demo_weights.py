"""Bundle a demo run: copy its checkpoint to src/oct_wsss/weights/demo-<method>.safetensors and write the model card
(``.md``) from what the run measured on its held-out synthetic volumes plus what this script measures on the demo
phantom (the volume `oct-wsss demo` shows); the card's test floor is what tests/test_weights.py checks.

    OMP_NUM_THREADS=1 python training/demo_weights.py student runs/phantom-student --minutes "..."

The recipe the card names is the one the checkpoint records (``training.recipe``): demo-student comes from
training/phantom-student.yaml (phantom pixel truth, six lesion classes), the others from training/demo-<method>.yaml.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate import evaluate_labels
from oct_wsss.propose import propose
from oct_wsss.synth import demo_phantom
from oct_wsss.weights import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
FILES = {"student": "student.safetensors", "agm": "agm.safetensors", "dfp": "dfp.safetensors",
         "hrf": "hrf-cct.safetensors"}
FLOOR_SHARE = 0.75  # the floor is this share of the DSC measured here (rounded down), leaving room for platform noise


def demo_truth(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Phantom truth as a model sees it: SRF + IRF are "fluid" for a fluid model; other classes count as background."""
    fluid = by_key("fluid").id
    if fluid in classes:
        labels = np.where(np.isin(labels, (by_key("srf").id, by_key("irf").id)), fluid, labels)
    return np.where(np.isin(labels, classes), labels, 0).astype(np.uint8)


def floor_bscans(truth: np.ndarray, classes: tuple[int, ...], n: int) -> list[int]:
    """``n`` demo-phantom B-scans for the floor: class by class in turn, the B-scan richest in that class not yet
    taken (a one-class model: its ``n`` richest B-scans), so that every class the volume holds is scored."""
    areas = {c: (truth == c).reshape(truth.shape[0], -1).sum(1) for c in classes}
    order = {c: [int(i) for i in np.argsort(-a, kind="stable") if a[i] > 0] for c, a in areas.items()}
    chosen: list[int] = []
    while len(chosen) < n and any(order.values()):
        for c in classes:
            while order[c] and order[c][0] in chosen:
                order[c].pop(0)
            if order[c] and len(chosen) < n:
                chosen.append(order[c].pop(0))
    return sorted(chosen)


def _scores(truth: np.ndarray, pred: np.ndarray, classes: tuple[int, ...]) -> dict:
    scores = evaluate_labels(truth, pred, classes)
    return {ONTOLOGY[c].key: {"dice_pooled": scores.classes[ONTOLOGY[c].key].dice_pooled,
                              "iou": scores.classes[ONTOLOGY[c].key].iou} for c in classes}


def measure(method: str, checkpoint: Path, n: int) -> dict:
    """Per-class pooled DSC/IoU on the whole demo phantom (49 B-scans) and on ``n`` of its B-scans (the floor's:
    :func:`floor_bscans`); for a model that tells SRF from IRF also SRF + IRF scored as one fluid class."""
    phantom = demo_phantom()
    classes = tuple(Checkpoint.load(checkpoint).meta["classes"])
    truth = demo_truth(phantom.labels, classes)
    bscans = floor_bscans(truth, classes, n)
    t0 = time.perf_counter()
    result = propose(phantom.volume, method=method, checkpoint=checkpoint, device="cpu")
    seconds = time.perf_counter() - t0
    out = {"bscans": bscans, "classes": _scores(truth[bscans], result.labels[bscans], classes),
           "volume": _scores(truth, result.labels, classes),
           "seconds_per_bscan": round(seconds / phantom.volume.n_bscans, 3)}
    fluid = (by_key("srf").id, by_key("irf").id)
    if set(fluid) <= set(classes):
        merged = np.isin(truth, fluid).astype(np.uint8), np.isin(result.labels, fluid).astype(np.uint8)
        out["volume_fluid"] = _scores(*merged, (1,))[ONTOLOGY[1].key]
    return out


def _floor(value: float | None) -> float | None:
    if value is None or value < 0.02:
        return None
    return math.floor(FLOOR_SHARE * value * 100) / 100


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def held_out(method: str, run: Path) -> list[str]:
    """Markdown lines with the run's own held-out scores (its recipe's test volumes)."""
    if method == "student":
        r = json.loads((run / "test-comparison.json").read_text())
        note = ("(teacher = the demo DFP's proposals; IoU in %, pooled over the test B-scans)" if "teacher" in r else
                "(IoU in %, pooled over the test B-scans; every test B-scan holds a lesion, so the two rows agree)")
        return [(run / "comparison.md").read_text().strip(), "", note] if r else []
    if method == "dfp":
        return [(run / "report.md").read_text().strip(), "", "(DSC/TPVF/PPV in %, mean ± sd over test volumes with "
                "fluid)"]
    if method == "agm":
        lines = ["| scored | " + " | ".join(f"IoU {k.upper()}" for k in ("srf", "irf", "ped")) + " | mIoU lesions |",
                 "|---|---|---|---|---|"]
        for name in ("pseudo-labels", "proposals"):
            r = json.loads((run / f"test-{name}.json").read_text())
            lines.append(f"| {name} | " + " | ".join(_pct(r["classes"][k]["iou"]) for k in ("srf", "irf", "ped")) +
                         f" | {_pct(r['miou_lesions'])} |")
        return lines
    r = json.loads((run / "hrf-test.json").read_text())
    return ["```json", json.dumps({k: r[k] for k in ("iterations_1", "iterations_6", "classifier")}, indent=1),
            "```"]


def _run_name(run: Path) -> str:
    """The run folder as its recipe names it (``out``), else as given."""
    if (run / "recipe.json").is_file():
        return json.loads((run / "recipe.json").read_text()).get("out", str(run))
    return str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run)


def card(method: str, run: Path, dest: Path, measured: dict, notes: dict) -> str:
    """The model card text."""
    ckpt = Checkpoint.load(dest)
    recipe = ROOT / "training" / ckpt.meta.get("training", {}).get("recipe", f"demo-{method}.yaml")
    if not recipe.is_file():
        raise SystemExit(f"{recipe}: the recipe the checkpoint records is not in training/")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    floors = {k: _floor(v["dice_pooled"]) for k, v in measured["classes"].items()}
    floor = {"volume": "oct_wsss.synth.demo_phantom()", "bscans": measured["bscans"], "device": "cpu",
             "dsc": {k: v for k, v in floors.items() if v is not None}}
    size = dest.stat().st_size
    seed = ckpt.meta.get("training", {}).get("seed", 0)
    rows = "\n".join(f"| {k} | {_pct(v['dice_pooled'])} | {_pct(v['iou'])} | "
                     f"{'–' if floors[k] is None else f'{100 * floors[k]:.0f}'} |"
                     for k, v in measured["classes"].items())
    whole = [*(f"| {k} | {_pct(v['dice_pooled'])} | {_pct(v['iou'])} |" for k, v in measured["volume"].items()),
             *([f"| fluid (SRF + IRF as one) | {_pct(measured['volume_fluid']['dice_pooled'])} | "
                f"{_pct(measured['volume_fluid']['iou'])} |"] if "volume_fluid" in measured else [])]
    return f"""# demo-{method}: {notes['title']}

**Not for clinical use.** A small demonstration model trained only on the synthetic OCT phantom (`oct_wsss.synth`);
it has never seen a real OCT scan and its outputs on real scans mean nothing.

- File: `demo-{method}.safetensors`, {size / 2**20:.1f} MiB, SHA-256 `{hashlib.sha256(dest.read_bytes()).hexdigest()}`
- Method / classes: `{ckpt.method}` predicting {', '.join(ONTOLOGY[c].key for c in ckpt.meta['classes'])}
  (ontology ids {ckpt.meta['classes']}); network input {ckpt.meta['input_size'][0]} x {ckpt.meta['input_size'][1]} px
- Architecture: {notes['architecture']}

## Training

- Recipe: [`training/{recipe.name}`](../../../training/{recipe.name}), seed {seed}
  (regenerate: `OMP_NUM_THREADS=1 oct-wsss train training/{recipe.name}`, then
  `python training/demo_weights.py {method} {_run_name(run)}`);
  code at commit `{commit}`.
- Data: {notes['data']}
- Supervision: {notes['supervision']}
- Hardware: trained on CPU only (no GPU was available): {notes['hardware']}, {notes['minutes']}. This is
  **smaller than the full-size recipe** ({notes['full']}): {notes['smaller']}.

## Metrics on held-out synthetic volumes (the recipe's test set)

{chr(10).join(held_out(method, run))}

## Metrics on the demo phantom (the volume `oct-wsss demo` shows)

Measured by `training/demo_weights.py` on `demo_phantom()` (seed 7, 49 x 496 x 512, every lesion class present),
proposed whole on CPU at {measured['seconds_per_bscan']} s per B-scan on the shared machine. Pooled over all 49
B-scans:

| class | DSC % | IoU % |
|---|---|---|
{chr(10).join(whole)}

The test floor is scored on {len(measured['bscans'])} of its B-scans, taken class by class in turn, each the richest
in its class not yet taken: B-scans {measured['bscans']}. The floor is {int(FLOOR_SHARE * 100)} % of the DSC measured
there (rounded down); classes under 2 % DSC get none.

| class | DSC % | IoU % | test floor DSC % |
|---|---|---|---|
{rows}

**Test floor** (checked by `tests/test_weights.py`): `{json.dumps(floor)}`

## Intended use

Trying the plugin and the CLI without training anything (`oct-wsss demo`, the napari sample data), tests, and
benchmarks. Not for research conclusions about real OCT, and not for clinical use.

## Known limits

{notes['limits']}
"""


HARDWARE = "one busy core of a shared 2-core machine (`OMP_NUM_THREADS=1`, other jobs running)"
SMALLER = ("narrower network, fewer volumes and epochs, so that it trains in minutes on one core and the file stays "
           "small")
NOTES = {
    "student": {
        "title": "phantom multi-class student U-Net, the demo's default proposer",
        "architecture": "U-Net, width 12, depth 4 (`oct_wsss.models.student`), softmax over background + SRF, IRF, "
                        "PED, EZ disruption, HRF, drusen; input 256 x 256, **harmonised intensities** "
                        "(`normalisation = {\"input\": \"unit\", \"intensity\": \"harmonised\"}`: every B-scan goes "
                        "through `oct_wsss.preprocess.intensity.harmonise` before the network, at training and at "
                        "proposal time)",
        "data": "synthetic phantom, generator v5 with the randomised device look (`look: random`: Spectralis-, "
                "Cirrus- and Topcon-like display, speckle, blur, 500-1024 A-scans, placement, shadows, vignetting, "
                "padding rows), generated at 496 x 512: 48 training volumes x 10 B-scans = 480 training B-scans "
                "(seed 1900, 15 % healthy), 2 validation volumes x 10 (seed 2900), 6 test volumes x 10 (seed 3900); "
                "lesion prevalence per volume SRF 0.5, IRF 0.6, PED 0.4, EZ 0.4, HRF 0.6, drusen 0.25. **No real "
                "data of any kind**",
        "supervision": "the phantom's own pixel truth for all six lesion classes (`pseudo: {truth: true}`; no "
                       "weak labels, no pseudo labels, no real data); class weights [0.05, 0.5, 0.5, 1.5, 3.0, 6.0, "
                       "3.0] (background, SRF, IRF, PED, EZ, HRF, drusen) until 2026-12-06, now [0.05, 0.5, 0.5, "
                       "1.5, 6.0, 30.0, 10.0]; 36 epochs (2,160 optimiser steps; 14 before), batch 8, one-cycle lr "
                       "3e-3, rotation augmentation 5 degrees, last epoch kept (validation mIoU 0.68 with background)",
        "hardware": "a shared 2-core machine (`OMP_NUM_THREADS=2`, other jobs running)",
        "full": "a full-size student is DeepLabV3 or a wider U-Net at 512 px, the input size HRF and drusen need, "
                "trained on more phantom volumes and then adapted to real data as training/real-wsss.yaml does",
        "smaller": "U-Net width 12 at 256 x 256, 480 training B-scans, 36 epochs, so that it trains in about an "
                   "hour and a half on two shared cores and the file stays small",
        "limits": "- Trained only on the phantom: it has never seen a real OCT scan. On the shared real sets "
                  "(`training/phantom_student_eval.py`, evaluation only) it reaches Duke DME fluid IoU 0.32 "
                  "(per-image DSC 0.19), far below its phantom figures, and Bonn drusen Dice 0.06; use a real-data "
                  "checkpoint (`real-*`) for real scans (the bundled `real-wsss` is this student adapted with real "
                  "image-level labels: Duke fluid IoU 0.47, per-image DSC 0.39 leave-one-patient-out).\n"
                  "- HRF and drusen are the weakest classes (IoU 0.36 and 0.37 on unseen phantom seeds 5000-5005; "
                  "tables above for the test set and the demo). At 256 x 256 input even perfect masks lose 13-16 % "
                  "IoU for these small classes (2-8 px foci, ~3 px high drusen); they need 512 px.\n"
                  "- EZ disruption is found only in part (IoU 0.63 on seeds 5000-5005).\n"
                  "- Not for clinical use, and not for research conclusions about real OCT.",
    },
    "agm": {
        "title": "AGM (anomaly-guided WSSS) with its GANomaly generator inside",
        "architecture": "AGM dual branch: ResNet-18 at width 16 (a quarter of torchvision's channels, output stride "
                        "16) on (x, x̂) + ASAM (light encoder, width 8) on the anomaly map, GMP head; GANomaly "
                        "generator at 128 px, ngf 16, nz 64 bundled in the same file (`generator.*` tensors)",
        "data": "synthetic phantom at 496 x 512: 10 training volumes x 16 B-scans (seed 100, 20 % healthy; GANomaly "
                "learns from their healthy B-scans), 3 validation volumes (seed 200, for α), 4 test volumes (seed 300)",
        "supervision": "image-level labels only (SRF, IRF, PED present or not per B-scan); α, the background "
                       "threshold, was swept on the validation volumes' masks (the only use of pixel labels)",
        "full": "training/agm-synth.yaml is larger (full-width ResNet-18, BASE ablation); the paper uses ResNet-50, "
                "512 px input and GANomaly at 512",
        "limits": "- SRF and IRF are found, weakly (test DSC ~13 % and ~9 % as proposals); PED stays at 0 %: at 128 "
                  "px input a 496-px B-scan's small lesions are a few pixels and the 8 x 8 CAM cannot place them.\n"
                  "- Seed-sensitive: the same recipe with seed 0 proposed SRF mostly below Bruch's membrane on the "
                  "demo phantom (DSC 0 there, test SRF DSC 17 %, IRF 0 %); seed 1 is bundled.\n"
                  "- The classifier is weak (validation AUC ~0.82), so proposals without image labels miss "
                  "B-scans.\n- 496 x 512 phantom B-scans resized to 128 x 128.",
    },
    "hrf": {
        "title": "HRF presence classifier (CCT) for the HRF proposer",
        "architecture": "Compact Convolutional Transformer, cct_2-sized (2 layers, 2 heads, dim 64, 7 x 7 two-layer "
                        "tokenizer with 32 channels, stride 16; `oct_wsss.models.cct`), binary HRF presence",
        "data": "synthetic phantom at native pixel size, 160 x 192 px crops of the macula (3.9 um axial, 11.2 um "
                "lateral per px, as a 496 x 512 Spectralis B-scan): 48 volumes x 24 B-scans (seed 0, 25 % healthy, "
                "HRF in 90 % of the others), patient-level split 28 / 10 / 10 volumes",
        "supervision": "image-level labels only: a B-scan is positive when it holds an HRF focus of at least 5 px; "
                       "the HRF masks are used only to score the held-out volumes",
        "full": "the paper trains cct_7 (7 layers, dim 256) on 496 x 1024 B-scans for 50k steps; "
                "training/hrf-synth.yaml is this same CPU recipe, run for docs/results.md",
        "limits": "- Finds bright foci in the phantom's inner and outer nuclear layers; real HRF are more varied in "
                  "shape and contrast, and the model has never seen them.\n- Without SAM 2 weights the proposer's "
                  "region step is the classical one (recorded in the provenance).\n- After the last true focus is "
                  "occluded the classifier's probability sometimes stays just above the 0.05 stop (0.065-0.11 on two "
                  "B-scans of the generator-v3 demo phantom), and the loop adds a false focus or two.\n- Trained on "
                  "160 x 192 crops; it takes any B-scan size (the positional embedding is resized), and on the "
                  "496 x 512 demo phantom it scores the DSC above.\n- Reproducible: trained twice with seed 0 on one "
                  "CPU thread (training/hrf-synth.yaml and this recipe), all 41 weight tensors came out bitwise "
                  "equal and so did the test metrics.",
    },
    "dfp": {
        "title": "DFP fluid proposals (deep feature propagation)",
        "architecture": "DFP with ResNet-18 stages at width 16 (a quarter of torchvision's channels), prediction "
                        "module + feature-propagation encoder (`oct_wsss.models.dfp`)",
        "data": "synthetic phantom at 496 x 512: 10 training volumes x 16 B-scans (seed 100, 20 % healthy), "
                "3 validation volumes (seed 200), 4 test volumes (seed 300)",
        "supervision": "image-level labels only: a B-scan is abnormal when it shows SRF or IRF (merged into fluid)",
        "full": "training/dfp-synth.yaml; the paper uses ResNet-50 at 512 x 1024",
        "limits": "- Fluid only (SRF + IRF as id 7).\n- Soft labels are coarse: on the test volumes the propagated "
                  "label S_0 reaches DSC ~13 %, not far above the trivial whole-retina mask (~9 %), while the "
                  "saliency M alone reaches ~41 %: on the phantom's clustered cysts the propagation's intersections "
                  "keep little of the fluid.\n- 496 x 512 phantom B-scans resized to 128 x 128.",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=sorted(FILES))
    parser.add_argument("run", type=Path)
    parser.add_argument("--bscans", type=int, default=8, help="demo-phantom B-scans the floor is measured on")
    parser.add_argument("--minutes", default="", help="training time, for the card")
    args = parser.parse_args()
    dest = WEIGHTS_DIR / f"demo-{args.method}.safetensors"
    shutil.copyfile(args.run / FILES[args.method], dest)
    measured = measure(args.method, dest, args.bscans)
    notes = {"hardware": HARDWARE, "smaller": SMALLER, **NOTES[args.method],
             "minutes": args.minutes or "see the run log"}
    dest.with_suffix(".md").write_text(card(args.method, args.run.resolve(), dest, measured, notes))
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
