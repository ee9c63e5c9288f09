"""Segmentation metrics over ontology ids: confusion matrices, IoU/DSC pooled and per image, area ratios, DFP metrics.

Everything is derived from per-image confusion matrices (rows = truth id, columns = predicted id), so a dataset of
B-scans with different sizes is scored without ever stacking them. Definitions are in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oct_wsss.classes import BACKGROUND, FLUID, IRF, ONTOLOGY, SRF

#: Number of ontology ids (0..7); confusion matrices are always this size before restricting classes.
N_IDS: int = max(c.id for c in ONTOLOGY) + 1
_KEY = {c.id: c.key for c in ONTOLOGY}
#: what the ontology's "fluid, type not distinguished" (7) stands for: SRF or IRF
FLUID_PARTS: tuple[int, ...] = (SRF, IRF)


def _as_ids(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must hold integer ontology ids; got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= N_IDS):
        bad = sorted({int(v) for v in np.unique(labels) if v < 0 or v >= N_IDS})
        raise ValueError(f"{what} holds ids outside the ontology (0..{N_IDS - 1}): {bad[:10]}")
    return labels


def confusion_per_image(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n, 8, 8) int64 confusion matrices, one per B-scan, of (n, H, W) (or (H, W)) truth vs prediction ids."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs truth {tuple(truth.shape)}")
    truth, pred = _as_ids(truth, "truth"), _as_ids(pred, "pred")
    if truth.ndim == 2:
        truth, pred = truth[np.newaxis], pred[np.newaxis]
    if truth.ndim != 3:
        raise ValueError(f"labels must be (n_bscans, height, width); got shape {truth.shape}")
    out = np.empty((truth.shape[0], N_IDS, N_IDS), dtype=np.int64)
    for i in range(truth.shape[0]):  # per image keeps memory flat; uint8 codes (< 64) bincount fast
        code = truth[i].astype(np.uint8) * np.uint8(N_IDS) + pred[i].astype(np.uint8)
        out[i] = np.bincount(code.ravel(), minlength=N_IDS * N_IDS).reshape(N_IDS, N_IDS)
    return out


def image_confusions(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 8, 8) per-image confusion matrices of (truth, prediction) pairs whose B-scans may differ in size."""
    return np.concatenate([confusion_per_image(t[None], p[None]) for t, p in zip(truths, preds, strict=True)])


def confusion_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(8, 8) int64 confusion matrix pooled over all pixels (rows truth id, columns predicted id)."""
    return confusion_per_image(truth, pred).sum(axis=0)


def restrict(cm: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Fold every id not in ``classes`` into background, in truth and prediction; returns the same-shaped array."""
    keep = set(int(c) for c in classes) | {BACKGROUND}
    target = np.array([i if i in keep else BACKGROUND for i in range(N_IDS)])
    onehot = np.zeros((N_IDS, N_IDS), dtype=np.int64)
    onehot[np.arange(N_IDS), target] = 1
    return np.einsum("ij,...jk,kl->...il", onehot.T, cm, onehot)


def fluid_needs_union(cm: np.ndarray, classes: Iterable[int] | None = None) -> bool:
    """True when the prediction holds undistinguished fluid (7) and the truth never does, so 7 has no truth of its
    own and must be scored against SRF ∪ IRF (and ``classes``, if given, scores one of them)."""
    cm = np.asarray(cm).reshape(-1, N_IDS, N_IDS).sum(axis=0)
    wanted = classes is None or bool({int(c) for c in classes} & {FLUID, *FLUID_PARTS})
    return wanted and int(cm[:, FLUID].sum()) > 0 and int(cm[FLUID].sum()) == 0


def fold_fluid(cm: np.ndarray) -> np.ndarray:
    """SRF and IRF relabelled as fluid (7) in truth and prediction: a fluid prediction then meets their union."""
    target = np.array([FLUID if i in FLUID_PARTS else i for i in range(N_IDS)])
    onehot = np.zeros((N_IDS, N_IDS), dtype=np.int64)
    onehot[np.arange(N_IDS), target] = 1
    return np.einsum("ij,...jk,kl->...il", onehot.T, np.asarray(cm, dtype=np.int64), onehot)


def fold_fluid_classes(classes: Sequence[int] | None) -> list[int] | None:
    """``classes`` with SRF and IRF replaced by fluid (7), for scoring after ``fold_fluid``; None stays None."""
    if classes is None:
        return None
    return sorted({FLUID if int(c) in FLUID_PARTS else int(c) for c in classes})


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass(frozen=True)
class ClassScores:
    """One class's scores; ``None`` where a value is undefined (e.g. a ratio with TP = 0)."""

    id: int
    key: str
    iou: float | None  # pooled over the dataset: TP / (TP + FP + FN)
    iou_per_image: float | None
    dice_pooled: float | None
    dice_per_image: float | None  # mean over images where truth or prediction holds the class
    under_ratio: float | None  # FN / TP (pooled)
    over_ratio: float | None  # FP / TP (pooled)
    tp: int
    fp: int
    fn: int
    truth_pixels: int
    pred_pixels: int
    images_scored: int  # images entering the per-image means

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``None`` becomes ``null``)."""
        return {"id": self.id, "name": ONTOLOGY[self.id].name, "iou": self.iou, "iou_per_image": self.iou_per_image,
                "dice_pooled": self.dice_pooled, "dice_per_image": self.dice_per_image,
                "under_ratio": self.under_ratio, "over_ratio": self.over_ratio, "tp": self.tp, "fp": self.fp,
                "fn": self.fn, "truth_pixels": self.truth_pixels, "pred_pixels": self.pred_pixels,
                "images_scored": self.images_scored}


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class scores plus the overall means (Table 1 of the AGM paper: Overall and Overall w/o bg)."""

    classes: dict[str, ClassScores]
    miou: float | None  # mean pooled IoU over averaged classes incl. background
    miou_lesions: float | None  # same without background
    dice_per_image_mean: float | None
    dice_per_image_mean_lesions: float | None
    dice_pooled_mean: float | None
    averaged: tuple[str, ...]  # keys of the classes entering the means (those with truth pixels)
    n_images: int
    n_images_scored: int
    confusion: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the documented schema (docs/evaluation.md)."""
        return {"classes": {k: v.to_dict() for k, v in self.classes.items()}, "miou": self.miou,
                "miou_lesions": self.miou_lesions, "dice_per_image_mean": self.dice_per_image_mean,
                "dice_per_image_mean_lesions": self.dice_per_image_mean_lesions,
                "dice_pooled_mean": self.dice_pooled_mean, "averaged_classes": list(self.averaged),
                "n_images": self.n_images, "n_images_scored": self.n_images_scored,
                "confusion_matrix": self.confusion.tolist()}


def segmentation_scores(cms: np.ndarray, classes: Sequence[int] | None = None, *,
                        lesion_images_only: bool = False) -> SegmentationScores:
    """Score (n, 8, 8) per-image confusion matrices.

    ``classes``: ontology ids to score (background is always scored); ids outside it count as background in both
    truth and prediction. Default: every ontology id. ``lesion_images_only`` scores only images whose truth holds
    a lesion pixel of the scored classes (the AGM paper's protocol).
    """
    cms = np.asarray(cms, dtype=np.int64)
    if cms.ndim == 2:
        cms = cms[np.newaxis]
    ids = sorted({BACKGROUND, *(int(c) for c in (classes if classes is not None else range(N_IDS)))})
    for c in ids:
        if not 0 <= c < N_IDS:
            raise ValueError(f"class id {c} is outside the ontology (0..{N_IDS - 1})")
    n_images = cms.shape[0]
    cms = restrict(cms, ids)
    if lesion_images_only:
        lesion_truth = cms[:, 1:, :].sum(axis=(1, 2))
        cms = cms[lesion_truth > 0]
    pooled = cms.sum(axis=0)
    diag_i = np.einsum("nii->ni", cms)  # (n, 8) per-image TP
    truth_i, pred_i = cms.sum(axis=2), cms.sum(axis=1)
    scores: dict[str, ClassScores] = {}
    for c in ids:
        tp = int(pooled[c, c])
        t, p = int(pooled[c].sum()), int(pooled[:, c].sum())
        fp, fn = p - tp, t - tp
        present = (truth_i[:, c] + pred_i[:, c]) > 0  # images where truth or prediction holds the class
        tpi = diag_i[present, c]
        fpi, fni = pred_i[present, c] - tpi, truth_i[present, c] - tpi
        any_image = bool(present.any())
        dice_i = float((2 * tpi / (2 * tpi + fpi + fni)).mean()) if any_image else None
        iou_i = float((tpi / (tpi + fpi + fni)).mean()) if any_image else None
        scores[_KEY[c]] = ClassScores(
            id=c, key=_KEY[c], iou=_ratio(tp, tp + fp + fn), iou_per_image=iou_i,
            dice_pooled=_ratio(2 * tp, 2 * tp + fp + fn), dice_per_image=dice_i,
            under_ratio=_ratio(fn, tp), over_ratio=_ratio(fp, tp), tp=tp, fp=fp, fn=fn, truth_pixels=t,
            pred_pixels=p, images_scored=int(present.sum()))
    averaged = tuple(_KEY[c] for c in ids if scores[_KEY[c]].truth_pixels > 0)
    lesions = tuple(k for k in averaged if k != _KEY[BACKGROUND])
    return SegmentationScores(
        classes=scores, miou=_mean(scores[k].iou for k in averaged),
        miou_lesions=_mean(scores[k].iou for k in lesions),
        dice_per_image_mean=_mean(scores[k].dice_per_image for k in averaged),
        dice_per_image_mean_lesions=_mean(scores[k].dice_per_image for k in lesions),
        dice_pooled_mean=_mean(scores[k].dice_pooled for k in averaged), averaged=averaged,
        n_images=n_images, n_images_scored=int(cms.shape[0]), confusion=pooled)


def evaluate_labels(truth: np.ndarray, pred: np.ndarray, classes: Sequence[int] | None = None, *,
                    lesion_images_only: bool = False) -> SegmentationScores:
    """Score one (n, H, W) prediction against its truth (both ontology ids); see ``segmentation_scores``."""
    return segmentation_scores(confusion_per_image(truth, pred), classes, lesion_images_only=lesion_images_only)


# ----------------------------------------------------------------------------------------------- DFP (binary)

@dataclass(frozen=True)
class BinaryScores:
    """DFP's volume metrics for lesion-vs-background: DSC = 2TP/(|R|+|G|), TPVF = TP/|G|, PPV = TP/(TP+FP)."""

    dsc: float | None
    tpvf: float | None
    ppv: float | None
    tp: int
    fp: int
    fn: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"dsc": self.dsc, "tpvf": self.tpvf, "ppv": self.ppv, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def binary_scores(cm: np.ndarray, positive: Iterable[int] | None = None) -> BinaryScores:
    """Binary scores from an (8, 8) or (n, 8, 8) confusion matrix; ``positive`` ids (default all lesions) count as 1.

    Any positive id predicted on any positive truth id is a true positive (DFP's fluid vs. IRF/SRF truth).
    DSC is ``None`` when neither truth nor prediction holds a positive pixel; TPVF when truth holds none; PPV when
    the prediction holds none.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim == 3:
        cm = cm.sum(axis=0)
    pos = np.zeros(N_IDS, dtype=bool)
    pos[list(positive) if positive is not None else [c for c in range(N_IDS) if c != BACKGROUND]] = True
    tp = int(cm[np.ix_(pos, pos)].sum())
    g, r = int(cm[pos, :].sum()), int(cm[:, pos].sum())
    return BinaryScores(dsc=_ratio(2 * tp, g + r), tpvf=_ratio(tp, g), ppv=_ratio(tp, r), tp=tp, fp=r - tp, fn=g - tp)


def binary_volume_scores(truth: np.ndarray, pred: np.ndarray, positive: Iterable[int] | None = None) -> BinaryScores:
    """DSC/TPVF/PPV of one (n, H, W) volume, lesion (``positive`` ids) vs. background."""
    return binary_scores(confusion_matrix(truth, pred), positive)


def mean_sd(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof = 1) of the defined values; ``n`` counts them; sd is None for n < 2."""
    vals = np.array([v for v in values if v is not None], dtype=float)
    return {"mean": float(vals.mean()) if vals.size else None,
            "sd": float(vals.std(ddof=1)) if vals.size > 1 else None, "n": int(vals.size)}


def summarise_volumes(per_volume: Mapping[str, BinaryScores]) -> dict[str, dict[str, float | int | None]]:
    """Mean ± sd over volumes of DSC, TPVF and PPV (each over the volumes where it is defined)."""
    return {m: mean_sd(getattr(s, m) for s in per_volume.values()) for m in ("dsc", "tpvf", "ppv")}
