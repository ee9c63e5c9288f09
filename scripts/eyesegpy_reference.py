"""Reference activations of the eyesegpy networks from TensorFlow, for ``tests/data/eyesegpy_reference.npz``.

Runs in a throwaway TensorFlow environment, never the project's (eyesegpy's own model code builds each network and
``load_weights`` reads its ``.h5``, exactly as ``eyeseg segment`` does; the project's port is not involved):

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.1" h5py numpy pyyaml
    /tmp/tfenv/bin/python scripts/eyesegpy_reference.py --wheel eyesegpy-1.0.2-py3-none-any.whl \
        --input tests/data/eyesegpy_input.npy --out tests/data/eyesegpy_reference.npz

``--input`` is one preprocessed B-scan (512, W) float32 (``training/eyesegpy_eval.py fixture-input`` makes it).
For every layer of every network the npz keeps a subsample of its output (rows ::64, columns ::8, channels ::8 of
the (1, H, W, C) tensor) and the per-channel mean over all rows and columns; the final heights are kept whole; and
the graph (layer kinds, inputs, weight fingerprints) to match layers by structure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MODELS = {"spectralis-bm-rpe-ez": "2c41ukad", "spectralis-bm-rpe": "1zc44dxo", "bioptigen-bm-rpe-ilm": "3avqygsi"}


def reduce(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subsample, per-channel mean) of a layer output, as the test compares them."""
    v = np.asarray(value, dtype=np.float32)
    if v.ndim == 4:
        return v[0, ::64, ::8, ::8], v[0].mean(axis=(0, 1))
    if v.ndim == 3:
        return v[0, ::64, ::8], v[0].mean(axis=0)
    return v[0], v[0].reshape(-1, v.shape[-1]).mean(axis=0)


def graph(model: object) -> list[list]:
    """Per layer: [name, kind, inbound layer names, weight fingerprint]; kind is the class name, with the activation
    (Activation, Conv2D) or the wrapped TensorFlow function (TFOpLambda) appended. The test matches this graph to the
    port's by structure, because TensorFlow names unnamed layers differently from the stored configuration."""
    out = []
    for layer in model.layers:
        cfg = layer.get_config()
        kind = type(layer).__name__
        if kind in ("Activation", "Conv2D"):
            act = cfg["activation"]
            kind += ":" + (act if isinstance(act, str) else act.get("config", {}).get("activation", "?"))
        elif kind == "TFOpLambda":
            kind += ":" + cfg.get("function", "?")
        inbound = []
        for node in layer.inbound_nodes:
            for parent in node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]:
                inbound.append(parent.name)
        weights = layer.get_weights()
        fp = f"{float(np.abs(weights[0].astype(np.float64)).sum()):.6e}" if weights else ""
        out.append([layer.name, kind, inbound, fp])
    return out


def main() -> None:
    """Write the reference npz."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import tensorflow as tf
    import yaml

    image = np.load(args.input).astype(np.float32)
    x = image[None, :, :, None]
    out: dict[str, np.ndarray] = {"input": image, "tensorflow_version": np.array(tf.__version__)}
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(args.wheel).extractall(tmp)
        sys.path.insert(0, tmp)
        for name, model_id in MODELS.items():
            folder = Path(tmp) / "eyeseg" / "models" / "weights" / model_id
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            module = importlib.import_module(cfg["module"])
            model = module.model(input_shape=(512, image.shape[1], 1), **cfg["parameters"])
            model.load_weights(str(folder / "model-best.h5"))
            probe = tf.keras.Model(model.inputs, [layer.output for layer in model.layers[1:]])
            values = probe(x, training=False)
            for layer, value in zip(model.layers[1:], values, strict=True):
                sub, mean = reduce(value.numpy())
                out[f"{name}|{layer.name}|sub"], out[f"{name}|{layer.name}|mean"] = sub, mean
            out[f"{name}|heights"] = model.predict(x, verbose=0)[0]
            out[f"{name}|graph"] = np.array(json.dumps(graph(model)))
            tf.keras.backend.clear_session()
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
