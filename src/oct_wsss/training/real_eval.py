"""Real-data evaluation sets on disk: a dataset's truth masks and a predictor's labels written in the layout
``oct-wsss evaluate --pred P --truth T`` reads, so every number in docs/results-real.md comes from that command.

Real B-scans of one eye may differ in size (Duke's are cropped per B-scan), so each B-scan is its own volume:
``OUT/truth/<id>/labels.tif`` and ``OUT/pred/<id>/labels.tif`` with ``id = <patient>_<bscan>`` (file-safe).
Also the trivial reference every learnt proposer must beat: dark pixels inside the retina.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from oct_wsss.io import write_labels
from oct_wsss.preprocess.inputs import retina_mask, to_unit
from oct_wsss.training.data import Sample

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def volume_id(sample: Sample) -> str:
    """``<patient>_<bscan>`` with characters outside ``[A-Za-z0-9._-]`` replaced, e.g. ``Subject_01_03``."""
    return _UNSAFE.sub("-", f"{sample.patient}_{sample.bscan:02d}")


def write_eval_set(samples: Sequence[Sample], out: str | Path,
                   predict: Callable[[np.ndarray], np.ndarray] | None = None,
                   keep: Sequence[int] | None = None) -> dict[str, Path]:
    """Write ``out/truth`` (and ``out/pred`` from ``predict(image)``); ``keep``: ontology ids kept in the truth, the
    rest set to background (e.g. SRF only where other fluid is unlabelled). Returns the folders written."""
    out = Path(out)
    ids = [volume_id(s) for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError("two samples share a patient and B-scan number; volume ids would collide")
    for s, vid in zip(samples, ids, strict=True):
        truth = s.load_mask()
        if truth is None:
            raise ValueError(f"sample {vid} has no pixel mask to evaluate against")
        if keep is not None:
            truth = np.where(np.isin(truth, list(keep)), truth, 0).astype(np.uint8)
        write_labels(out / "truth" / vid / "labels.tif", truth[None])
        if predict is not None:
            pred = np.asarray(predict(s.load_image()), np.uint8)
            if pred.shape != truth.shape:
                raise ValueError(f"{vid}: the prediction is {pred.shape}, the truth {truth.shape}")
            write_labels(out / "pred" / vid / "labels.tif", pred[None])
    return {"truth": out / "truth", **({"pred": out / "pred"} if predict is not None else {})}


def dark_retina_baseline(class_id: int, quantile: float = 0.1) -> Callable[[np.ndarray], np.ndarray]:
    """A predictor labelling ``class_id`` where a B-scan is darker than its retina's ``quantile`` inside the retina
    mask: fluid is hyporeflective, so this is the floor a learnt proposer has to clear."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1); got {quantile}")

    def predict(image: np.ndarray) -> np.ndarray:
        unit = to_unit(image)
        inside = retina_mask(unit)
        if not inside.any():
            return np.zeros(unit.shape, np.uint8)
        cut = np.quantile(unit[inside], quantile)
        return np.where(inside & (unit < cut), np.uint8(class_id), np.uint8(0))

    return predict
