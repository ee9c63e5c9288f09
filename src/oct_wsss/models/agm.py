"""AGM classifier (anomaly-guided WSSS, paper Sec. 3.2; METHODS.md section 1): ResNet branch on concat(x, x_hat),
ASAM branch on the anomaly map, element-wise product, global max pooling, MLP head (multi-label logits).

Ablation rows of the paper's Table 4 are configurations: BASE = ``use_adr=False, use_asam=False, pooling="gap"``;
+ADR = ``use_adr=True``; +ASAM = ``use_asam=True``; GMP = ``pooling="gmp"`` (the default, full AGM).

``backbone="unet"`` (issue 19, item 2b) replaces the ResNet with the student U-Net's encoder (depth 4, stride 16,
16 x width channels), so :func:`load_unet_encoder` can start it from the phantom student, the domain-matched
stand-in for the paper's ImageNet weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from .asam import ENCODERS, PAD_MODES, Asam
from .config import strict_from_dict
from .student import copy_encoder, double_conv

BACKBONES: dict[str, tuple[Callable[..., tvm.ResNet], int]] = {
    "resnet18": (tvm.resnet18, 512),
    "resnet34": (tvm.resnet34, 512),
    "resnet50": (tvm.resnet50, 2048),
}
UNET = "unet"  # the student U-Net's depth-4 encoder: feature channels 16 x width at stride 16
POOLINGS: tuple[str, ...] = ("gmp", "gap")


@dataclass
class AgmConfig:
    """Architecture hyper-parameters of :class:`AgmNet`; JSON-safe through ``to_dict``/``from_dict``."""

    n_classes: int = 2
    backbone: str = "resnet50"
    use_adr: bool = True  # backbone input concat(x, x_hat) (6 channels) instead of x alone
    use_asam: bool = True  # ASAM branch on the anomaly map, fused by element-wise product
    pooling: str = "gmp"
    encoder: str = "light"  # ASAM encoder: "light" (cheap) or "unet" (the reference's, ~4x a ResNet-50 in FLOPs)
    encoder_width: int = 16  # first-stage width of the light encoder
    window: int = 7
    heads: int = 4
    pad_mode: str = "mask"
    background_logit: bool = False  # extra output 0 for an always-present background class (reference code)
    dropout: float = 0.5
    image_channels: int = 3
    output_stride: int = 32  # 16: layer4 keeps layer3's resolution (dilated for ResNet-50), finer CAMs
    width: int = 64  # channels of the input conv and layer1 (torchvision: 64); smaller for small bundled models

    def __post_init__(self) -> None:
        """Validate choices early, with the allowed values in the message."""
        checks = {"backbone": (*BACKBONES, UNET), "pooling": POOLINGS, "encoder": ENCODERS, "pad_mode": PAD_MODES}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"AgmConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_classes < 1:
            raise ValueError(f"AgmConfig.n_classes must be >= 1, got {self.n_classes}")
        if self.output_stride not in (16, 32):
            raise ValueError(f"AgmConfig.output_stride must be 16 or 32, got {self.output_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AgmConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.width < 4:
            raise ValueError(f"AgmConfig.width must be >= 4, got {self.width}")
        if self.backbone == UNET and self.output_stride != 16:
            raise ValueError("AgmConfig: the 'unet' backbone (a depth-4 U-Net encoder) has output_stride 16")

    @property
    def feature_channels(self) -> int:
        """Channels of the backbone's last stage (and of the ASAM output)."""
        if self.backbone == UNET:
            return 16 * self.width
        return BACKBONES[self.backbone][1] * self.width // 64

    @property
    def n_outputs(self) -> int:
        """Logits per image: the lesion classes, plus one if the background logit is on."""
        return self.n_classes + int(self.background_logit)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgmConfig:
        """Inverse of ``to_dict``; unknown keys are an error, missing keys take defaults."""
        return strict_from_dict(cls, data, "AgmConfig")


def _backbone(config: AgmConfig) -> nn.Sequential:
    """Torchvision ResNet (random init) without avgpool/fc, or the U-Net encoder; its input takes x and x_hat with
    ADR, else x alone."""
    if config.backbone == UNET:
        return _unet_encoder(config)
    build = BACKBONES[config.backbone][0]
    if config.width != 64:
        net = _narrow(build(weights=None), config)
    elif config.output_stride == 32:
        net = build(weights=None)
    elif config.backbone == "resnet50":
        net = build(weights=None, replace_stride_with_dilation=[False, False, True])
    else:  # BasicBlock has no dilation: drop layer4's stride (its receptive field grows less, which is fine here)
        net = build(weights=None)
        net.layer4[0].conv1.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
    in_ch = config.image_channels * (2 if config.use_adr else 1)
    conv1 = nn.Conv2d(in_ch, config.width, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    names = ("bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict([("conv1", conv1), *((n, getattr(net, n)) for n in names)]))


def _unet_encoder(config: AgmConfig) -> nn.Sequential:
    """The student U-Net's encoder: a double conv at full resolution, then four max-pool + double conv stages."""
    w, in_ch = config.width, config.image_channels * (2 if config.use_adr else 1)
    stages = [("stem", double_conv(in_ch, w))]
    for i in (1, 2, 3, 4):
        stages.append((f"down{i}", nn.Sequential(nn.MaxPool2d(2), double_conv(w * 2 ** (i - 1), w * 2**i))))
    return nn.Sequential(OrderedDict(stages))


def load_unet_encoder(net: AgmNet, student_state: dict[str, torch.Tensor]) -> int:
    """Copy a student U-Net's encoder (``net.down.i`` of a StudentNet state dict) into a ``unet`` AgmNet's backbone.
    The student's input channels go to x; the x_hat channels of the first conv (ADR) start at zero, so the network
    starts as the student saw and learns what x_hat adds. Returns the number of tensors copied."""
    if net.config.backbone != UNET:
        raise ValueError(f"only a 'unet' AGM backbone takes a student's encoder, not {net.config.backbone!r}")

    def fit(name: str, value: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        if name == "stem.0.weight" and value.shape[1] < own.shape[1]:  # x only: x_hat's channels start at 0
            return torch.cat([value, value.new_zeros(value.shape[0], own.shape[1] - value.shape[1], *value.shape[2:])],
                             1)
        return value

    copied = copy_encoder(student_state, net.backbone.state_dict(),
                          lambda i, rest: [f"stem.{rest}" if i == 0 else f"down{i}.1.{rest}"], "AGM backbone", fit)
    net.backbone.load_state_dict(copied)
    return len(copied)


def _narrow(net: tvm.ResNet, config: AgmConfig) -> tvm.ResNet:
    """The ResNet with bn1 and the four stages rebuilt at widths w, 2w, 4w, 8w (torchvision's ``_make_layer``)."""
    block = type(net.layer1[0])
    net.inplanes, net.dilation = config.width, 1
    net.bn1 = nn.BatchNorm2d(config.width)
    dilate = config.output_stride == 16 and config.backbone == "resnet50"
    for i, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
        stride = 1 if i == 0 or (i == 3 and config.output_stride == 16 and not dilate) else 2
        layer = net._make_layer(block, config.width * 2**i, len(getattr(net, name)), stride=stride,
                                dilate=i == 3 and dilate)
        setattr(net, name, layer)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def _head(channels: int, n_outputs: int, dropout: float) -> nn.Sequential:
    """MLP C -> C/2 -> C/4 -> K (2048 -> 1024 -> 512 -> K for ResNet-50, as in the paper)."""
    h1, h2 = channels // 2, channels // 4
    return nn.Sequential(
        nn.Linear(channels, h1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(h1, h2),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(h2, n_outputs),
    )


class AgmNet(nn.Module):
    """AGM multi-label classifier; ``forward(x, x_hat, anomaly) -> logits (B, n_outputs)``."""

    def __init__(self, config: AgmConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _backbone(config)
        self.asam = (
            Asam(
                config.feature_channels,
                encoder=config.encoder,  # type: ignore[arg-type]
                heads=config.heads,
                window=config.window,
                encoder_width=config.encoder_width,
                pad_mode=config.pad_mode,  # type: ignore[arg-type]
                in_channels=config.image_channels,
                n_down=5 if config.output_stride == 32 else 4,
            )
            if config.use_asam
            else None
        )
        self.head = _head(config.feature_channels, config.n_outputs, config.dropout)

    def features(
        self, x: torch.Tensor, x_hat: torch.Tensor | None = None, anomaly: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fused feature map (B, C, H/32, W/32) before pooling."""
        if self.config.use_adr:
            if x_hat is None:
                raise ValueError("this AGM config uses x_hat (use_adr=True) but none was given")
            x = torch.cat([x, x_hat], dim=1)
        feats = self.backbone(x)
        if self.asam is not None:
            if anomaly is None:
                raise ValueError("this AGM config has an ASAM branch (use_asam=True) but no anomaly map was given")
            feats = feats * self.asam(anomaly)
        return feats

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor | None = None, anomaly: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x, x_hat, anomaly: (B, 3, H, W) in [0, 1] -> logits (B, n_outputs); background first if configured."""
        feats = self.features(x, x_hat, anomaly)
        pooled = feats.amax(dim=(2, 3)) if self.config.pooling == "gmp" else feats.mean(dim=(2, 3))
        return self.head(pooled)

    def cam_layers(self) -> dict[str, nn.Module]:
        """GradCAM targets: last layer4 bottleneck; ASAM output (attention) and ASAM encoder output if present."""
        last = self.backbone[-1] if self.config.backbone == UNET else self.backbone.layer4[-1]
        layers: dict[str, nn.Module] = {"backbone": last}
        if self.asam is not None:
            layers["asam"] = self.asam.attention
            layers["asam_encoder"] = self.asam.encoder
        return layers


def _minmax(t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max scale each sample (over all non-batch dims) to [0, 1]; constant samples become 0."""
    flat = t.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (t.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (t.dim() - 1)))
    return (t - lo) / (hi - lo).clamp_min(eps)


def anomaly_input(x: torch.Tensor, x_hat: torch.Tensor, retina_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ASAM input |minmax(x) - minmax(x_hat)| x mask, min-max per sample; mask (B, H, W) or (B, 1|C, H, W)."""
    diff = (_minmax(x) - _minmax(x_hat)).abs()
    if retina_mask is not None:
        mask = retina_mask.to(diff.dtype)
        diff = diff * (mask.unsqueeze(1) if mask.dim() == 3 else mask)
    return _minmax(diff)
