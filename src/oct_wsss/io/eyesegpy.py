"""The Bonn group's trained layer networks (eyesegpy, MedVisBonn, MIT licence) as converted local weights.

eyesegpy 1.0.2 ships three Keras networks in its wheel; the package itself needs Python < 3.11 and TensorFlow 2.11,
so it is never installed. Set-up (``scripts/setup.sh`` -> ``scripts/convert_eyesegpy.py``) downloads the wheel once
with ``pip download --no-deps --ignore-requires-python``, checks its SHA-256, reads each ``model-best.h5`` with h5py
and writes, per network, ``<name>.safetensors`` (the Keras arrays as stored) and ``<name>.json`` (the Keras model
configuration from the file, eyesegpy's ``config.yaml`` and provenance) into :func:`default_dir`. Nothing is
downloaded at run time; ``oct_wsss.models.keras_graph`` rebuilds the networks in PyTorch from those two files.

No torch here (paths, h5py and numpy only), so set-up and the widgets can use it cheaply.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

VERSION = "1.0.2"
WHEEL = f"eyesegpy-{VERSION}-py3-none-any.whl"
#: SHA-256 of the wheel on the package index (checked after every download and before every conversion)
WHEEL_SHA256 = "32988e8615b8972b2d3788315aa703ee4512d5440d2b23378305201235d03728"
#: our name -> (eyesegpy model id, device the network was trained for, boundaries in output order)
MODELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "spectralis-bm-rpe-ez": ("2c41ukad", "spectralis", ("BM", "RPE", "EZ")),
    "spectralis-bm-rpe": ("1zc44dxo", "spectralis", ("BM", "RPE")),
    "bioptigen-bm-rpe-ilm": ("3avqygsi", "bioptigen", ("BM", "RPE", "ILM")),
}
LICENCE = "MIT (Copyright (c) 2023, Olivier Morelle)"
ATTRIBUTION = ("eyesegpy 1.0.2 by MedVisBonn (https://github.com/MedVisBonn/eyeseg); Morelle, Wintergerst, Finger, "
               "Schultz: Accurate drusen segmentation in optical coherence tomography via order-constrained regression "
               "of retinal layer heights. Sci Rep 13, 8162 (2023), doi:10.1038/s41598-023-35230-4")
CONVERT_COMMAND = "python scripts/convert_eyesegpy.py   (or: bash scripts/setup.sh, which runs it)"


class EyesegpyError(RuntimeError):
    """The eyesegpy wheel or its weights are missing, unreadable or not the expected ones."""


def default_dir() -> Path:
    """Where converted weights live: ``$OCT_WSSS_EYESEGPY_DIR``, else ``$XDG_CACHE_HOME/oct-wsss/eyesegpy`` (default
    ``~/.cache/oct-wsss/eyesegpy``). The downloaded wheel is kept there too."""
    env = os.environ.get("OCT_WSSS_EYESEGPY_DIR")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "oct-wsss" / "eyesegpy"


def converted(name: str, folder: Path | None = None) -> tuple[Path, Path] | None:
    """(weights, architecture JSON) of converted network ``name`` when both exist, else None."""
    if name not in MODELS:
        raise EyesegpyError(f"unknown eyesegpy network {name!r}; known: {', '.join(MODELS)}")
    folder = Path(folder) if folder is not None else default_dir()
    pair = folder / f"{name}.safetensors", folder / f"{name}.json"
    return pair if all(p.is_file() for p in pair) else None


def missing_message(name: str, folder: Path | None = None) -> str:
    """What to do when network ``name`` has not been converted."""
    folder = Path(folder) if folder is not None else default_dir()
    return (f"the eyesegpy network {name!r} is not converted in {folder}; make it (needs the package index once) "
            f"with: {CONVERT_COMMAND}")


def sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_wheel(folder: Path | None = None, pip_args: tuple[str, ...] = ()) -> Path:
    """The eyesegpy wheel in ``folder`` (default: :func:`default_dir`), downloaded with pip when absent.

    Raises EyesegpyError when pip cannot fetch it (offline) or the file's SHA-256 is not :data:`WHEEL_SHA256`; the
    folder is then left as it was (pip downloads into a temporary folder elsewhere)."""
    folder = Path(folder) if folder is not None else default_dir()
    wheel = folder / WHEEL
    if wheel.is_file() and sha256(wheel) == WHEEL_SHA256:
        return wheel
    with tempfile.TemporaryDirectory(prefix="oct-wsss-eyesegpy-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", "--only-binary",
               ":all:", "-q", "-d", tmp, f"eyesegpy=={VERSION}", *pip_args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL
        if done.returncode != 0 or not got.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EyesegpyError(f"pip could not download eyesegpy=={VERSION} ({tail[0]})")
        if sha256(got) != WHEEL_SHA256:
            raise EyesegpyError(f"the downloaded {WHEEL} has SHA-256 {sha256(got)}, expected {WHEEL_SHA256}")
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{WHEEL}.partial"
        shutil.copyfile(got, partial)
        os.replace(partial, wheel)
    return wheel


def read_h5(data: bytes | Path, label: str = "model") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(Keras model configuration, weights ``<layer>/<weight>`` -> array) of a Keras 2 ``.h5`` model file."""
    import h5py

    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        with h5py.File(src, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None or "model_weights" not in f:
                raise EyesegpyError(f"{label}: not a Keras model file (no model_config or model_weights)")
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            weights = {}
            group = f["model_weights"]
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                for wname in group[layer].attrs["weight_names"]:
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    key = f"{layer}/{wname.split('/')[-1].split(':')[0]}"
                    weights[key] = np.asarray(group[layer][wname], dtype=np.float32)
    except EyesegpyError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise EyesegpyError(f"{label}: unreadable or truncated Keras .h5 file ({err})") from err
    if config.get("class_name") not in ("Model", "Functional"):
        raise EyesegpyError(f"{label}: expected a functional Keras model, got {config.get('class_name')!r}")
    return config, weights


def read_wheel(wheel: Path) -> dict[str, dict[str, Any]]:
    """Every network of the wheel: name -> {config, weights, eyeseg_config, h5_sha256} (read fully, writes nothing)."""
    import yaml

    wheel = Path(wheel)
    if not wheel.is_file():
        raise EyesegpyError(f"no such wheel: {wheel}")
    if sha256(wheel) != WHEEL_SHA256:
        raise EyesegpyError(f"{wheel.name} is not the eyesegpy {VERSION} wheel (SHA-256 differs); fetch it again")
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for name, (model_id, _, _) in MODELS.items():
            base = f"eyeseg/models/weights/{model_id}"
            h5 = zf.read(f"{base}/model-best.h5")
            config, weights = read_h5(h5, f"{wheel.name}:{base}/model-best.h5")
            out[name] = {"config": config, "weights": weights, "h5_sha256": hashlib.sha256(h5).hexdigest(),
                         "eyeseg_config": yaml.safe_load(zf.read(f"{base}/config.yaml"))}
    return out


def architecture(name: str, entry: dict[str, Any], source: str) -> dict[str, Any]:
    """The JSON written beside a converted network's weights."""
    model_id, device, boundaries = MODELS[name]
    return {"format": "oct-wsss eyesegpy port 1", "name": name, "eyesegpy_model_id": model_id, "device": device,
            "boundaries": list(boundaries), "keras_model_config": entry["config"],
            "eyeseg_config": entry["eyeseg_config"], "source": source, "wheel_sha256": WHEEL_SHA256,
            "h5_sha256": entry["h5_sha256"], "licence": LICENCE, "attribution": ATTRIBUTION}


def convert(wheel: Path, folder: Path | None = None) -> list[Path]:
    """Convert every network of the eyesegpy wheel into ``folder``; returns the written files.

    All three ``.h5`` files are read and checked before anything is written, and each file is written to a hidden
    temporary name and renamed, so a truncated or foreign file leaves the folder as it was."""
    from safetensors.numpy import save_file

    folder = Path(folder) if folder is not None else default_dir()
    models = read_wheel(wheel)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry in models.items():
        arch = architecture(name, entry, f"{WHEEL}:eyeseg/models/weights/{MODELS[name][0]}/model-best.h5")
        meta = {"name": name, "wheel_sha256": WHEEL_SHA256, "h5_sha256": entry["h5_sha256"], "licence": LICENCE}
        for path, write in ((folder / f"{name}.safetensors", lambda p, e=entry, m=meta: save_file(e["weights"], p, m)),
                            (folder / f"{name}.json", lambda p, a=arch: Path(p).write_text(json.dumps(a, indent=1)))):
            tmp = path.with_name(f".{path.name}.partial")
            try:
                write(str(tmp))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(path)
    return written


def load(name: str, folder: Path | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(architecture JSON, weights) of converted network ``name``; EyesegpyError saying how to convert when absent."""
    from safetensors.numpy import load_file

    pair = converted(name, folder)
    if pair is None:
        raise EyesegpyError(missing_message(name, folder))
    arch = json.loads(pair[1].read_text())
    if arch.get("format") != "oct-wsss eyesegpy port 1" or arch.get("name") != name:
        raise EyesegpyError(f"{pair[1]} is not a converted eyesegpy network {name!r}; convert again")
    return arch, load_file(str(pair[0]))
