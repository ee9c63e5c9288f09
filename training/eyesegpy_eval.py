"""The eyesegpy networks against the bundled layer model: line errors on the Bonn and Duke expert annotations.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/eyesegpy_eval.py measure --json runs/eyesegpy/measure.json
    PYTHONPATH=src python training/eyesegpy_eval.py fixture-input --out tests/data/eyesegpy_input.npy

``measure``: Bonn drusen volume (70 shared B-scans, Spectralis, AMD): mean absolute error (px) of BM and RPE against
the expert lines, and the mean signed error (prediction - truth); Duke DME (55 B-scans, 5 patients, Spectralis):
ILM and BM against the boundaries of grader 1's dense labels (first row of band >= 1, first row of band 8; columns
with no boundaries skipped). Each eyesegpy line is compared as its row (BM/ILM: + 0.5 to the split-row convention
for Duke and the combined result), the bundled model as in ``training/layers_train.py`` (BM split row - 0.5 on Bonn).
The lines themselves go to the ``.npz`` beside the JSON (for choices and ensembles without rerunning the networks).
``fixture-input``: a phantom B-scan's 64 central columns, preprocessed as eyesegpy does, for the reference npz.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from oct_wsss.io.eyesegpy import MODELS
from oct_wsss.propose.layers import BOUNDARIES, LayerModel
from oct_wsss.propose.layers_eyeseg import EyesegModel, preprocess
from oct_wsss.training.datasets.drusen import lines_from_layer_map

BONN = Path("/work/shared/data/bonn_drusen_volume")
DUKE = Path("/work/shared/data/duke_dme_chiu2015")


def bonn() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (70, 496, 512) uint8, RPE rows, BM rows (70, 512), NaN where the expert drew no line)."""
    rows = list(csv.DictReader(open(BONN / "index.csv", newline="")))
    imgs, rpe, bm = [], [], []
    for r in rows:
        imgs.append(np.array(Image.open(BONN / r["image"]).convert("L")))
        t_rpe, t_bm = lines_from_layer_map(np.array(Image.open(BONN / r["layers"])), (255, 170), (127,))
        rpe.append(t_rpe)
        bm.append(t_bm)
    return np.stack(imgs), np.stack(rpe), np.stack(bm)


def duke(every: int = 1) -> list[dict]:
    """Per B-scan (each patient's annotated B-scans 0, every, 2 * every, ...): subject, image, ILM and BM split rows
    from the dense labels (NaN in columns without them)."""
    out = []
    for r in csv.DictReader(open(DUKE / "index.csv", newline="")):
        if int(r["annotated_bscan_order"]) % every:
            continue
        img = np.array(Image.open(DUKE / r["image"]).convert("L"))
        lab = np.array(Image.open(DUKE / r["label"]))
        valid = lab[0] != 8  # whole columns of 8: no boundaries drawn there
        ilm = np.argmax(lab >= 1, axis=0).astype(float)
        bm = np.argmax(lab == 8, axis=0).astype(float)
        ilm[~valid], bm[~valid] = np.nan, np.nan
        out.append({"subject": r["subject"], "image": img, "ILM": ilm, "BM": bm})
    return out


def _err(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(truth)
    d = np.asarray(pred, np.float64)[ok] - truth[ok]
    return {"mae_px": round(float(np.abs(d).mean()), 3), "bias_px": round(float(d.mean()), 3), "n": int(ok.sum())}


def measure_bonn(layer: LayerModel, nets: dict[str, EyesegModel], keep: dict[str, np.ndarray]) -> dict[str, dict]:
    """Bonn BM / RPE errors per source (predicted lines into ``keep``)."""
    imgs, rpe_t, bm_t = bonn()
    res = layer.segment(imgs)
    keep["bonn|truth|BM"], keep["bonn|truth|RPE"], keep["bonn|bundled"] = bm_t, rpe_t, res.boundaries
    out = {"bundled": {"BM": _err(res.boundaries[:, BOUNDARIES.index("BM")] - 0.5, bm_t),
                       "RPE": _err(res.boundaries[:, BOUNDARIES.index("RPE")], rpe_t)}}
    for name, net in nets.items():
        t0 = time.perf_counter()
        lines = net.segment_lines(imgs, scale_x_mm=0.011182)
        keep.update({f"bonn|{name}|{k}": v for k, v in lines.items()})
        out[name] = {"BM": _err(lines["BM"], bm_t), "RPE": _err(lines["RPE"], rpe_t),
                     "seconds": round(time.perf_counter() - t0, 1)}
    return out


def measure_duke(layer: LayerModel, nets: dict[str, EyesegModel], keep: dict[str, np.ndarray],
                 every: int = 1) -> dict[str, dict]:
    """Duke ILM / BM errors (split rows) per source, pooled over the B-scans (the bundled model saw all of them in
    training; its figures here are training-set figures)."""
    samples = duke(every)
    preds: dict[str, dict[str, list]] = {"bundled": {"ILM": [], "BM": []}}
    for s in samples:
        b = layer.segment(s["image"]).boundaries[0]
        preds["bundled"]["ILM"].append(b[BOUNDARIES.index("ILM")])
        preds["bundled"]["BM"].append(b[BOUNDARIES.index("BM")])
    for name, net in nets.items():
        preds[name] = {"ILM": [], "BM": []}
        for s in samples:
            lines = net.segment_lines(s["image"][None], scale_x_mm=0.0114)
            for key in ("ILM", "BM"):
                if key in lines:
                    preds[name][key].append(lines[key][0] + 0.5)
    for name, per in preds.items():
        keep.update({f"duke|{name}|{k}": np.concatenate(v) for k, v in per.items() if v})
    keep["duke|truth|ILM"] = np.concatenate([s["ILM"] for s in samples])
    keep["duke|truth|BM"] = np.concatenate([s["BM"] for s in samples])
    keep["duke|subject"] = np.concatenate([[s["subject"]] * len(s["BM"]) for s in samples])
    out = {}
    for name, per in preds.items():
        out[name] = {key: _err(np.concatenate(v), np.concatenate([s[key] for s in samples]))
                     for key, v in per.items() if v}
    return out


def fixture_input(path: Path) -> None:
    """Write the fixed network input of the port test (phantom, no real data)."""
    from oct_wsss.synth import make_volume

    bscan = np.asarray(make_volume(seed=3, n_bscans=1).volume.data)[0]
    w = bscan.shape[1]
    image = preprocess(bscan[:, w // 2 - 32:w // 2 + 32], "spectralis").astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, image)
    print(f"wrote {path} {image.shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--json", type=Path, required=True)
    m.add_argument("--sets", default="bonn,duke")
    m.add_argument("--duke-every", type=int, default=1, help="Duke: each patient's annotated B-scans 0, k, 2k, ...")
    f = sub.add_parser("fixture-input")
    f.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "fixture-input":
        fixture_input(args.out)
        return
    layer = LayerModel()
    # the Bioptigen network takes 512-row B-scans only (eyesegpy refuses others); both sets are 496-row Spectralis
    nets = {name: EyesegModel(name) for name, (_, device, _) in MODELS.items() if device == "spectralis"}
    result: dict[str, dict] = {}
    keep: dict[str, np.ndarray] = {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name, fn in (("bonn", measure_bonn), ("duke", measure_duke)):
        if name in args.sets:
            result[name] = fn(layer, nets, keep, args.duke_every) if name == "duke" else fn(layer, nets, keep)
            print(json.dumps(result[name]), flush=True)
            args.json.write_text(json.dumps(result, indent=1))
            np.savez_compressed(args.json.with_suffix(".npz"), **keep)


if __name__ == "__main__":
    main()
