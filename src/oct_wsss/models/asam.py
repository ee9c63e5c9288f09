"""ASAM, the anomaly self-attention module of AGM (paper Sec. 3.2; METHODS.md section 1).

A convolutional encoder takes the anomaly map |x - x_hat| down to the backbone's feature size, then
multi-head local self-attention (SASA, Ramachandran et al. 2019) with relative row/column offset
embeddings mixes each pixel with its k x k neighbourhood. Output ReLU; no output projection, no residual.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

EncoderKind = Literal["light", "unet"]
PadMode = Literal["mask", "zeros"]
ENCODERS: tuple[str, ...] = ("light", "unet")
PAD_MODES: tuple[str, ...] = ("mask", "zeros")
N_DOWN = 5  # every ResNet reaches stride 32 in five halvings


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding for odd kernels."""
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DoubleConv(nn.Sequential):
    """U-Net DoubleConv: two 3x3 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class Down(nn.Sequential):
    """U-Net Down block: 2x2 max-pool (ceil mode, so odd sizes halve like a ResNet) then DoubleConv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.MaxPool2d(2, ceil_mode=True), DoubleConv(cin, cout))


def unet_encoder(out_channels: int, in_channels: int = 3, n_down: int = N_DOWN) -> nn.Sequential:
    """The reference encoder: DoubleConv(3->64) at full resolution, then ``n_down`` Down blocks (64..out_channels)."""
    widths = [min(64 * 2**i, out_channels) for i in range(n_down)] + [out_channels]
    blocks: list[nn.Module] = [DoubleConv(in_channels, widths[0])]
    blocks += [Down(widths[i], widths[i + 1]) for i in range(n_down)]
    return nn.Sequential(*blocks)


def light_encoder(out_channels: int, width: int = 16, in_channels: int = 3, n_down: int = N_DOWN) -> nn.Sequential:
    """Cheap encoder: ``n_down`` strided 3x3 conv stages (width, 2w, 4w, 8w, 8w), then a 1x1 projection."""
    widths = [in_channels, width, 2 * width, 4 * width, 8 * width, 8 * width][: n_down + 1]
    layers: list[nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        layers += _conv_bn_relu(cin, cout, stride=2)
    layers += _conv_bn_relu(widths[-1], out_channels, kernel=1)
    return nn.Sequential(*layers)


class LocalSelfAttention(nn.Module):
    """Multi-head SASA in a k x k window: logits = (q.k + q.[r_row(dy), r_col(dx)]) / sqrt(d_head); ReLU output.

    pad_mode "mask" drops window positions outside the map from the softmax (default); "zeros" keeps them as
    zero keys/values (the reference's zero-padded map; q/k/v convs have no bias, so padded k = v = 0).
    """

    def __init__(self, channels: int, heads: int = 4, window: int = 7, pad_mode: PadMode = "mask") -> None:
        super().__init__()
        if heads < 1 or channels % heads or (channels // heads) % 2:
            raise ValueError(f"channels ({channels}) must split into {heads} heads of even size")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.heads, self.window, self.pad_mode = heads, window, pad_mode
        self.head_dim = channels // heads
        self.query = nn.Conv2d(channels, channels, 1, bias=False)
        self.key = nn.Conv2d(channels, channels, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        half = self.head_dim // 2
        self.rel_row = nn.Parameter(torch.randn(heads, half, window))  # row-offset embedding, d_head/2 per head
        self.rel_col = nn.Parameter(torch.randn(heads, half, window))  # column-offset embedding, d_head/2 per head

    def window_size(self, height: int, width: int) -> tuple[int, int]:
        """Window actually used: the configured one, cropped to the offsets that can reach the map (2*size - 1)."""
        return min(self.window, 2 * height - 1), min(self.window, 2 * width - 1)

    def relative_embedding(self, kh: int, kw: int) -> torch.Tensor:
        """Per-head position embedding of each window offset, (heads, d_head, kh*kw), row half then column half."""
        c = self.window // 2
        row = self.rel_row[:, :, c - kh // 2 : c + kh // 2 + 1]
        col = self.rel_col[:, :, c - kw // 2 : c + kw // 2 + 1]
        n, half = row.shape[:2]
        rel = torch.cat([row[..., :, None].expand(n, half, kh, kw), col[..., None, :].expand(n, half, kh, kw)], 1)
        return rel.reshape(n, 2 * half, kh * kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W).

        q.k is one batched matmul over all pixel pairs of the map, from which each pixel's window is gathered;
        the softmax weights are scattered back and applied with a second matmul. At the paper's 16x16 map this
        is ~10x faster on CPU than sliding the window offset by offset; cost grows as (H*W)^2 * C.
        """
        b, c, h, w = x.shape
        nh, dh, hw = self.heads, self.head_dim, h * w
        kh, kw = self.window_size(h, w)
        q = (self.query(x) * dh**-0.5).reshape(b, nh, dh, hw).transpose(2, 3)  # (B, heads, HW, d)
        k = self.key(x).reshape(b * nh, dh, hw)
        v = self.value(x).reshape(b * nh, dh, hw).transpose(1, 2)
        index, inside = self._window_index(h, w, kh, kw, x.device)  # (HW, k*k) key position, in-map flag
        content = torch.bmm(q.reshape(b * nh, hw, dh), k).gather(2, index.expand(b * nh, hw, kh * kw))
        content = content.reshape(b, nh, hw, kh * kw).masked_fill(~inside, 0.0)  # zero-padded keys: q.k = 0
        position = torch.einsum("bnpd,ndo->bnpo", q, self.relative_embedding(kh, kw).to(q.dtype))
        logits = content + position
        if self.pad_mode == "mask":
            logits = logits.masked_fill(~inside, float("-inf"))
        attn = logits.softmax(dim=-1).masked_fill(~inside, 0.0)  # zero-padded values contribute nothing
        dense = torch.zeros(b * nh, hw, hw, dtype=attn.dtype, device=attn.device)
        dense = dense.scatter_add(2, index.expand(b * nh, hw, kh * kw), attn.reshape(b * nh, hw, kh * kw))
        out = torch.bmm(dense, v)  # (B*heads, HW, d)
        return F.relu(out.reshape(b, nh, h, w, dh).permute(0, 1, 4, 2, 3).reshape(b, c, h, w))

    @staticmethod
    def _window_index(h: int, w: int, kh: int, kw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat key position (HW, kh*kw) of each pixel's window offsets (0 where outside) and the in-map flags."""
        rows = torch.arange(h, device=device)[:, None] + torch.arange(kh, device=device)[None, :] - kh // 2
        cols = torch.arange(w, device=device)[:, None] + torch.arange(kw, device=device)[None, :] - kw // 2
        row_ok, col_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)  # (H, kh), (W, kw)
        inside = (row_ok[:, None, :, None] & col_ok[None, :, None, :]).reshape(h * w, kh * kw)
        flat = rows[:, None, :, None] * w + cols[None, :, None, :]  # (H, W, kh, kw)
        index = torch.where(inside, flat.reshape(h * w, kh * kw), torch.zeros((), dtype=torch.long, device=device))
        return index, inside


class Asam(nn.Module):
    """Anomaly map (B, 3, H, W) -> encoder -> SASA -> (B, C, H/2^n_down, W/2^n_down), the size of a ResNet layer4."""

    def __init__(
        self,
        out_channels: int,
        encoder: EncoderKind = "light",
        heads: int = 4,
        window: int = 7,
        encoder_width: int = 16,
        pad_mode: PadMode = "mask",
        in_channels: int = 3,
        n_down: int = N_DOWN,
    ) -> None:
        super().__init__()
        if not 1 <= n_down <= N_DOWN:
            raise ValueError(f"n_down must be in 1..{N_DOWN}, got {n_down}")
        if encoder == "light":
            self.encoder = light_encoder(out_channels, encoder_width, in_channels, n_down)
        elif encoder == "unet":
            self.encoder = unet_encoder(out_channels, in_channels, n_down)
        else:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        self.attention = LocalSelfAttention(out_channels, heads, window, pad_mode)

    def forward(self, anomaly: torch.Tensor) -> torch.Tensor:
        """Encode the anomaly map, then attend locally."""
        return self.attention(self.encoder(anomaly))
