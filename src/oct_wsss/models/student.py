"""The student: a plain segmentation network trained on any method's pseudo labels and graders' corrections.

One forward pass per B-scan gives per-pixel logits over background + the checkpoint's lesion classes, which is why
it is the fast "Propose lesions" path. Architectures: a U-Net (small enough for a CPU) and torchvision's DeepLabV3
with a ResNet-50/101 backbone (the DFP paper's segmentation module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oct_wsss.models.config import strict_from_dict

ARCHITECTURES = ("unet", "deeplabv3_resnet50", "deeplabv3_resnet101")


@dataclass(frozen=True)
class StudentConfig:
    """``n_outputs`` = 1 (background) + the number of lesion classes; ``width``/``depth`` shape the U-Net only."""

    n_outputs: int
    arch: str = "unet"
    in_channels: int = 1
    width: int = 16
    depth: int = 4

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown student architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.n_outputs < 2:
            raise ValueError("a student predicts background and at least one lesion class (n_outputs >= 2)")
        if self.width < 1 or not 1 <= self.depth <= 6 or self.in_channels < 1:
            raise ValueError(f"invalid student size: width {self.width}, depth {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        return strict_from_dict(cls, data, "student config")


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + batch norm + ReLU: a U-Net level (the DFP "unet" backbone reuses it)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Ronneberger's U-Net with batch norm and bilinear upsampling; any input size (padded to a multiple of 2^depth)."""

    def __init__(self, in_channels: int, n_outputs: int, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(in_channels, chans[0])] +
                                  [double_conv(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([double_conv(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], n_outputs, 1)
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[..., :h, :w]


class StudentNet(nn.Module):
    """Per-pixel logits (B, n_outputs, H, W) at the input's size; channel 0 is background."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        if config.arch == "unet":
            self.net: nn.Module = UNet(config.in_channels, config.n_outputs, config.width, config.depth)
        else:
            from torchvision.models import segmentation

            build = getattr(segmentation, config.arch)
            self.net = build(weights=None, weights_backbone=None, num_classes=config.n_outputs, aux_loss=False)
            if config.in_channels != 3:
                self.net.backbone.conv1 = nn.Conv2d(config.in_channels, 64, 7, 2, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out["out"] if isinstance(out, dict) else out


def copy_encoder(student_state: dict[str, Tensor], own: dict[str, Tensor], places: Callable[[int, str], list[str]],
                 target: str, fit: Callable[[str, Tensor, Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """The encoder tensors ``net.down.i.REST`` of a StudentNet state dict, keyed by their places in another network's
    state ``own`` (``places(i, REST)``), each checked to exist and to fit (``fit`` may adapt one first); every tensor of
    ``own`` must get one. ``target`` names that network in the errors."""
    copied = {}
    for key, value in student_state.items():
        parts = key.split(".")
        if parts[:2] != ["net", "down"]:
            continue
        for name in places(int(parts[2]), ".".join(parts[3:])):
            if name not in own:
                raise ValueError(f"the student's {key} has no place in this {target} (a depth-4 U-Net encoder)")
            tensor = fit(name, value, own[name]) if fit else value
            if own[name].shape != tensor.shape:
                raise ValueError(f"the student's {key} is {tuple(value.shape)}, the {target}'s {name} "
                                 f"{tuple(own[name].shape)}: build it with the student's width and channels")
            copied[name] = tensor
    missing = [k for k in own if k not in copied]
    if missing:
        raise ValueError(f"the student state lacks {len(missing)} encoder tensors (first: {missing[0]}); is it a "
                         "depth-4 U-Net?")
    return copied
