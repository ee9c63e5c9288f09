"""Boundaries from the eyesegpy networks (MedVisBonn), and the layer result that takes chosen boundaries from them.

Preprocessing and read-out replicate eyesegpy 1.0.2's ``eyeseg.models.utils.get_layers`` exactly: a Spectralis
B-scan (at most 512 rows) is placed at the top of a 512-row zero image, the whole image is standardised (minus its
mean, over its population standard deviation) and B-scans with ``scale_x < 0.009`` mm/px (high-resolution, e.g.
1024 A-scans) are first halved in width with ``skimage.transform.rescale(bscan, (1, 0.5))`` and the heights scaled
back with ``rescale(heights, (1, 2))``. A Bioptigen B-scan must be 512 rows and is only standardised. The network
returns, per A-scan, the row of each line (BM >= RPE >= EZ, or BM >= RPE >= ILM: ordered by construction). One step
is ours: saturated padding at the border (white rows, as in the Duke DME B-scans) is set to 0 first, since eyesegpy
requires black-background exports and fails badly otherwise (Duke BM error 50 px -> 1 px on one B-scan).

``combine`` puts chosen eyesegpy lines into a bundled-model ``LayerResult``: the RPE line as is, BM and ILM as band
boundaries (split rows, line row + 0.5, the convention of ``oct_wsss.propose.layers``), then clamps the other
boundaries so the order ILM <= ... <= ISE_OS <= RPE <= BM holds again and rebuilds the bands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.eyesegpy import MODELS, EyesegpyError, load
from oct_wsss.propose.layers import BOUNDARIES, LayerError, LayerResult, rebuild_bands

#: eyesegpy line -> our boundary name (EZ has no counterpart among the Duke/ReLayNet boundaries)
TO_BOUNDARY = {"BM": "BM", "RPE": "RPE", "ILM": "ILM"}
#: boundaries stored as split rows (first row of the band below): a line row + 0.5
SPLIT_ROW = ("ILM", "BM")
INPUT_ROWS = 512


#: a region of saturated pixels touching the image border counts as padding from this many pixels on
PADDING_MIN_PX = 50


def black_background(bscan: np.ndarray, min_px: int = PADDING_MIN_PX) -> np.ndarray:
    """The B-scan with saturated padding set to 0 (eyesegpy wants exports "with a black background").

    Padding = connected regions of pixels at the B-scan's maximum value that touch the border and have at least
    ``min_px`` pixels (e.g. the white rows at the top of the Duke DME B-scans); a copy is returned only when there is
    some. Not part of eyesegpy: this project's step for inputs that do not meet eyesegpy's stated requirement."""
    from scipy import ndimage

    data = np.asarray(bscan)
    top = data.max()
    labels, n = ndimage.label(data == top)
    if n == 0:
        return data
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    pad = [e for e in edge if e and sizes[e] >= min_px]
    if not pad:
        return data
    out = data.copy()
    out[np.isin(labels, pad)] = 0
    return out


def preprocess(bscan: np.ndarray, device: str) -> np.ndarray:
    """One (H, W) B-scan -> the (512, W) float64 network input, as eyesegpy's ``preprocess`` makes it."""
    data = np.asarray(bscan, dtype=np.float64)
    h, w = data.shape
    if device == "spectralis":
        if h > INPUT_ROWS:
            raise LayerError(f"the eyesegpy Spectralis networks take B-scans up to {INPUT_ROWS} rows; got {h}")
        image = np.zeros((INPUT_ROWS, w))
        image[:h] = data
    elif h != INPUT_ROWS:
        raise LayerError(f"the eyesegpy Bioptigen network takes B-scans of {INPUT_ROWS} rows; got {h}")
    else:
        image = data.copy()
    image = image - np.mean(image)
    std = np.std(image)
    return image / std if std > 0 else image


class EyesegModel:
    """A converted eyesegpy network: ``heights(bscans)`` -> per-B-scan line rows."""

    def __init__(self, name: str, folder: Path | None = None, device: str = "cpu") -> None:
        import torch

        from oct_wsss.models.keras_graph import KerasGraph
        from oct_wsss.preprocess.device import resolve_device

        if name not in MODELS:
            raise EyesegpyError(f"unknown eyesegpy network {name!r}; known: {', '.join(MODELS)}")
        self.arch, weights = load(name, folder)
        self.name, self.device_kind = name, self.arch["device"]
        self.lines: tuple[str, ...] = tuple(self.arch["boundaries"])
        self.net = KerasGraph(self.arch["keras_model_config"]["config"],
                              {k: torch.from_numpy(v) for k, v in weights.items()})
        self.device = resolve_device(device)
        self.net.to(self.device).eval()
        self._torch = torch

    def run(self, images: np.ndarray) -> np.ndarray:
        """(n, 512, W) preprocessed inputs -> (n, W, n_lines) float32 line rows (the network's own output)."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(images, np.float32))[..., None].to(self.device)
            return self.net(x).float().cpu().numpy()

    def heights(self, bscans: np.ndarray, scale_x_mm: float | None = None, batch_size: int = 2,
                black: bool = True) -> Iterator[np.ndarray]:
        """(n, H, W) raw B-scans -> yields (n_lines, W) line rows per B-scan (``self.lines`` order); with ``black``
        saturated border padding is set to 0 first (:func:`black_background`)."""
        from skimage.transform import rescale

        data = np.asarray(bscans)
        if black:
            data = np.stack([black_background(b) for b in data])
        factor = 2 if (scale_x_mm is not None and scale_x_mm < 0.009 and self.device_kind == "spectralis") else 1
        for start in range(0, data.shape[0], batch_size):
            chunk = [rescale(b, (1, 1 / factor)) if factor != 1 else b for b in data[start:start + batch_size]]
            out = self.run(np.stack([preprocess(b, self.device_kind) for b in chunk]))
            for h in out:
                lines = h.T  # (n_lines, W / factor)
                if factor != 1:
                    lines = np.stack([rescale(line[None], (1, factor))[0] for line in lines])
                yield lines.astype(np.float32)

    def segment_lines(self, bscans: np.ndarray, scale_x_mm: float | None = None) -> dict[str, np.ndarray]:
        """(n, H, W) B-scans -> line name -> (n, W) rows."""
        stacked = np.stack(list(self.heights(np.asarray(bscans), scale_x_mm)))
        return {name: stacked[:, k] for k, name in enumerate(self.lines)}


def combine(result: LayerResult, lines: dict[str, np.ndarray], take: tuple[str, ...],
            source: dict[str, Any]) -> LayerResult:
    """``result`` with boundaries ``take`` (our names, from ``lines`` keyed by eyesegpy line name) replaced, the
    order restored (boundaries above the RPE line clamped to it, BM at least RPE) and bands rebuilt (fluid kept)."""
    bounds = np.array(result.boundaries, dtype=np.float64)
    inverse = {ours: theirs for theirs, ours in TO_BOUNDARY.items()}
    for name in take:
        if inverse.get(name) not in lines:
            raise LayerError(f"boundary {name} is not among the eyesegpy lines {sorted(lines)}")
        k = BOUNDARIES.index(name)
        bounds[:, k] = lines[inverse[name]] + (0.5 if name in SPLIT_ROW else 0.0)
    rpe, bm = BOUNDARIES.index("RPE"), BOUNDARIES.index("BM")
    bounds[:, bm] = np.maximum(bounds[:, bm], bounds[:, rpe])
    if "ILM" in take:  # a moved ILM pushes the inner boundaries down rather than the other way round
        bounds[:, 1:rpe] = np.maximum(bounds[:, 1:rpe], bounds[:, :1])
    bounds[:, :rpe] = np.minimum(bounds[:, :rpe], bounds[:, rpe:rpe + 1])
    bounds[:, :rpe] = np.maximum.accumulate(bounds[:, :rpe], axis=1)
    height = result.bands.shape[1]
    bounds = np.clip(bounds, 0, height)
    bands = np.stack([rebuild_bands(b, prev) for b, prev in zip(bounds, result.bands, strict=True)])
    prov = dict(result.provenance)
    prov["eyesegpy"] = {**source, "boundaries_from_eyesegpy": list(take)}
    return LayerResult(bands, bounds.astype(np.float32), prov)


#: boundary -> the eyesegpy network it is taken from with ``--source eyesegpy``, chosen by the measurement in
#: docs/results-real.md §9 (Bonn expert lines; Duke grader lines); boundaries not listed stay the bundled model's
CHOICE = {"BM": "spectralis-bm-rpe-ez", "RPE": "spectralis-bm-rpe-ez"}


def scale_x_mm(volume: Any) -> float | None:
    """The A-scan spacing eyesegpy is given for ``volume``: None when its reader fell back to a default spacing."""
    from oct_wsss.propose.layers import has_physical_scale

    return float(volume.spacing_mm[2]) if has_physical_scale(volume) else None


def missing(folder: Path | None = None, choice: dict[str, str] | None = None) -> str | None:
    """What to do when a network of ``choice`` (default :data:`CHOICE`) is not converted in ``folder``, else None.

    Cheap (file checks only, no torch): callers use it to stop before any work or output."""
    from oct_wsss.io.eyesegpy import converted, missing_message

    for name in dict.fromkeys((CHOICE if choice is None else choice).values()):
        if converted(name, folder) is None:
            return missing_message(name, folder)
    return None


def preload() -> None:
    """Import the port's modules on the calling thread (GUIs: their main thread, before a worker builds the networks;
    see ``oct_wsss.propose.layers.preload``)."""
    import scipy.ndimage  # noqa: F401
    import skimage.transform  # noqa: F401

    import oct_wsss.models.keras_graph
    import oct_wsss.preprocess.device  # noqa: F401


class EyesegpyBoundaries:
    """The networks of a boundary choice, loaded once; :meth:`apply` puts their lines into a bundled result.

    ``oct-wsss layers --source eyesegpy`` applies it to the whole volume (:func:`with_eyesegpy`), the napari Layers
    panel to one B-scan at a time; both get the same rows. Raises ``EyesegpyError`` (saying how to convert) when a
    chosen network is not converted."""

    def __init__(self, folder: Path | None = None, device: str = "cpu", choice: dict[str, str] | None = None) -> None:
        self.choice = dict(CHOICE if choice is None else choice)
        self.models = {name: EyesegModel(name, folder, device=device) for name in dict.fromkeys(self.choice.values())}

    def apply(self, result: LayerResult, bscans: np.ndarray, scale_x_mm: float | None,
              progress: Callable[[int, int], None] | None = None) -> LayerResult:
        """``result`` (the bundled model's, for the (n, H, W) ``bscans``) with the chosen boundaries from eyesegpy;
        ``progress(done, total)`` after each B-scan of each network."""
        import time

        data = np.asarray(bscans)
        data = data[None] if data.ndim == 2 else data
        n, steps = len(data), len(self.models) * len(data)
        t0, out = time.perf_counter(), result
        for m, (net_name, model) in enumerate(self.models.items()):
            rows = []
            for i, h in enumerate(model.heights(data, scale_x_mm)):
                rows.append(h)
                if progress is not None:
                    progress(m * n + i + 1, steps)
            stacked = np.stack(rows)
            lines = {name: stacked[:, k] for k, name in enumerate(model.lines)}
            take = tuple(b for b, nn in self.choice.items() if nn == net_name)
            source = {"network": net_name, "eyesegpy_model_id": model.arch["eyesegpy_model_id"],
                      "h5_sha256": model.arch["h5_sha256"], "licence": model.arch["licence"],
                      "attribution": model.arch["attribution"], "scale_x_mm": scale_x_mm,
                      "seconds": round(time.perf_counter() - t0, 3)}
            out = combine(out, lines, take, source)
        return out


def with_eyesegpy(result: LayerResult, bscans: np.ndarray, scale_x_mm: float | None, folder: Path | None = None,
                  device: str = "cpu", choice: dict[str, str] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> LayerResult:
    """The bundled model's ``result`` with the boundaries of ``choice`` (default :data:`CHOICE`) from eyesegpy.

    Raises ``EyesegpyError`` (saying how to convert) when a chosen network is not converted."""
    return EyesegpyBoundaries(folder, device, choice).apply(result, bscans, scale_x_mm, progress)
