"""DFP proposer: prediction module → saliency M → feature propagation over R_4..R_1 → soft label S_0 → fluid mask.

``DfpProposer.from_checkpoint(path)`` loads one ``dfp`` checkpoint; ``run`` streams one :class:`BscanResult` per
B-scan: labels in the checkpoint's ontology ids (7 "fluid" for a binary model), the normal/abnormal probability r
and, with ``keep_scores``, S_0 at native size as the score map. B-scans the classifier calls normal (r below
``present_threshold``) get an empty mask and a zero score, as the paper masks them with the category.

Guard (``fallback``, on by default): where a class is present but its propagated label would be empty (S_0 nowhere
above ``threshold`` inside the retina), S_0 is replaced by the min-max saliency M (the propagation's own input), so a
weak saliency the intersections erased still gives a label; the provenance counts these fallbacks per B-scan.
On Duke DME the propagated labels were empty on every held-out fluid B-scan in 3 of 5 folds (docs/results-real.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.explain.gradcam import GradCam
from oct_wsss.explain.propagation import PropagationParams, minmax, propagate
from oct_wsss.models.dfp import DfpConfig, DfpNet, reference_maps
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.preprocess.inputs import resize, retina_mask
from oct_wsss.preprocess.intensity import check_intensity, intensity_of, normalisation_meta
from oct_wsss.propose.batching import default_batch_size, run_in_batches
from oct_wsss.propose.proposal import BscanResult, Cancel, ProposalError
from oct_wsss.propose.pseudo import pseudo_labels
from oct_wsss.propose.retina import unit_inputs_for
from oct_wsss.volume import OctVolume

DEFAULT_THRESHOLD = 0.5
PROPAGATION_OPTIONS = ("kernel", "propagation_threshold", "delta")
#: how R_i is made from encoder stage i: channel sum (METHODS.md's default) or GradCAM of the encoder's logit
REFERENCES = ("sum", "gradcam")


class DfpProposer:
    """A loaded DFP model that turns B-scans into soft labels S_0 and ontology-id masks."""

    method = "dfp"

    def __init__(self, net: DfpNet, classes: Sequence[int], input_size: tuple[int, int], *,
                 threshold: float = DEFAULT_THRESHOLD, propagation: PropagationParams | None = None,
                 present_threshold: float = 0.5, retina: bool = True, propagate: bool = True,
                 reference: str = "sum", fallback: bool = True, device: str | torch.device = "auto",
                 batch_size: int | None = None, checkpoint: Checkpoint | None = None,
                 intensity: str | None = None) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.net = net.to(self.device).eval()
        self.classes = tuple(int(c) for c in classes)
        if net.config.n_classes != len(self.classes):
            raise ValueError(f"the network predicts {net.config.n_classes} classes, {len(self.classes)} declared")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if not 0.0 <= float(threshold) <= 1.0 or not 0.0 <= float(present_threshold) <= 1.0:
            raise ValueError(f"thresholds must be in [0, 1]; got {threshold} and {present_threshold}")
        self.threshold, self.present_threshold = float(threshold), float(present_threshold)
        self.propagation = propagation or PropagationParams()
        self.retina, self.propagate = bool(retina), bool(propagate)
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}; got {reference!r}")
        self.reference = reference
        self.fallback = bool(fallback)
        #: B-scan index -> number of classes whose empty propagated label fell back to M (filled by ``run``)
        self.fallbacks: dict[int, int] = {}
        self.batch_size = batch_size or default_batch_size(self.device)
        self.checkpoint = checkpoint
        #: input intensity option: the argument, else the checkpoint's ``normalisation`` meta ("unit" when absent)
        self.intensity = check_intensity(intensity if intensity is not None or checkpoint is None
                                         else intensity_of(checkpoint.meta.get("normalisation")))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Checkpoint, **options: Any) -> DfpProposer:
        """Build from a ``dfp`` checkpoint; options override its threshold, propagation (``kernel``,
        ``propagation_threshold``, ``delta``), ``present_threshold``, ``retina``, ``fallback``, device, batch size."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint, expect_method="dfp")
        if ckpt.method != "dfp":
            raise CheckpointError(None, f"checkpoint {ckpt.id} is a {ckpt.method!r} checkpoint, expected 'dfp'")
        params = ckpt.meta.get("params", {})
        try:
            net_config = DfpConfig.from_dict(ckpt.meta["architecture"]["dfp"])
            stored = PropagationParams(**params.get("propagation", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(None, f"checkpoint {ckpt.id}: invalid DFP architecture or params ({err})") from err
        net = ckpt.build(lambda: DfpNet(net_config))
        options = {k: v for k, v in options.items() if v is not None}
        prop = {"kernel": stored.kernel, "threshold": stored.threshold, "delta": stored.delta}
        for key in PROPAGATION_OPTIONS:
            if key in options:
                prop[key.removeprefix("propagation_")] = options.pop(key)
        settings = {"threshold": params.get("threshold", DEFAULT_THRESHOLD),
                    "reference": params.get("reference", "sum"),
                    "present_threshold": params.get("present_threshold", 0.5), "retina": params.get("retina", True),
                    "fallback": params.get("fallback", True)}
        settings.update(options)
        try:
            return cls(net, ckpt.meta["classes"], tuple(ckpt.meta["input_size"]), checkpoint=ckpt,
                       propagation=PropagationParams(**prop), **settings)
        except (TypeError, ValueError) as err:
            raise ProposalError(f"bad DFP option: {err}") from err

    def provenance(self) -> dict[str, Any]:
        """What produced the result: checkpoint id and hash, every parameter that changes it, the device."""
        ckpt = self.checkpoint
        return {"method": self.method, "checkpoint": None if ckpt is None else {"id": ckpt.id, "sha256": ckpt.sha256},
                "classes": list(self.classes), "input_size": list(self.input_size),
                "params": {"threshold": self.threshold, "present_threshold": self.present_threshold,
                           "propagation": self.propagation.to_dict(), "propagate": self.propagate,
                           "reference": self.reference, "retina": self.retina, "fallback": self.fallback,
                           "batch_size": self.batch_size, "intensity": self.intensity},
                "fallbacks": {"rule": "empty propagated label -> min-max saliency M",
                              "total": sum(self.fallbacks.values()),
                              "per_bscan": {str(i): n for i, n in sorted(self.fallbacks.items())}},
                "device": str(self.device)}

    def forward(self, x: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Saliency (B, K, h/8, w/8), reference maps [R_1..R_5] (B, h_i, w_i) and probabilities r (B, K)."""
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.net(x.to(self.device))
            saliency = self.net.saliency(out).float()
        if self.reference == "gradcam":
            refs = self._gradcam_references(x, out.stages)
        else:
            refs = [r.cpu().numpy() for r in reference_maps(out.stages)]
        return saliency.cpu().numpy(), refs, torch.sigmoid(out.logits.float()).cpu().numpy()

    def _gradcam_references(self, x: torch.Tensor, stages: list[torch.Tensor]) -> list[np.ndarray]:
        """R_1..R_4 as GradCAM of the encoder's first logit at each stage, each at its stage's own size."""
        layers = [self.net.stem, *self.net.encoder[:3]]
        refs = []
        for layer, stage in zip(layers, stages, strict=False):
            cam = GradCam(self.net, {"stage": layer}, forward_fn=lambda xs: self.net(xs[0]).encoder_logits,
                          autocast=self.device.type == "cuda")
            refs.append(cam(x.to(self.device), [0], output_size=tuple(stage.shape[-2:]))[:, 0].cpu().numpy())
        return refs

    def scores(self, bscans: Sequence[np.ndarray], present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Soft labels S_0 (n, K, H, W) at native size and probabilities (n, K) for same-sized B-scans.

        Classes are skipped (score 0) where ``present`` (n, K) is False; by default where r < ``present_threshold``
        (a trainer making pseudo labels passes the image-level labels instead, as the paper does). With
        ``propagate=False`` S_0 is the min-max saliency M itself (the ablation without feature propagation).
        """
        out, probs, _ = self.scores_and_fallbacks(bscans, present)
        return out, probs

    def scores_and_fallbacks(self, bscans: Sequence[np.ndarray], present: np.ndarray | None = None,
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`scores` plus, per B-scan, how many present classes fell back from an empty S_0 to M (n,)."""
        native = tuple(bscans[0].shape)
        x = torch.from_numpy(unit_inputs_for(bscans, self.intensity))[:, None]
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        saliency, refs, probs = self.forward(x)
        keep = probs >= self.present_threshold if present is None else np.asarray(present, bool)
        out = np.zeros((len(bscans), len(self.classes), *native), np.float32)
        fell = np.zeros(len(bscans), np.int64)
        for j in range(len(bscans)):
            if not keep[j].any():
                continue
            inside = resize(retina_mask(x[j, 0].numpy()), native, order=0) if self.retina else None
            for k in np.flatnonzero(keep[j]):
                m = minmax(saliency[j, k])
                out[j, k] = self._native(propagate(m, [r[j] for r in refs], self.propagation)
                                         if self.propagate else m, native, inside)
                if self.fallback and self.propagate and not (out[j, k] > self.threshold).any():
                    out[j, k] = self._native(m, native, inside)
                    fell[j] += 1
        return out, probs, fell

    @staticmethod
    def _native(s0: np.ndarray, native: tuple[int, ...], inside: np.ndarray | None) -> np.ndarray:
        s0 = np.clip(resize(s0, native), 0.0, 1.0)
        return s0 if inside is None else s0 * inside

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        """Stream results per B-scan, batched; on GPU out of memory the batch halves, then the CPU takes over.
        Fallbacks of the guard are counted per B-scan in ``self.fallbacks`` (reset here) and reported by
        :meth:`provenance`."""
        self.fallbacks = {}

        def work(batch: Sequence[int]) -> list[BscanResult]:
            scores, probs, fell = self.scores_and_fallbacks([volume.data[i] for i in batch])
            self.fallbacks.update({int(i): int(n) for i, n in zip(batch, fell, strict=True) if n})
            labels = pseudo_labels(scores, self.classes, self.threshold)
            return [BscanResult(i, labels[j], probs[j], scores[j] if keep_scores else None)
                    for j, i in enumerate(batch)]

        def halved(size: int) -> None:
            self.batch_size = size

        yield from run_in_batches(list(bscans), self.batch_size, work, cancel, on_retry=halved,
                                  to_cpu=None if self.device.type == "cpu" else self.to_cpu)

    def to_cpu(self) -> None:
        """Go on on the CPU: the last step of the GPU out-of-memory fallback (the provenance then says ``cpu``)."""
        self.device = torch.device("cpu")
        self.net = self.net.to(self.device)


def dfp_checkpoint(net: DfpNet, classes: Sequence[int], input_size: tuple[int, int], *, threshold: float,
                   propagation: PropagationParams, present_threshold: float = 0.5, retina: bool = True,
                   reference: str = "sum", intensity: str = "unit",
                   training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> Checkpoint:
    """One ``dfp`` checkpoint: both networks' weights, classes, input size, soft-label threshold and decoder params."""
    return Checkpoint.new(net.state_dict(), method="dfp", architecture={"dfp": net.config.to_dict()},
                          classes=list(classes), input_size=list(input_size),
                          normalisation=normalisation_meta(intensity), training=training, metrics=metrics,
                          params={"threshold": float(threshold), "present_threshold": float(present_threshold),
                                  "propagation": propagation.to_dict(), "retina": bool(retina),
                                  "reference": reference})
