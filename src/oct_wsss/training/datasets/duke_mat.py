"""Duke DME ``Subject_XX.mat`` volumes (Chiu 2015): one sample per annotated B-scan, read lazily with scipy.

Keys used: ``images`` (H, W, N) and ``manualFluid1`` (H, W, N; all-NaN for B-scans not annotated; fluid = > 0).
Loaders are module-level functions (picklable partials); the last two volumes read are cached per process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from oct_wsss.classes import FLUID
from oct_wsss.training.data import Sample


def mat_samples(files: list[Path], key: str, patient_of: Callable[[str], str]) -> list[Sample]:
    """One sample per annotated B-scan of each Subject_XX.mat (annotated = fluid map not all NaN)."""
    import scipy.io

    samples = []
    for path in files:
        with open(path, "rb") as fh:
            head = fh.read(20)
        if not head.startswith(b"MATLAB 5.0 MAT-file"):
            raise ValueError(f"duke: {path} is not a MATLAB v5 .mat file (header {head[:19]!r}; Duke volumes are v5)")
        try:
            shapes = {name: shape for name, shape, _ in scipy.io.whosmat(path)}
            for name in ("images", key):
                if name not in shapes:
                    raise ValueError(f"no {name!r} variable (has {', '.join(shapes)})")
            if len(shapes[key]) != 3 or shapes[key] != shapes["images"]:
                raise ValueError(f"{key} {shapes[key]} does not match images {shapes['images']}")
            fluid, annotated = _mat_raw_fluid(str(path), key)
        except Exception as exc:  # also NotImplementedError for v7.3 (HDF5), ValueError/OSError for broken files
            raise ValueError(f"duke: {path}: {exc}") from exc
        patient = patient_of(path.stem)
        for i in np.flatnonzero(annotated):
            labels = frozenset({FLUID}) if fluid[..., i].any() else frozenset()
            samples.append(Sample(partial(mat_bscan, path, int(i)), labels, patient,
                                  partial(mat_fluid_mask, path, key, int(i)), volume=patient, bscan=int(i)))
    return samples


def mat_bscan(path: Path, index: int) -> np.ndarray:
    """Image loader: B-scan ``index`` of a Duke .mat volume."""
    return _mat_images(str(path))[..., index].copy()  # a copy: the cached volume must not be edited


def mat_fluid_mask(path: Path, key: str, index: int) -> np.ndarray:
    """Mask loader: B-scan ``index`` of a Duke .mat fluid map as ontology ids (fluid -> 7)."""
    return _mat_fluid(str(path), key)[..., index] * np.uint8(FLUID)


@lru_cache(maxsize=2)
def _mat_images(path: str) -> np.ndarray:
    import scipy.io

    return np.asarray(scipy.io.loadmat(path, variable_names=["images"])["images"])


@lru_cache(maxsize=2)
def _mat_raw_fluid(path: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(fluid 0/1 uint8 (H, W, N), annotated (N,) bool) of one volume."""
    import scipy.io

    raw = np.asarray(scipy.io.loadmat(path, variable_names=[key])[key], dtype=np.float32)
    nan = np.isnan(raw)
    return (np.nan_to_num(raw, nan=0.0) > 0).astype(np.uint8), ~nan.reshape(-1, raw.shape[-1]).all(axis=0)


def _mat_fluid(path: str, key: str) -> np.ndarray:
    return _mat_raw_fluid(path, key)[0]
