"""Compact Convolutional Transformer (Hassani et al. 2021; METHODS.md section 3) for HRF presence at native size.

Convolutional tokenizer, transformer encoder, sequence pooling, linear head. Attention is written with explicit
``nn.Linear`` q/k/v/proj and ``nn.Softmax`` modules (not ``nn.MultiheadAttention``) so that zennit rules can be
attached to each part (``explain/lrp.py``). Rectangular inputs of any size: the learnable positional embedding is
interpolated when the token grid differs from the configured one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import strict_from_dict
from .hrf_labels import check_label_type, n_outputs

#: name -> (layers, heads, mlp ratio, dim) as in the CCT paper.
VARIANTS: dict[str, tuple[int, int, float, int]] = {
    "cct_2": (2, 2, 1.0, 128), "cct_4": (4, 2, 1.0, 128), "cct_6": (6, 4, 2.0, 256),
    "cct_7": (7, 4, 2.0, 256), "cct_14": (14, 6, 3.0, 384),
}


@dataclass
class CctConfig:
    """Hyper-parameters of :class:`Cct`; defaults are cct_7 with a 7x7, 2-layer tokenizer (stride 16) on 496x1024."""

    label_type: str = "binary"
    layers: int = 7
    heads: int = 4
    mlp_ratio: float = 2.0
    dim: int = 256
    kernel: int = 7
    conv_layers: int = 2
    conv_channels: int = 64
    in_channels: int = 1
    input_size: list[int] = field(default_factory=lambda: [496, 1024])
    dropout: float = 0.0
    attention_dropout: float = 0.1
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        """Validate early with the allowed values in the message."""
        check_label_type(self.label_type)
        if self.dim % self.heads:
            raise ValueError(f"CctConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if min(self.layers, self.heads, self.conv_layers, self.kernel, self.in_channels) < 1:
            raise ValueError("CctConfig layers, heads, conv_layers, kernel and in_channels must be >= 1")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"CctConfig.input_size must be [height, width], got {self.input_size}")
        self.input_size = [int(s) for s in self.input_size]

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> CctConfig:
        """A named variant (cct_2 ... cct_14) with optional overrides."""
        if name not in VARIANTS:
            raise ValueError(f"unknown CCT variant {name!r}; choose from {sorted(VARIANTS)}")
        layers, heads, ratio, dim = VARIANTS[name]
        return cls(**{"layers": layers, "heads": heads, "mlp_ratio": ratio, "dim": dim, **overrides})

    @property
    def stride(self) -> int:
        """Total down-sampling of the tokenizer (conv stride x max-pool 2 per layer)."""
        return (max(1, self.kernel // 2 - 1) * 2) ** self.conv_layers

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (rows, columns) for an input of ``height`` x ``width``."""
        s, p = max(1, self.kernel // 2 - 1), max(1, self.kernel // 2)
        for _ in range(self.conv_layers):
            height, width = (height + 2 * p - self.kernel) // s + 1, (width + 2 * p - self.kernel) // s + 1
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        return height, width

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CctConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        return strict_from_dict(cls, data, "CctConfig")


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample while training; identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    """Multi-head self-attention from explicit Linear layers; ``softmax`` is a module so LRP can hold it constant."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.softmax = nn.Softmax(dim=-1)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (f(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        weights = self.drop(self.softmax((q @ k.transpose(-2, -1)) * self.scale))
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    """CCT encoder layer: x + DropPath(Attn(LN(x))), then LN, then + DropPath(MLP) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, attention_dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.pre_norm, self.attn = nn.LayerNorm(dim), Attention(dim, heads, attention_dropout)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.pre_norm(x)))
        x = self.norm(x)
        return x + self.drop_path(self.mlp(x))


class Tokenizer(nn.Module):
    """n x [Conv(k, stride max(1, k//2-1), no bias) -> ReLU -> MaxPool(3, 2, 1)]; the last conv outputs ``dim``."""

    def __init__(self, config: CctConfig) -> None:
        super().__init__()
        s, p = max(1, config.kernel // 2 - 1), max(1, config.kernel // 2)
        chans = [config.in_channels] + [config.conv_channels] * (config.conv_layers - 1) + [config.dim]
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            blocks += [nn.Conv2d(c_in, c_out, config.kernel, s, p, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        self.layers = nn.Sequential(*blocks)
        self.out = nn.Identity()  # boundary marker: LRP switches from gradient x input to zennit relevance here

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.layers(x))


class Position(nn.Module):
    """Learnable positional embedding on the configured token grid, bilinearly resized for other grids."""

    def __init__(self, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.embedding = nn.Parameter(torch.empty(1, dim, *grid))
        nn.init.trunc_normal_(self.embedding, std=0.2)

    def forward(self, batch: int, grid: tuple[int, int]) -> Tensor:
        emb = self.embedding
        if tuple(grid) != self.grid:
            emb = F.interpolate(emb, size=grid, mode="bilinear", align_corners=False)
        return emb.flatten(2).transpose(1, 2).expand(batch, -1, -1)


class Cct(nn.Module):
    """CCT classifier: (B, C, H, W) normalised B-scans -> (B, n_outputs) logits for the configured label type."""

    def __init__(self, config: CctConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config)
        self.position = Position(config.grid(*config.input_size), config.dim)
        self.drop = nn.Dropout(config.dropout)
        rates = torch.linspace(0, config.drop_path, config.layers, device="cpu").tolist()  # also under meta
        self.blocks = nn.Sequential(*(EncoderLayer(config.dim, config.heads, config.mlp_ratio, config.dropout,
                                                   config.attention_dropout, r) for r in rates))
        self.norm = nn.LayerNorm(config.dim)
        self.pool = nn.Linear(config.dim, 1)
        self.pool_softmax = nn.Softmax(dim=1)
        self.head = nn.Linear(config.dim, n_outputs(config.label_type))
        self.apply(_init)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"Cct expects (B, {self.config.in_channels}, H, W) input, got {tuple(x.shape)}")
        t = self.tokenizer(x)
        grid = (t.shape[2], t.shape[3])
        t = t.flatten(2).transpose(1, 2) + self.position(t.shape[0], grid)
        t = self.norm(self.blocks(self.drop(t)))
        weights = self.pool_softmax(self.pool(t))  # sequence pooling: (B, N, 1)
        return self.head((weights.transpose(1, 2) @ t)[:, 0])


def _init(m: nn.Module) -> None:
    """CCT's initialisation: truncated normal Linear, Kaiming conv, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
