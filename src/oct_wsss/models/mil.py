"""Attention-based MIL (Ilse et al. 2018) over 64x64 patches for HRF presence (METHODS.md section 3).

The bag is ``rows`` patch rows stacked around the retina found by Otsu thresholding, one patch per 64-px column
(torch-only placement, so the model stays a plain ``nn.Module``); a small AlexNet-like encoder embeds each patch,
gated attention pools the bag, a linear head gives the logits of the configured label type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import alexnet

from .config import strict_from_dict
from .hrf_labels import check_label_type, n_outputs

ENCODERS: tuple[str, ...] = ("small", "alexnet")


@dataclass
class MilConfig:
    """Hyper-parameters of :class:`MilNet`."""

    label_type: str = "binary"
    patch: int = 64
    rows: int = 3
    encoder: str = "small"  # "small" conv stack, or torchvision's AlexNet features with a 1-channel first conv
    width: int = 32  # first-stage channels of the small encoder
    features: int = 128  # L of Ilse et al.
    attention: int = 64  # D of Ilse et al.
    in_channels: int = 1
    dropout: float = 0.25

    def __post_init__(self) -> None:
        """Validate early with the allowed values in the message."""
        check_label_type(self.label_type)
        if self.encoder not in ENCODERS:
            raise ValueError(f"MilConfig.encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if min(self.patch, self.rows, self.width, self.features, self.attention) < 1:
            raise ValueError("MilConfig patch, rows, width, features and attention must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MilConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        return strict_from_dict(cls, data, "MilConfig")


def otsu_threshold(x: Tensor, bins: int = 256) -> Tensor:
    """Otsu's threshold of each image in (B, H, W) (torch only; scale-free)."""
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    idx = ((flat - lo) / (hi - lo).clamp_min(1e-12) * (bins - 1)).long()
    hist = torch.zeros(flat.shape[0], bins, device=x.device).scatter_add_(1, idx, torch.ones_like(flat))
    p = hist / hist.sum(1, keepdim=True)
    w0 = p.cumsum(1)
    centres = torch.arange(bins, device=x.device, dtype=p.dtype)
    mu = (p * centres).cumsum(1)
    between = (mu[:, -1:] * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    k = between.argmax(1, keepdim=True).float()
    return (lo + (k + 0.5) / (bins - 1) * (hi - lo))[:, 0]


def patch_origins(x: Tensor, patch: int, rows: int) -> Tensor:
    """Top-left (y, x) of the bag's patches (B, K, 2): per 64-px column, ``rows`` patches stacked around the centre
    row of the Otsu foreground (the retina), clamped inside the image; the last column is flush right."""
    b, _, h, w = x.shape
    if h < patch * rows or w < patch:
        raise ValueError(f"MIL needs B-scans of at least {patch * rows} x {patch} px, got {h} x {w}")
    with torch.no_grad():
        grey = x.mean(1)
        fg = (grey > otsu_threshold(grey)[:, None, None]).float()
        starts = list(range(0, w - patch + 1, patch))
        if starts[-1] + patch < w:
            starts.append(w - patch)
        cols = torch.tensor(starts, device=x.device)
        col_fg = torch.stack([fg[:, :, s:s + patch].sum(2) for s in starts], 1)  # (B, C, H) foreground per row
        ys = torch.arange(h, device=x.device, dtype=fg.dtype)
        mass = col_fg.sum(2)
        centre = torch.where(mass > 0, (col_fg * ys).sum(2) / mass.clamp_min(1), torch.full_like(mass, h / 2))
        top = (centre - rows * patch / 2).round().clamp(0, h - rows * patch).long()  # (B, C)
        offsets = torch.arange(rows, device=x.device) * patch
        y0 = (top[:, :, None] + offsets).flatten(1)
        x0 = cols[None, :, None].expand(b, -1, rows).flatten(1)
        return torch.stack([y0, x0], 2)


def extract_patches(x: Tensor, origins: Tensor, patch: int) -> Tensor:
    """(B, K, C, p, p) patches at ``origins`` (differentiable in x: relevance flows back to the pixels)."""
    b, c = x.shape[:2]
    r = torch.arange(patch, device=x.device)
    yy = (origins[:, :, 0, None, None] + r[None, None, :, None]).expand(-1, -1, patch, patch)
    xx = (origins[:, :, 1, None, None] + r[None, None, None, :]).expand(-1, -1, patch, patch)
    bi = torch.arange(b, device=x.device)[:, None, None, None].expand_as(yy)
    return x.permute(0, 2, 3, 1)[bi, yy, xx].permute(0, 1, 4, 2, 3).reshape(b, -1, c, patch, patch)


def _encoder(config: MilConfig) -> tuple[nn.Module, int]:
    """Patch encoder and its flattened output size for a ``patch`` x ``patch`` input."""
    if config.encoder == "alexnet":
        feats = alexnet(weights=None).features
        feats[0] = nn.Conv2d(config.in_channels, 64, 11, 4, 2)
    else:
        w = config.width
        feats = nn.Sequential(
            nn.Conv2d(config.in_channels, w, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        size = feats(torch.zeros(1, config.in_channels, config.patch, config.patch)).numel()
    return feats, size


class GatedAttentionPool(nn.Module):
    """a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k))); returns sum_k a_k h_k and keeps a_k in ``last_weights``."""

    def __init__(self, features: int, attention: int) -> None:
        super().__init__()
        self.v, self.u, self.w = nn.Linear(features, attention), nn.Linear(features, attention), nn.Linear(attention, 1)
        self.last_weights: Tensor | None = None

    def weights(self, h: Tensor) -> Tensor:
        """Attention weights (B, K) of a bag of embeddings (B, K, L)."""
        return torch.softmax(self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))[..., 0], dim=1)

    def forward(self, h: Tensor) -> Tensor:
        a = self.weights(h)
        self.last_weights = a.detach()
        return (a[..., None] * h).sum(1)


class MilNet(nn.Module):
    """(B, C, H, W) normalised B-scans -> (B, n_outputs) logits; ``origins`` may be given, else Otsu-placed."""

    def __init__(self, config: MilConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder, size = _encoder(config)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(size, config.features), nn.ReLU(),
                                   nn.Dropout(config.dropout))
        self.pool = GatedAttentionPool(config.features, config.attention)
        self.head = nn.Linear(config.features, n_outputs(config.label_type))

    def forward(self, x: Tensor, origins: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"MilNet expects (B, {self.config.in_channels}, H, W) input, got {tuple(x.shape)}")
        p = self.config.patch
        origins = patch_origins(x, p, self.config.rows) if origins is None else origins
        patches = extract_patches(x, origins, p)
        b, k = patches.shape[:2]
        h = self.embed(self.encoder(patches.reshape(b * k, -1, p, p))).reshape(b, k, -1)
        return self.head(self.pool(h))
