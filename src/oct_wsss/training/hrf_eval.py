"""Scoring HRF proposals on held-out B-scans with pixel masks (the paper's Tab. 1 and Tab. 2).

Per-B-scan Dice (mean over B-scans with HRF), pooled pixel recall and precision, for 1 and N iterations; the
relevance-threshold baselines (a global threshold on max-normalised positive relevance chosen on validation, and a
per-B-scan oracle threshold); mean absolute HRF count error; AUROC, average precision and F1 of the classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from oct_wsss.classes import HRF
from oct_wsss.evaluate.classification import f1_score, roc_auc
from oct_wsss.explain.lrp import relevance
from oct_wsss.propose.hrf import HrfProposer
from oct_wsss.training.data import Sample
from oct_wsss.training.hrf import hrf_count

THRESHOLDS = np.round(np.linspace(0.05, 0.95, 19), 2)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩T| / (|P| + |T|); 1 when both are empty."""
    den = int(pred.sum()) + int(truth.sum())
    return 1.0 if den == 0 else 2.0 * int((pred & truth).sum()) / den


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean precision at each positive, ranking by score (None without positives)."""
    labels = np.asarray(labels, bool)
    if not labels.any():
        return None
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].mean())


def segmentation_summary(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, Any]:
    """Mean per-B-scan Dice over B-scans with HRF, pooled pixel recall and precision."""
    pos = [dice(p, t) for p, t in zip(preds, truths, strict=True) if t.any()]
    tp = sum(int((p & t).sum()) for p, t in zip(preds, truths, strict=True))
    n_pred, n_true = sum(int(p.sum()) for p in preds), sum(int(t.sum()) for t in truths)
    return {"dice": round(float(np.mean(pos)), 4) if pos else None, "recall": round(tp / n_true, 4) if n_true else None,
            "precision": round(tp / n_pred, 4) if n_pred else None, "bscans_with_hrf": len(pos)}


def relevance_maps(proposer: HrfProposer, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Positive pixel relevance of the first pass, divided by its maximum (0 where nothing is positive)."""
    out = []
    for im in images:
        x = proposer.normalise(proposer.prepare(im))
        r = relevance(proposer.net, x).pixels[0].cpu().numpy().clip(min=0)
        out.append(r / r.max() if r.max() > 0 else r)
    return out


def threshold_baselines(val_maps: Sequence[np.ndarray], val_truth: Sequence[np.ndarray],
                        test_maps: Sequence[np.ndarray], test_truth: Sequence[np.ndarray]) -> dict[str, Any]:
    """Global relevance threshold chosen on validation (best mean Dice) and the per-B-scan oracle, on test."""
    def mean_dice(maps, truths, t):
        return float(np.mean([dice(m >= t, g) for m, g in zip(maps, truths, strict=True) if g.any()] or [0.0]))

    best = max(THRESHOLDS, key=lambda t: mean_dice(val_maps, val_truth, t))
    global_ = segmentation_summary([m >= best for m in test_maps], test_truth)
    oracle_preds = []
    for m, g in zip(test_maps, test_truth, strict=True):
        t = max(THRESHOLDS, key=lambda t: dice(m >= t, g)) if g.any() else 1.01
        oracle_preds.append(m >= t)
    return {"global": {**global_, "threshold": float(best)}, "oracle": segmentation_summary(oracle_preds, test_truth)}


def evaluate_hrf(proposer: HrfProposer, val: Sequence[Sample], test: Sequence[Sample], iterations: int = 6,
                 min_area: int = 5, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything the module doc lists, on ``test`` (``val`` only calibrates the global threshold)."""
    def load(samples):
        return ([s.load_image() for s in samples], [s.load_mask() == HRF for s in samples],
                [hrf_count(s.load_mask(), min_area) for s in samples])

    images, truths, counts = load(test)
    out: dict[str, Any] = {"test_bscans": len(test), "refiner": proposer.refiner}
    probs = []
    for n in sorted({1, iterations}):  # one pass when iterations is 1
        proposer.iterations = n
        preds, found = [], []
        for i, im in enumerate(images):
            mask, records, p = proposer.segment(im, i)
            preds.append(mask)
            found.append(len(records))
            if n == 1:
                probs.append(p[0])
        out[f"iterations_{n}"] = segmentation_summary(preds, truths)
        out[f"iterations_{n}"]["count_mae"] = round(float(np.mean(np.abs(np.array(found) - np.array(counts)))), 3)
        log(f"hrf eval, {n} iteration(s): {out[f'iterations_{n}']}")
    present = np.array(counts) > 0
    p = np.array(probs)
    out["classifier"] = {"auroc": roc_auc(p, present), "average_precision": average_precision(p, present),
                         "f1": f1_score(p >= 0.5, present), "positives": int(present.sum())}
    v_images, v_truths, _ = load(val)
    out["relevance_threshold"] = threshold_baselines(relevance_maps(proposer, v_images), v_truths,
                                                     relevance_maps(proposer, images), truths)
    log(f"hrf eval, relevance thresholds: {out['relevance_threshold']}; classifier: {out['classifier']}")
    return out
