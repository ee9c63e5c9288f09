"""HRF proposer (METHODS.md section 3): relevance peak -> crop -> SAM 2 box prompt (or the classical step) -> occlude
-> rerun the classifier, until the HRF probability falls below ``threshold`` (0.05) or after ``iterations`` (6).

Everything runs at the B-scan's native resolution. Found foci are merged into the ontology's HRF id; every focus is
an instance record (``INSTANCE_FIELDS``) kept in the provenance and written as ``instances.csv`` by
``write_proposal``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.classes import HRF
from oct_wsss.explain.lrp import relevance
from oct_wsss.models.cct import Cct, CctConfig
from oct_wsss.models.hrf_labels import presence
from oct_wsss.models.mil import MilConfig, MilNet
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.preprocess.inputs import retina_mask
from oct_wsss.preprocess.intensity import intensity_of
from oct_wsss.propose.batching import run_in_batches
from oct_wsss.propose.hrf_refine import Crop, classical_region, sam_region
from oct_wsss.propose.proposal import BscanResult, Cancel, ProposalError
from oct_wsss.propose.retina import unit_input_for
from oct_wsss.propose.sam2_backend import DEFAULT_CONFIG, Sam2Backend
from oct_wsss.propose.sam2_cache import volume_hash
from oct_wsss.volume import OctVolume

METHODS = ("hrf-cct", "hrf-mil")
INSTANCE_FIELDS = ("bscan", "iteration", "centroid_y", "centroid_x", "area_px", "area_um2", "relevance",
                   "sam_score", "probability", "peak_y", "peak_x")
DEFAULTS = {"iterations": 6, "threshold": 0.05, "crop_size": 72, "box_size": 4}
CLASSICAL_WARNING = ("HRF proposer: no SAM 2 checkpoint given, using the classical refinement (half-maximum region "
                     "around the relevance peak); give --sam2-checkpoint for the SAM 2 step")


def build_classifier(ckpt: Checkpoint) -> Cct | MilNet:
    """The CCT or MIL network an ``hrf-cct`` / ``hrf-mil`` checkpoint describes, with its weights."""
    arch = ckpt.meta["architecture"]
    try:
        config = CctConfig.from_dict(arch["cct"]) if ckpt.method == "hrf-cct" else MilConfig.from_dict(arch["mil"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(None, f"checkpoint {ckpt.id}: invalid HRF architecture ({err})") from err
    return ckpt.build(lambda: Cct(config) if isinstance(config, CctConfig) else MilNet(config))


class HrfProposer:
    """Iterative HRF instance proposals from a presence classifier, LRP and SAM 2 (or the classical step)."""

    method = "hrf"
    classes = (HRF,)

    def __init__(self, net: Cct | MilNet, normalisation: dict[str, Any], *, sam2: Sam2Backend | None = None,
                 iterations: int = 6, threshold: float = 0.05, crop_size: int = 72, box_size: int = 4,
                 device: str | torch.device = "auto", checkpoint: Checkpoint | None = None, warn: bool = True) -> None:
        if iterations < 1 or crop_size < 8 or box_size < 1 or not 0 <= threshold <= 1:
            raise ProposalError(f"HRF options out of range: iterations {iterations} (>= 1), crop size {crop_size} "
                                f"(>= 8 px), box size {box_size} (>= 1 px), threshold {threshold} (in [0, 1])")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.net = net.to(self.device).eval()
        self.mean, self.std = float(normalisation.get("mean", 0.0)), float(normalisation.get("std", 1.0)) or 1.0
        self.intensity = intensity_of(normalisation)
        self.sam2, self.checkpoint = sam2, checkpoint
        self.iterations, self.threshold = int(iterations), float(threshold)
        self.crop_size, self.box_size = int(crop_size), int(box_size)
        self.refiner = "sam2" if sam2 is not None else "classical"
        self.instances: list[dict[str, Any]] = []
        self.trace: dict[int, list[float]] = {}
        if sam2 is None and warn:
            warnings.warn(CLASSICAL_WARNING, UserWarning, stacklevel=2)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Checkpoint, **options: Any) -> HrfProposer:
        """Load an ``hrf-cct`` or ``hrf-mil`` checkpoint; ``sam2_checkpoint``/``sam2_config`` choose the SAM 2 step,
        ``sam2_cache`` (a folder, e.g. ``PROJECT/sam2-embeddings``) keeps its crops' embeddings on disk."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
        if ckpt.method not in METHODS:
            raise CheckpointError(None, f"checkpoint {ckpt.id} is a {ckpt.method!r} checkpoint; the HRF proposer "
                                        f"needs one of {METHODS} (train one with training/hrf-synth.yaml)")
        opts = {k: v for k, v in options.items() if v is not None}
        opts.pop("batch_size", None)  # one B-scan at a time: the loop is sequential per B-scan
        device = resolve_device(opts.pop("device", "auto"))
        sam2_ckpt, sam2_config = opts.pop("sam2_checkpoint", None), opts.pop("sam2_config", DEFAULT_CONFIG)
        cache = opts.pop("sam2_cache", None)
        sam2 = None if sam2_ckpt is None else Sam2Backend(sam2_config, sam2_ckpt, device=device, cache_dir=cache)
        settings = {**DEFAULTS, **{k: v for k, v in ckpt.meta.get("params", {}).items() if k in DEFAULTS}, **opts}
        return cls(build_classifier(ckpt), ckpt.meta["normalisation"], sam2=sam2, device=device, checkpoint=ckpt,
                   **settings)

    def provenance(self) -> dict[str, Any]:
        """Checkpoint, refiner (``"sam2"`` or ``"classical"``), parameters, device, per-B-scan probabilities and the
        instance records."""
        ckpt = self.checkpoint
        return {"method": self.method, "checkpoint": None if ckpt is None else {"id": ckpt.id, "sha256": ckpt.sha256,
                                                                                 "method": ckpt.method},
                "classes": list(self.classes), "refiner": self.refiner,
                "sam2": None if self.sam2 is None else self.sam2.provenance(),
                "params": {"iterations": self.iterations, "threshold": self.threshold, "crop_size": self.crop_size,
                           "box_size": self.box_size, "label_type": self.net.config.label_type},
                "intensity": self.intensity, "device": str(self.device),
                "probability_trace": {str(k): v for k, v in self.trace.items()},
                "instances": list(self.instances), "instance_fields": list(INSTANCE_FIELDS)}

    def prepare(self, bscan: np.ndarray) -> np.ndarray:
        """A B-scan in [0, 1] as the classifier was trained on it: harmonised when its checkpoint says so."""
        return unit_input_for(bscan, self.intensity)

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """(1, 1, H, W) network input at native size: unit intensities minus the training mean, over its std."""
        return torch.from_numpy((image - self.mean) / self.std).float()[None, None].to(self.device)

    def segment(self, bscan: np.ndarray, index: int = 0, spacing_mm: Sequence[float] = (1.0, 1.0),
                on_input: Callable[[int, np.ndarray], None] | None = None,
                ) -> tuple[np.ndarray, list[dict], list[float]]:
        """HRF mask (H, W), instance records and the probability per iteration of one B-scan.

        ``on_input(iteration, image)`` sees each classifier input (unit intensities, occluded foci included).
        """
        work = self.prepare(bscan).copy()
        fill = float(work.mean())
        retina = retina_mask(work)
        found = np.zeros(work.shape, bool)
        records: list[dict] = []
        probs: list[float] = []
        um2 = float(spacing_mm[-2]) * float(spacing_mm[-1]) * 1e6
        for it in range(self.iterations + 1):
            if on_input is not None:
                on_input(it, work.copy())
            if it == self.iterations:  # the cap: only the final probability is still wanted
                with torch.no_grad():
                    probs.append(float(presence(self.net(self.normalise(work)), self.net.config.label_type)[0]))
                break
            r = relevance(self.net, self.normalise(work))
            p = float(presence(r.outputs, self.net.config.label_type)[0])
            probs.append(p)
            if p < self.threshold:
                break
            rel = r.pixels[0].cpu().numpy()
            allowed = ~found & (retina if retina.any() else True)
            peak = np.unravel_index(int(np.argmax(np.where(allowed, rel, -np.inf))), rel.shape)
            region, score = self._region(work, (int(peak[0]), int(peak[1])), index)
            region &= ~found
            if not region.any():
                region = np.zeros_like(found)
                region[peak] = True
            found |= region
            work[ndi.binary_dilation(region)] = fill  # occlude with the image mean
            cy, cx = ndi.center_of_mass(region)
            records.append({"bscan": index, "iteration": it + 1, "centroid_y": round(float(cy), 2),
                            "centroid_x": round(float(cx), 2), "area_px": int(region.sum()),
                            "area_um2": round(float(region.sum()) * um2, 2), "relevance": float(rel[peak]),
                            "sam_score": None if score is None else round(score, 4), "probability": round(p, 4),
                            "peak_y": int(peak[0]), "peak_x": int(peak[1])})
        return found, records, probs

    def _region(self, work: np.ndarray, peak: tuple[int, int], index: int) -> tuple[np.ndarray, float | None]:
        """The focus at ``peak`` of B-scan ``index`` as a full-size mask, and SAM 2's score (None for the classical
        step). SAM 2 sees a crop that changes as foci are occluded: its disk cache key is the crop's own hash."""
        crop = Crop.around(peak, self.crop_size, work.shape)
        image = crop.take(work)
        if self.sam2 is not None:
            where = None if self.sam2.disk is None else (volume_hash(image), index)
            mask, score = sam_region(self.sam2, image, peak, crop, self.box_size, where=where)
            return crop.paste(mask, work.shape), score
        seed = (peak[0] - crop.y0, peak[1] - crop.x0)
        return crop.paste(classical_region(image, seed, self.box_size), work.shape), None

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        """Stream one result per B-scan; the instance records of this run replace the previous run's."""
        self.instances, self.trace = [], {}

        def work(batch: Sequence[int]) -> list[BscanResult]:
            out = []
            for i in batch:
                mask, records, probs = self.segment(volume.data[i], i, volume.spacing_mm[1:])
                self.instances += records
                self.trace[i] = [round(p, 4) for p in probs]
                labels = np.where(mask, HRF, 0).astype(np.uint8)
                scores = mask[None].astype(np.float32) if keep_scores else None
                out.append(BscanResult(i, labels, np.array([probs[0]], np.float32), scores))
            return out

        yield from run_in_batches(list(bscans), 1, work, cancel)
