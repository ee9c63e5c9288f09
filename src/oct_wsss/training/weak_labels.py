"""Image-level labels as a filter on a student's own predictions: the weak signal of self-training on real B-scans.

A B-scan's image-level labels say, for each class they speak about, whether it is there. A predicted class the label
excludes becomes background whatever the student thought; a class the label allows is kept where the student is
confident; pixels the student is unsure of, and classes the label says nothing about, are left out of the loss
(:data:`~oct_wsss.training.student_data.IGNORE`) instead of being called background. A B-scan that shows a class
says where it is, not where it is not: by default its background stays out of the loss too, because a student that
misses part of a lesion is confident there, and calling that background teaches it to miss more (measured on Duke:
naive targets halved the phantom student's fluid recall, docs/results-real.md §10). :func:`cam_gate` adds a localisation
signal that is not the student's own: a classifier's map (e.g. DFP's saliency) trained on the same image labels.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from oct_wsss.classes import FLUID, IRF, SRF
from oct_wsss.training.student_data import IGNORE

#: an image label of undistinguished fluid speaks for SRF and IRF alike
COVERS: dict[int, frozenset[int]] = {FLUID: frozenset({SRF, IRF})}


@dataclass(frozen=True)
class Confidence:
    """Softmax probability a pixel needs for its class (lesion) or for background to become a target;
    ``positive_background``: whether a B-scan that shows a class gives background targets at all; ``top_k``: on a
    B-scan that shows a class, the k pixels most likely to hold an allowed class become targets too, however unsure
    (multiple-instance learning: the label says the lesion is somewhere, so the likeliest pixels are taught it)."""

    lesion: float = 0.7
    background: float = 0.9
    positive_background: bool = False
    top_k: int = 0

    def __post_init__(self) -> None:
        for name in ("lesion", "background"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"confidence {name} must be in (0, 1]; got {value}")
        if self.top_k < 0:
            raise ValueError(f"confidence top_k must be >= 0; got {self.top_k}")


def _speaks(c: int, ids: Collection[int]) -> bool:
    """Whether a set of image-label ids covers class ``c`` (directly, through fluid, or fluid through SRF + IRF)."""
    if c in ids or any(c in COVERS.get(k, ()) for k in ids):
        return True
    return c in COVERS and COVERS[c] <= set(ids)


def _shows(c: int, ids: Collection[int]) -> bool:
    """Whether image-label ids say class ``c`` is there: it or a part of it (SRF shown: fluid is)."""
    return _speaks(c, ids) or any(_speaks(s, ids) for s in COVERS.get(c, ()))


def verdicts(classes: Sequence[int], labels: Collection[int], known: Collection[int]) -> list[str]:
    """Per student class: "allowed" (the image shows it), "excluded" (the label says it is absent) or "unknown"."""
    out = []
    for c in classes:
        out.append("allowed" if _shows(c, labels) else "excluded" if _speaks(c, known) else "unknown")
    return out


def image_level_target(probs: np.ndarray, classes: Sequence[int], labels: Collection[int], known: Collection[int],
                       confidence: Confidence = Confidence()) -> np.ndarray:
    """(H, W) uint8 target from a softmax (1 + K, H, W): ontology ids where confident and allowed, background where
    confident or where an excluded class won (on a B-scan that shows no class, unless ``positive_background``),
    :data:`IGNORE` elsewhere."""
    if probs.ndim != 3 or probs.shape[0] != len(classes) + 1:
        raise ValueError(f"probabilities must be (1 + {len(classes)}, H, W); got {probs.shape}")
    best, top = probs.argmax(0), probs.max(0)
    said = verdicts(classes, labels, known)
    out = np.full(best.shape, IGNORE, np.uint8)
    background = confidence.positive_background or "allowed" not in said
    if background:
        out[(best == 0) & (top >= confidence.background)] = 0
    for j, (c, verdict) in enumerate(zip(classes, said, strict=True), start=1):
        won = best == j
        if verdict == "excluded" and background:
            out[won] = 0
        elif verdict == "allowed":
            out[won & (top >= confidence.lesion)] = c
    allowed = [j for j, v in enumerate(said, start=1) if v == "allowed"]
    if confidence.top_k and allowed:
        _top_k(out, probs, allowed, np.array((0, *classes))[allowed], confidence.top_k)
    return out


def _top_k(out: np.ndarray, probs: np.ndarray, allowed: list[int], ids: np.ndarray, k: int) -> None:
    """Mark the k pixels of highest summed allowed-class probability still ignored with their likeliest allowed
    class (in place)."""
    chosen = probs[allowed].reshape(len(allowed), -1)  # one copy of the allowed channels
    group = chosen.sum(0)
    pick = np.argpartition(-group, min(k, group.size - 1))[:k]
    pick = pick[out.ravel()[pick] == IGNORE]
    out.ravel()[pick] = ids[chosen[:, pick].argmax(0)]


@dataclass(frozen=True)
class CamGate:
    """A classifier's lesion map in [0, 1] as a second opinion on allowed-class targets: a student target survives only
    where the map is >= ``threshold``; an ignored pixel the map puts there becomes a target where the student gives the
    allowed classes >= ``moderate`` probability (the recall the student's own confidence lacks)."""

    threshold: float = 0.5
    moderate: float = 0.3

    def __post_init__(self) -> None:
        for name in ("threshold", "moderate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"cam {name} must be in [0, 1]; got {getattr(self, name)}")


def cam_gate(target: np.ndarray, probs: np.ndarray, cam: np.ndarray, classes: Sequence[int],
             labels: Collection[int], known: Collection[int], cam_classes: Collection[int],
             gate: CamGate = CamGate()) -> np.ndarray:
    """``target`` of :func:`image_level_target` intersected with the map ``cam`` (H, W) for the allowed classes the
    map's classifier speaks for (``cam_classes``, e.g. fluid for SRF and IRF), and widened to the map's moderately
    likely pixels; other classes and B-scans that allow none are returned unchanged (a copy)."""
    out = target.copy()
    said = verdicts(classes, labels, known)
    gated = [j for j, (c, v) in enumerate(zip(classes, said, strict=True), start=1)
             if v == "allowed" and _shows(c, cam_classes)]
    if not gated:
        return out
    ids = np.array((0, *classes))[gated]
    high = np.asarray(cam) >= gate.threshold
    out[np.isin(out, ids) & ~high] = IGNORE
    group = probs[gated]
    add = (out == IGNORE) & high & (group.sum(0) >= gate.moderate)
    out[add] = ids[group[:, add].argmax(0)]
    return out
