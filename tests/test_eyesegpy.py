"""The eyesegpy port: layer outputs against TensorFlow's, line order, the converter's failure modes, the set-up step.

The reference (``tests/data/eyesegpy_reference.npz``) was made by eyesegpy's own Keras code under TensorFlow 2.15
(``scripts/eyesegpy_reference.py``) on a fixed phantom input. The converted weights are not in the repository: they
are made at set-up (``scripts/setup.sh`` -> ``scripts/convert_eyesegpy.py``). Where they are absent these tests fail
and say how to make them; they are never skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from oct_wsss.io.eyesegpy import (
    MODELS,
    WHEEL,
    EyesegpyError,
    convert,
    converted,
    default_dir,
    load,
    missing_message,
    read_h5,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "eyesegpy_reference.npz"
SCRIPT = ROOT / "scripts" / "convert_eyesegpy.py"


def _wheel() -> Path:
    wheel = default_dir() / WHEEL
    if not wheel.is_file():
        pytest.fail(f"the eyesegpy wheel is not in {default_dir()}: run bash scripts/setup.sh (or python "
                    f"scripts/convert_eyesegpy.py) once with access to the package index")
    return wheel


@pytest.fixture(scope="module")
def eyeseg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder with the converted networks: the user's, else converted here from the set-up's wheel."""
    if all(converted(name) for name in MODELS):
        return default_dir()
    out = tmp_path_factory.mktemp("eyesegpy")
    convert(_wheel(), out)
    return out


def _kind(cls: str, cfg: dict) -> str:
    """A layer's kind, the same for the stored Keras 2.3 config and TensorFlow 2.15's rebuild of it."""
    from oct_wsss.models.keras_graph import activation_name

    if cls in ("Activation", "Conv2D"):
        return f"{cls}:{activation_name(cfg['activation'])}"
    if cls == "TensorFlowOpLayer":
        return "Add" if cfg["node_def"]["op"] == "AddV2" and not cfg.get("constants") else f"op:{cfg['name']}"
    return cls


def _keys(graph: list[list]) -> dict[str, str]:
    """Layer name -> structural key (kind, own weight fingerprint, inputs' keys): equal keys = the same layer."""
    keys: dict[str, str] = {}
    for name, kind, inbound, fp in graph:
        if kind.startswith(("op:", "TFOpLambda")):
            kind = f"{kind}@{name}"  # opaque: only compared through the final heights
        parents = [keys[p] for p in inbound]
        if kind in ("Add", "Multiply"):
            parents.sort()
        keys[name] = hashlib.sha1(json.dumps([kind, fp, parents]).encode()).hexdigest()
    return keys


def _our_graph(arch: dict, weights: dict) -> list[list]:
    from oct_wsss.models.keras_graph import _inbound

    out = []
    for layer in arch["keras_model_config"]["config"]["layers"]:
        first = {"Conv2D": "kernel", "BatchNormalization": "gamma"}.get(layer["class_name"])
        key = f"{layer['name']}/{first}"
        fp = f"{np.abs(weights[key].astype(np.float64)).sum():.6e}" if first else ""
        out.append([layer["name"], _kind(layer["class_name"], layer["config"]), _inbound(layer), fp])
    return out


def _reduce(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if v.ndim == 4:
        return v[0, ::64, ::8, ::8], v[0].mean(axis=(0, 1))
    return v[0, ::64, ::8], v[0].mean(axis=0)


def port_differences(name: str, folder: Path) -> tuple[dict[str, float], float, int]:
    """(matched layer -> max abs difference to TensorFlow, final heights' max abs difference, layers in the port)."""
    import torch

    from oct_wsss.propose.layers_eyeseg import EyesegModel

    ref = np.load(REFERENCE)
    arch, weights = load(name, folder)
    ours = _keys(_our_graph(arch, weights))
    tf_graph = json.loads(str(ref[f"{name}|graph"]))
    for entry in tf_graph:  # TensorFlow's kinds spelled like ours
        entry[1] = entry[1].replace("TFOpLambda:", "op:") if entry[1].startswith("TFOpLambda") else entry[1]
    theirs = {key: layer for layer, key in _keys(tf_graph).items()}
    model = EyesegModel(name, folder)
    with torch.inference_mode():
        values = model.net(torch.from_numpy(ref["input"])[None, ..., None], keep=True)
    diffs = {}
    for layer, key in ours.items():
        if key not in theirs or layer == model.net.inputs[0]:
            continue
        sub, mean = _reduce(values[layer].numpy())
        tf_sub, tf_mean = ref[f"{name}|{theirs[key]}|sub"], ref[f"{name}|{theirs[key]}|mean"]
        diffs[layer] = float(max(np.abs(sub - tf_sub).max(), np.abs(mean - tf_mean).max()))
    heights = values[model.net.outputs[0]].numpy()[0]
    return diffs, float(np.abs(heights - ref[f"{name}|heights"]).max()), len(ours)


@pytest.mark.parametrize("name", list(MODELS))
def test_port_reproduces_tensorflow_layer_by_layer(name: str, eyeseg_dir: Path) -> None:
    arch, _ = load(name, eyeseg_dir)
    layers = arch["keras_model_config"]["config"]["layers"]
    with_weights = {la["name"] for la in layers if la["class_name"] in ("Conv2D", "BatchNormalization")}
    diffs, heights, _ = port_differences(name, eyeseg_dir)
    assert with_weights <= set(diffs), f"layers not matched to TensorFlow's: {sorted(with_weights - set(diffs))}"
    assert len(diffs) >= len(layers) - 14  # all but the input and the output head's slices / clip / scale
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 1e-3, f"{worst} differs by {diffs[worst]:.2e}"
    assert heights < 1e-3  # rows (0..512): float32 agreement


def test_heights_are_ordered_and_inside_the_image(eyeseg_dir: Path) -> None:
    from oct_wsss.propose.layers_eyeseg import EyesegModel
    from oct_wsss.synth import make_volume

    bscans = np.asarray(make_volume(seed=5, n_bscans=2).volume.data)[:, :, 192:320]
    for name in ("spectralis-bm-rpe-ez", "spectralis-bm-rpe"):
        model = EyesegModel(name, eyeseg_dir)
        lines = model.segment_lines(bscans, scale_x_mm=0.0114)
        stacked = np.stack([lines[k] for k in model.lines])  # BM, RPE[, EZ]: bottom to top
        assert np.all(np.diff(stacked, axis=0) <= 1e-4) and stacked.min() >= 0 and stacked.max() <= 512


def test_combined_result_keeps_the_boundary_order(eyeseg_dir: Path) -> None:
    from oct_wsss.propose.layers import BOUNDARIES, LayerResult, check_order
    from oct_wsss.propose.layers_eyeseg import combine

    rng = np.random.default_rng(0)
    n, h, w = 2, 64, 40
    base = np.sort(rng.uniform(5, 55, (n, len(BOUNDARIES), w)), axis=1)
    bands = np.zeros((n, h, w), np.uint8)
    lines = {"BM": rng.uniform(0, 64, (n, w)), "RPE": rng.uniform(0, 64, (n, w)), "ILM": rng.uniform(0, 20, (n, w))}
    lines["BM"] = np.maximum(lines["BM"], lines["RPE"])
    out = combine(LayerResult(bands, base, {}), lines, ("ILM", "RPE", "BM"), {"network": "test"})
    assert np.all(np.diff(out.boundaries, axis=1) >= 0)
    assert check_order(out.bands)
    assert out.provenance["eyesegpy"]["boundaries_from_eyesegpy"] == ["ILM", "RPE", "BM"]


def _fake_wheel(tmp_path: Path, h5: bytes) -> Path:
    """A wheel holding the real networks' config.yaml files and ``h5`` as every model-best.h5."""
    fake = tmp_path / WHEEL
    with zipfile.ZipFile(_wheel()) as src, zipfile.ZipFile(fake, "w") as dst:
        for model_id, _, _ in MODELS.values():
            base = f"eyeseg/models/weights/{model_id}"
            dst.writestr(f"{base}/config.yaml", src.read(f"{base}/config.yaml"))
            dst.writestr(f"{base}/model-best.h5", h5)
    return fake


def test_a_truncated_h5_is_a_clear_error_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oct_wsss.io.eyesegpy as eyesegpy

    with zipfile.ZipFile(_wheel()) as zf:
        h5 = zf.read("eyeseg/models/weights/2c41ukad/model-best.h5")
    with pytest.raises(EyesegpyError, match="unreadable or truncated"):
        read_h5(h5[: len(h5) // 2], "half.h5")
    fake = _fake_wheel(tmp_path, h5[: len(h5) // 2])
    monkeypatch.setattr(eyesegpy, "WHEEL_SHA256", eyesegpy.sha256(fake))
    out = tmp_path / "out"
    with pytest.raises(EyesegpyError, match="truncated"):
        convert(fake, out)
    assert not out.exists() or not any(out.iterdir())


def test_a_wheel_with_another_hash_is_refused(tmp_path: Path) -> None:
    fake = _fake_wheel(tmp_path, b"not an h5 file")
    done = subprocess.run([sys.executable, str(SCRIPT), "--wheel", str(fake), "--dir", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "SHA-256 differs" in done.stderr and not (tmp_path / "out").exists()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, **extra}


def test_setup_step_converts_into_a_fresh_folder_offline_from_a_local_index(tmp_path: Path) -> None:
    """The set-up step as scripts/setup.sh runs it, on an empty cache, with pip pointed at a local folder holding the
    wheel instead of the package index (no network in tests)."""
    assert "scripts/convert_eyesegpy.py --setup" in (ROOT / "scripts" / "setup.sh").read_text()
    fresh = tmp_path / "fresh"
    env = _env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(_wheel().parent), OCT_WSSS_EYESEGPY_DIR=str(fresh))
    done = subprocess.run([sys.executable, str(SCRIPT), "--setup"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (fresh / WHEEL).is_file()
    for name in MODELS:
        pair = converted(name, fresh)
        assert pair is not None
        new, old = load(name, fresh), load(name, _wheel().parent) if converted(name, _wheel().parent) else None
        if old is not None:  # the same arrays as the user's conversion (file bytes differ: header order)
            assert new[0] == old[0] and all(np.array_equal(new[1][k], old[1][k]) for k in old[1])
    again = subprocess.run([sys.executable, str(SCRIPT), "--setup"], capture_output=True, text=True, env=env)
    assert again.returncode == 0  # safe to rerun


def test_setup_step_offline_says_how_to_do_it_later_and_writes_nothing(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    env = _env(PIP_NO_INDEX="1", OCT_WSSS_EYESEGPY_DIR=str(fresh))
    done = subprocess.run([sys.executable, str(SCRIPT), "--setup"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "scripts/convert_eyesegpy.py" in done.stdout
    assert not fresh.exists()
    plain = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env)
    assert plain.returncode == 1 and "could not download" in plain.stderr


def test_missing_weights_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(EyesegpyError, match="convert_eyesegpy.py"):
        load("spectralis-bm-rpe-ez", tmp_path)
    assert "convert_eyesegpy.py" in missing_message("spectralis-bm-rpe", tmp_path)


def _phantom_folder(tmp_path: Path) -> Path:
    from PIL import Image

    from oct_wsss.synth import make_volume

    folder = tmp_path / "vol"
    folder.mkdir()
    for i, plane in enumerate(np.asarray(make_volume(seed=2, n_bscans=2).volume.data)[:, :, 192:320]):
        Image.fromarray(plane.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_cli_layers_source_eyesegpy_takes_bm_and_rpe_from_the_port(tmp_path: Path, eyeseg_dir: Path) -> None:
    import csv

    from oct_wsss.cli import main
    from oct_wsss.io import read_labels
    from oct_wsss.propose.layers import check_order
    from oct_wsss.propose.layers_eyeseg import CHOICE, EyesegModel

    vol, out = _phantom_folder(tmp_path), tmp_path / "out"
    args = ["layers", str(vol), "--out", str(out), "--device", "cpu", "--source", "eyesegpy"]
    assert main([*args, "--eyesegpy-dir", str(eyeseg_dir)]) == 0
    assert check_order(np.asarray(read_labels(out / "layers.tif")))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["eyesegpy"]["boundaries_from_eyesegpy"] == list(CHOICE) and "MIT" in prov["eyesegpy"]["licence"]
    rows = [r for r in csv.DictReader(open(out / "boundaries.csv", newline="")) if r["bscan"] == "0"]
    rpe = np.array([float(r["y_px"]) for r in rows if r["boundary"] == "RPE"])
    from PIL import Image

    image = np.array(Image.open(vol / "000.png"))
    expected = EyesegModel(CHOICE["RPE"], eyeseg_dir).segment_lines(image[None])["RPE"][0]
    assert np.allclose(rpe, expected, atol=0.06)  # written with one decimal


def test_cli_layers_source_eyesegpy_without_weights_says_how_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from oct_wsss.cli import main

    vol, out = _phantom_folder(tmp_path), tmp_path / "out"
    code = main(["layers", str(vol), "--out", str(out), "--device", "cpu", "--source", "eyesegpy",
                 "--eyesegpy-dir", str(tmp_path / "empty")])
    assert code == 2 and "convert_eyesegpy.py" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_black_background_clears_border_padding_only() -> None:
    from oct_wsss.propose.layers_eyeseg import black_background

    img = np.full((40, 30), 60, np.uint8)
    img[:5] = 255  # padding rows at the top
    img[20, 10:13] = 255  # a few saturated pixels inside the retina stay
    out = black_background(img)
    assert (out[:5] == 0).all() and (out[20, 10:13] == 255).all() and (out[5:20] == 60).all()
    assert black_background(np.full((40, 30), 60, np.uint8)) is not None
