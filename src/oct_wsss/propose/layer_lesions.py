"""Lesions that follow from retinal layers (``--method layers``): fluid, drusen, PED and EZ disruption, in ontology ids.

Rules (all on one B-scan's ordered boundaries from ``oct_wsss.propose.layers``; rows grow downwards):

- **fluid** (id 7): the layer model's fluid band (Duke's single fluid class: IRF and SRF not told apart).
- **drusen** (id 6): eyepy's rule (``eyepy.quant.drusen``): the *normal* RPE-BM distance is the most common one (the
  mode of the per-A-scan distances), the ideal RPE lies that far above BM, and drusen are the rows strictly between
  the RPE line and the ideal RPE; a connected drusen region whose tallest column is under ``DRUSEN_MIN_HEIGHT_PX``
  (2 px, eyepy's ``minimum_height`` default) is dropped. Computed per B-scan here (eyepy takes the mode per volume).
- **PED** (id 3): an RPE elevation that is both at least ``PED_MIN_HEIGHT_UM`` high and at least ``PED_MIN_WIDTH_UM``
  wide at its base; such elevations are labelled PED instead of drusen. The width is the drusenoid-PED convention of
  a basal diameter of at least 350 µm (e.g. Roquet et al., Br J Ophthalmol 2004); the 100 µm height is this
  project's choice (no clinical source; a parameter).
- **EZ disruption** (id 4): A-scans where the ellipsoid-zone band (ISE, between ISM_ISE and ISE_OS) is absent
  (thinner than ``EZ_MIN_THICKNESS_PX``) over at least ``EZ_MIN_WIDTH_UM`` laterally (project choice, a parameter),
  painted over the rows where the EZ should lie (ISM_ISE plus the B-scan's median EZ thickness).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import DRUSEN, EZ, FLUID, PED
from oct_wsss.propose.layers import BOUNDARIES, FLUID_BAND, LayerModel, normalise_bscan, ordered_labels, retina_present
from oct_wsss.propose.proposal import BscanResult, Cancel
from oct_wsss.volume import OctVolume

DRUSEN_MIN_HEIGHT_PX = 2
PED_MIN_HEIGHT_UM = 100.0
PED_MIN_WIDTH_UM = 350.0
EZ_MIN_THICKNESS_PX = 1.0
EZ_MIN_WIDTH_UM = 100.0
CLASSES = (PED, EZ, DRUSEN, FLUID)
_RPE, _BM = BOUNDARIES.index("RPE"), BOUNDARIES.index("BM")
_ISM_ISE, _ISE_OS = BOUNDARIES.index("ISM_ISE"), BOUNDARIES.index("ISE_OS")


def _runs(flag: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) column runs where ``flag`` is true."""
    padded = np.concatenate([[False], flag.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2], strict=True))


def lesions_from_boundaries(bands: np.ndarray, boundaries: np.ndarray, spacing_mm: tuple[float, float, float],
                            *, drusen_min_height_px: int = DRUSEN_MIN_HEIGHT_PX,
                            ped_min_height_um: float = PED_MIN_HEIGHT_UM, ped_min_width_um: float = PED_MIN_WIDTH_UM,
                            ez_min_thickness_px: float = EZ_MIN_THICKNESS_PX,
                            ez_min_width_um: float = EZ_MIN_WIDTH_UM) -> np.ndarray:
    """Ontology ids (H, W) of one B-scan from its bands (H, W) and boundaries (9, W) (see the module's rules)."""
    h, w = bands.shape
    out = np.zeros((h, w), np.uint8)
    b = np.asarray(boundaries, dtype=np.float64)
    if not np.isfinite(b).all():
        return out
    rows = np.arange(h)[:, None]
    dy_um, dx_um = spacing_mm[1] * 1000.0, spacing_mm[2] * 1000.0
    rpe, bm = b[_RPE], b[_BM]
    distance = np.round(bm - rpe).astype(int)
    values, counts = np.unique(distance, return_counts=True)
    normal = int(values[np.argmax(counts)])
    ideal = bm - normal
    elevation = ideal - rpe  # px above the normal RPE position
    for start, stop in _runs(elevation > 1):
        height = float(elevation[start:stop].max())
        cols = slice(start, stop)
        region = (rows > rpe[None, cols]) & (rows < ideal[None, cols])
        if height * dy_um >= ped_min_height_um and (stop - start) * dx_um >= ped_min_width_um:
            out[:, cols][region] = PED
        elif height >= drusen_min_height_px:
            out[:, cols][region] = DRUSEN
    ez = b[_ISE_OS] - b[_ISM_ISE]
    expected = max(2.0, float(np.median(ez)))
    for start, stop in _runs(ez < ez_min_thickness_px):
        if (stop - start) * dx_um >= ez_min_width_um:
            cols = slice(start, stop)
            top = b[_ISM_ISE, cols]
            region = (rows >= top[None] - expected / 2) & (rows < top[None] + expected / 2)
            out[:, cols][region & (out[:, cols] == 0)] = EZ
    out[bands == FLUID_BAND] = FLUID
    return out


class LayersProposer:
    """``--method layers``: the layer model, then :func:`lesions_from_boundaries` per B-scan."""

    method = "layers"
    classes = CLASSES

    def __init__(self, model: LayerModel, batch_size: int = 4) -> None:
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None, **options: Any) -> LayersProposer:
        device = options.get("device") or "cpu"
        return cls(LayerModel(checkpoint, device=str(device)), batch_size=options.get("batch_size") or 4)

    def provenance(self) -> dict[str, Any]:
        ckpt = self.model.checkpoint
        return {"method": self.method, "checkpoint": {"id": ckpt.id, "sha256": ckpt.sha256}, "classes": list(CLASSES),
                "params": {"drusen_min_height_px": DRUSEN_MIN_HEIGHT_PX, "ped_min_height_um": PED_MIN_HEIGHT_UM,
                           "ped_min_width_um": PED_MIN_WIDTH_UM, "ez_min_thickness_px": EZ_MIN_THICKNESS_PX,
                           "ez_min_width_um": EZ_MIN_WIDTH_UM, "batch_size": self.batch_size},
                "device": str(self.model.device)}

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        from oct_wsss.propose.batching import run_in_batches

        def work(batch: Sequence[int]) -> list[BscanResult]:
            out = []
            for i, p in zip(batch, self.model.probs(volume.data[list(batch)], len(batch)), strict=True):
                if not retina_present(p):
                    out.append(BscanResult(i, np.zeros(p.shape[1:], np.uint8), np.zeros(len(CLASSES), np.float32)))
                    continue
                bands, bounds = ordered_labels(p, normalise_bscan(volume.data[i]))
                labels = lesions_from_boundaries(bands, bounds, volume.spacing_mm)
                present = np.array([float((labels == c).any()) for c in CLASSES], np.float32)
                out.append(BscanResult(i, labels, present))
            return out

        yield from run_in_batches(list(bscans), self.batch_size, work, cancel)
