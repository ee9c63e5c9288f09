"""Image-level (per B-scan) classification metrics: accuracy, F1 and ROC AUC per class (AGM paper, Table 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC by the Mann–Whitney rank statistic (ties get mid-ranks, i.e. count 1/2); None without both classes."""
    scores, labels = np.asarray(scores, dtype=float).ravel(), np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores, method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1_score(pred: np.ndarray, labels: np.ndarray) -> float | None:
    """F1 = 2TP / (2TP + FP + FN) of boolean predictions; None when neither side has a positive."""
    pred, labels = np.asarray(pred).astype(bool), np.asarray(labels).astype(bool)
    tp = int((pred & labels).sum())
    den = 2 * tp + int((pred & ~labels).sum()) + int((~pred & labels).sum())
    return 2 * tp / den if den else None


def classification_scores(probs: np.ndarray, labels: np.ndarray, keys: Sequence[str] | None = None,
                          threshold: float = 0.5) -> dict[str, Any]:
    """Per-class accuracy, F1 (at ``threshold``) and AUC of (n, K) probabilities vs. (n, K) 0/1 presence labels.

    Returns ``{"classes": {key: {...}}, "accuracy", "f1", "auc"}`` (macro means over classes where defined),
    ``"auc_weighted"`` (weighted by positives, as the AGM code reports) and ``"exact_match"`` (all K right).
    """
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    if probs.ndim == 1:
        probs, labels = probs[:, None], labels.reshape(-1, 1)
    if probs.shape != labels.shape:
        raise ValueError(f"probabilities {probs.shape} and labels {labels.shape} differ in shape")
    labels = labels.astype(bool)
    keys = list(keys) if keys is not None else [f"class_{k}" for k in range(probs.shape[1])]
    if len(keys) != probs.shape[1]:
        raise ValueError(f"{len(keys)} class keys for {probs.shape[1]} columns")
    pred = probs >= threshold
    per: dict[str, dict[str, Any]] = {}
    for k, key in enumerate(keys):
        per[key] = {"accuracy": float((pred[:, k] == labels[:, k]).mean()) if len(labels) else None,
                    "f1": f1_score(pred[:, k], labels[:, k]), "auc": roc_auc(probs[:, k], labels[:, k]),
                    "positives": int(labels[:, k].sum()), "n": int(len(labels))}

    def macro(metric: str) -> float | None:
        vals = [v[metric] for v in per.values() if v[metric] is not None]
        return float(np.mean(vals)) if vals else None

    weighted = [(v["auc"], v["positives"]) for v in per.values() if v["auc"] is not None]
    w_total = sum(w for _, w in weighted)
    return {"classes": per, "accuracy": macro("accuracy"), "f1": macro("f1"), "auc": macro("auc"),
            "auc_weighted": float(sum(a * w for a, w in weighted) / w_total) if w_total else None,
            "exact_match": float((pred == labels).all(axis=1).mean()) if len(labels) else None,
            "threshold": threshold}


def presence_from_labels(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(n, K) 0/1 image-level labels of (n, H, W) ontology ids: does B-scan i hold a pixel of ``ids[k]``."""
    labels = np.asarray(labels)
    return np.stack([(labels == c).any(axis=(1, 2)) for c in ids], axis=1).astype(np.uint8)
