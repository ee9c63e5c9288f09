"""Background-threshold sweep (AGM paper Fig. 8): pseudo label = argmax over [α, score_1..score_K]; best α by mIoU.

One pass over the pixels: each pixel's best class and best score are binned against the α grid, and the confusion
matrix of every α follows from cumulative sums, so 101 thresholds cost about as much as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oct_wsss.classes import BACKGROUND, ONTOLOGY
from oct_wsss.evaluate.metrics import N_IDS, _as_ids


@dataclass(frozen=True)
class SweepResult:
    """The curve: α grid, pooled mIoU with/without background, per-class pooled IoU (len(alphas), len(ids))."""

    alphas: np.ndarray
    miou: np.ndarray
    miou_lesions: np.ndarray
    iou: np.ndarray  # NaN where a class has no truth and no prediction
    ids: tuple[int, ...]  # ontology ids of the iou columns (background first)
    best_alpha: float
    best_miou: float


def sweep_threshold(scores: np.ndarray | Sequence[np.ndarray], truth: np.ndarray | Sequence[np.ndarray],
                    class_ids: Sequence[int], step: float = 0.01) -> SweepResult:
    """Sweep α over 0..1 for (n, K, H, W) scores (channel k = ontology id ``class_ids[k]``) vs. (n, H, W) truth.

    Either side may also be a sequence of per-image (K, H, W) / (H, W) arrays, so B-scans of different sizes mix.

    A pixel becomes ``class_ids[argmax_k score]`` when its best score is strictly above α, else background (ties go
    to background, as ``argmax`` over [α, scores] picks the first). mIoU is pooled over all pixels and averaged over
    the classes with truth pixels (background included), as in ``segmentation_scores``. Truth ids outside
    ``class_ids`` count as background. The best α is the first one reaching the highest mIoU.
    """
    if isinstance(scores, np.ndarray) and scores.ndim == 3:
        scores, truth = scores[np.newaxis], np.asarray(truth)[np.newaxis]
    scores = [np.asarray(s) for s in scores]
    truth = [_as_ids(np.asarray(t), "truth") for t in truth]
    ids = [int(c) for c in class_ids]
    if len(scores) != len(truth) or any(s.ndim != 3 or s.shape != (len(ids), *t.shape)
                                        for s, t in zip(scores, truth, strict=False)):
        shapes = [s.shape for s in scores[:3]], [t.shape for t in truth[:3]]
        raise ValueError(f"scores {shapes[0]}... must each be ({len(ids)}, H, W) matching truth {shapes[1]}...")
    if BACKGROUND in ids or len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must be distinct lesion ids; got {ids}")
    alphas = np.round(np.arange(0.0, 1.0 + step / 2, step), 10)
    n_a, k1 = len(alphas), len(ids) + 1
    # truth in compact indices 0..K (0 = background, others folded into background)
    lut = np.zeros(N_IDS, dtype=np.uint8)
    lut[ids] = np.arange(1, k1, dtype=np.uint8)
    # counts[t, c, j]: pixels with truth t, best class c (1..K) and `j` = number of alphas below their best score
    counts = np.zeros(k1 * k1 * (n_a + 1), dtype=np.int64)
    for s, t in zip(scores, truth, strict=True):  # per image: memory stays at one B-scan's temporaries
        best = s.argmax(axis=0)
        top = np.take_along_axis(s, best[np.newaxis], axis=0)[0]
        j = np.searchsorted(alphas, top.astype(np.float64), side="left")  # α_m < top  <=>  m < j
        code = (lut[t].astype(np.int64) * k1 + best + 1) * (n_a + 1) + j
        counts += np.bincount(code.ravel(), minlength=counts.size)
    counts = counts.reshape(k1, k1, n_a + 1)
    # lesion[t, c, m] = pixels with truth t assigned class c at α_m = those with j > m
    lesion = np.cumsum(counts[:, :, ::-1], axis=2)[:, :, ::-1][:, :, 1:]
    truth_total = counts.sum(axis=(1, 2))
    cm = lesion.transpose(2, 0, 1).copy()  # (n_a, t, c)
    cm[:, :, 0] = truth_total[None, :] - lesion[:, 1:, :].sum(axis=1).T
    tp = np.einsum("aii->ai", cm).astype(float)
    den = cm.sum(axis=2) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(den > 0, tp / den, np.nan)
    have = truth_total > 0
    miou = iou[:, have].mean(axis=1) if have.any() else np.full(n_a, np.nan)
    les = have.copy()
    les[0] = False
    miou_l = iou[:, les].mean(axis=1) if les.any() else np.full(n_a, np.nan)
    best = int(np.nanargmax(miou)) if np.isfinite(miou).any() else 0
    return SweepResult(alphas=alphas, miou=miou, miou_lesions=miou_l, iou=iou, ids=(BACKGROUND, *ids),
                       best_alpha=float(alphas[best]), best_miou=float(miou[best]))


def write_sweep_csv(result: SweepResult, path: str | Path) -> Path:
    """CSV with columns alpha, miou, miou_lesions, iou_<key> per class (empty cell where undefined)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [ONTOLOGY[c].key for c in result.ids]
    lines = [",".join(["alpha", "miou", "miou_lesions", *(f"iou_{k}" for k in keys)])]
    fmt = lambda v: "" if not np.isfinite(v) else f"{v:.6f}"  # noqa: E731
    for a in range(len(result.alphas)):
        row = [f"{result.alphas[a]:.2f}", fmt(result.miou[a]), fmt(result.miou_lesions[a]),
               *(fmt(v) for v in result.iou[a])]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_sweep(result: SweepResult, path: str | Path, title: str = "background threshold sweep") -> Path:
    """PNG of mIoU (and per-class IoU, dashed) against α with the best α marked (matplotlib Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(result.alphas, result.miou, color="black", lw=2, label="mIoU")
    ax.plot(result.alphas, result.miou_lesions, color="grey", lw=1.5, label="mIoU w/o bg")
    for col, c in enumerate(result.ids):
        if c != BACKGROUND and np.isfinite(result.iou[:, col]).any():
            ax.plot(result.alphas, result.iou[:, col], ls="--", color=ONTOLOGY[c].colour[:3], label=ONTOLOGY[c].key)
    ax.axvline(result.best_alpha, color="black", ls=":", lw=1)
    ax.annotate(f"α = {result.best_alpha:.2f}\nmIoU = {result.best_miou:.3f}", (result.best_alpha, result.best_miou),
                textcoords="offset points", xytext=(6, -28), fontsize=8)
    ax.set(xlabel="background threshold α", ylabel="IoU (pooled)", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    return path
