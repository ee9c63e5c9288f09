"""The paper's three HRF label types (binary, 0/1/>1 classes, count regression): outputs, losses, presence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LABEL_TYPES: tuple[str, ...] = ("binary", "three_class", "count")
MAX_COUNT = 10.0  # regression target is the count clipped at 10, predicted as sigmoid x 10


def n_outputs(label_type: str) -> int:
    """Logits a classifier head needs for ``label_type``."""
    check_label_type(label_type)
    return 3 if label_type == "three_class" else 1


def check_label_type(label_type: str) -> None:
    """ValueError naming the allowed label types."""
    if label_type not in LABEL_TYPES:
        raise ValueError(f"HRF label type must be one of {LABEL_TYPES}, got {label_type!r}")


def targets(counts: Tensor, label_type: str) -> Tensor:
    """Training targets from per-image HRF counts: 0/1 float, class 0/1/2 long, or the count clipped at 10."""
    counts = counts.float()
    if label_type == "binary":
        return (counts > 0).float()
    if label_type == "three_class":
        return counts.clamp(max=2).long()
    return counts.clamp(0, MAX_COUNT)


def loss(out: Tensor, counts: Tensor, label_type: str) -> Tensor:
    """BCE (binary), cross-entropy (three classes) or MSE of sigmoid x 10 against the clipped count."""
    t = targets(counts, label_type)
    if label_type == "binary":
        return F.binary_cross_entropy_with_logits(out[:, 0], t)
    if label_type == "three_class":
        return F.cross_entropy(out, t)
    return F.mse_loss(predicted_count(out), t)


def predicted_count(out: Tensor) -> Tensor:
    """The regression head's count: sigmoid x 10 (B,)."""
    return torch.sigmoid(out[:, 0]) * MAX_COUNT


def presence(out: Tensor, label_type: str) -> Tensor:
    """Probability-like score (B,) that the image holds HRF: sigmoid, 1 - P(class 0), or the count capped at 1."""
    if label_type == "binary":
        return torch.sigmoid(out[:, 0])
    if label_type == "three_class":
        return 1.0 - torch.softmax(out, dim=1)[:, 0]
    return predicted_count(out).clamp(max=1.0)


def explained_logit(out: Tensor, label_type: str) -> Tensor:
    """One-hot (B, n_outputs) selecting the logit whose relevance marks HRF: the positive one, the likelier of
    classes 1 and 2, or the regression logit."""
    grad = torch.zeros_like(out)
    if label_type == "three_class":
        grad[torch.arange(out.shape[0]), 1 + out[:, 1:].argmax(dim=1)] = 1.0
    else:
        grad[:, 0] = 1.0
    return grad
