"""DFP networks (deep feature propagation, paper Sec. 2.1-2.2; METHODS.md §2): prediction module and encoder.

Prediction module [F]: the ResNet input conv and stages 1-3 with no max-pool after the input conv (stride 8,
1024 channels on ResNet-50), global max pooling per channel f_c = max F_c, r = sigmoid(Σ_c f_c), saliency
M = Σ_c F_c. Feature-propagation encoder [F]: a full ResNet sharing the input conv, trained on the same labels;
its five stages (input conv, layer1..layer4) give the reference maps R_1..R_5.

Reconstructed details [I]: stage outputs end in a ReLU, so Σ_c f_c >= 0 and sigmoid(Σ_c f_c) could never say
"normal", and at initialisation Σ_c f_c is in the thousands (saturated sigmoid). The logit is therefore a
monotone affine map of the same sum, a·norm(Σ_c f_c) + b: ``norm`` standardises the sum over the batch (a
BatchNorm1d without affine, running statistics at inference), a = exp(log_scale) > 0 and b are the only two
parameters. Monotone, so larger channel maxima still mean "abnormal" and M = Σ_c F_c keeps its meaning (a first
try with Σ_c f_c / C + b never left "all abnormal" in 12 epochs; docs/results.md). The multi-class variant
replaces the sum by GMP → Linear, and its saliency per class is the CAM Σ_c w_kc F_c. The encoder keeps no
max-pool either by default (``encoder_maxpool=False``), so R_4 lies on M's stride-8 grid and S_4 = M meets its
first reference at its own scale; ``True`` gives the torchvision layout.

``backbone="unet"`` (issue 19, item 2b) swaps the ResNet for the student U-Net's encoder (depth 4): the shared input
block is its first double conv, the prediction module its next three down blocks (stride 8, 8 x width channels) and
the encoder its four down blocks, so R_1..R_5 lie at strides 1, 2, 4, 8, 16; :func:`load_unet_encoder` copies a
trained student's encoder into both (the phantom student as a domain-matched stand-in for ImageNet weights).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision import models as tvm

from .config import strict_from_dict
from .student import copy_encoder, double_conv

#: backbone -> (torchvision block type, blocks per stage)
BACKBONES: dict[str, tuple[type[tvm.resnet.BasicBlock | tvm.resnet.Bottleneck], list[int]]] = {
    "resnet18": (tvm.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tvm.resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tvm.resnet.Bottleneck, [3, 4, 6, 3]),
}
#: the student U-Net's encoder (depth 4): not a ResNet, so not in BACKBONES
UNET = "unet"


@dataclass
class DfpConfig:
    """Architecture of :class:`DfpNet`; JSON-safe through ``to_dict``/``from_dict``."""

    backbone: str = "resnet50"
    n_classes: int = 1  # 1: binary normal/abnormal with the paper's parameter-free head; >1: GMP → Linear
    image_channels: int = 1
    encoder_maxpool: bool = False
    width: int = 64  # channels of the input conv and of layer1's blocks (torchvision: 64); smaller for CPU runs

    def __post_init__(self) -> None:
        """Validate choices early, with the allowed values in the message."""
        if self.backbone not in (*BACKBONES, UNET):
            raise ValueError(f"DfpConfig.backbone must be one of {(*BACKBONES, UNET)}, got {self.backbone!r}")
        if self.n_classes < 1:
            raise ValueError(f"DfpConfig.n_classes must be >= 1, got {self.n_classes}")
        if self.image_channels < 1:
            raise ValueError(f"DfpConfig.image_channels must be >= 1, got {self.image_channels}")
        if self.width < 4:
            raise ValueError(f"DfpConfig.width must be >= 4, got {self.width}")

    def stage_channels(self, stage: int) -> int:
        """Output channels of layer ``stage`` (1..4): width x 2^(stage-1) x the block's expansion (U-Net: width x
        2^stage)."""
        if self.backbone == UNET:
            return self.width * 2**stage
        return self.width * 2 ** (stage - 1) * BACKBONES[self.backbone][0].expansion

    @property
    def feature_channels(self) -> int:
        """Channels C of the prediction module's feature map F (layer3; 1024 for ResNet-50 at width 64)."""
        return self.stage_channels(3)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DfpConfig:
        """Inverse of ``to_dict``; unknown keys are an error, missing keys take defaults."""
        return strict_from_dict(cls, data, "DfpConfig")


class DfpOutput(NamedTuple):
    """One forward pass: logits (B, K) of both classifiers, F (B, C, H/8, W/8), the five encoder stage outputs."""

    logits: torch.Tensor
    encoder_logits: torch.Tensor
    features: torch.Tensor
    stages: list[torch.Tensor]


class GmpHead(nn.Module):
    """Global max pooling per channel, then exp(a)·norm(Σ_c f_c) + b (binary, the paper's sum) or a Linear layer."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.channels = channels
        binary = n_classes == 1
        self.linear = None if binary else nn.Linear(channels, n_classes)
        self.norm = nn.BatchNorm1d(1, affine=False) if binary else None
        self.log_scale = nn.Parameter(torch.zeros(1)) if binary else None
        self.offset = nn.Parameter(torch.zeros(1)) if binary else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> logits (B, K)."""
        pooled = feats.amax(dim=(2, 3))
        if self.linear is not None:
            return self.linear(pooled)
        assert self.norm is not None and self.log_scale is not None and self.offset is not None
        return self.norm(pooled.sum(dim=1, keepdim=True).float()) * self.log_scale.exp() + self.offset

    def saliency(self, feats: torch.Tensor) -> torch.Tensor:
        """Saliency (B, K, h, w): M = Σ_c F_c (binary) or the CAM Σ_c w_kc F_c (multi-class)."""
        if self.linear is None:
            return feats.sum(dim=1, keepdim=True)
        return torch.einsum("kc,bchw->bkhw", self.linear.weight, feats)


def _resnet(config: DfpConfig) -> tuple[tvm.ResNet, list[nn.Sequential]]:
    """A torchvision ResNet (random weights, nothing downloaded) and its four stages at ``config.width``.

    At width 64 the stages are torchvision's own; otherwise they are rebuilt with torchvision's ``_make_layer``
    at widths w, 2w, 4w, 8w, which is how ResNet.__init__ builds them (with torchvision's initialisation rules).
    """
    block, layers = BACKBONES[config.backbone]
    net = tvm.ResNet(block, layers)
    if config.width == 64:
        return net, [net.layer1, net.layer2, net.layer3, net.layer4]
    net.inplanes = config.width
    stages = [net._make_layer(block, config.width * 2**i, n, stride=1 if i == 0 else 2) for i, n in enumerate(layers)]
    for m in nn.ModuleList(stages).modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net, stages


def _unet_parts(config: DfpConfig) -> tuple[nn.Sequential, list[nn.Sequential], list[nn.Sequential]]:
    """The U-Net encoder's first double conv (shared stem), three down blocks (predictor) and four (encoder)."""
    w = config.width

    def down(i: int) -> nn.Sequential:
        return nn.Sequential(nn.MaxPool2d(2), double_conv(w * 2 ** (i - 1), w * 2**i))

    return (double_conv(config.image_channels, w), [down(i) for i in (1, 2, 3)], [down(i) for i in (1, 2, 3, 4)])


def load_unet_encoder(net: DfpNet, student_state: dict[str, torch.Tensor]) -> int:
    """Copy a student U-Net's encoder (``net.down.i`` weights of a StudentNet state dict) into a ``unet`` DfpNet's
    stem, predictor and encoder; the heads keep their initialisation. Returns the number of tensors copied."""
    if net.config.backbone != UNET:
        raise ValueError(f"only a 'unet' DFP backbone takes a student's encoder, not {net.config.backbone!r}")

    def places(i: int, rest: str) -> list[str]:
        return ([f"stem.{rest}"] if i == 0 else [f"encoder.{i - 1}.1.{rest}"]) + (
            [f"predictor.layer{i}.1.{rest}"] if 1 <= i <= 3 else [])

    own = {k: v for k, v in net.state_dict().items() if k.startswith(("stem.", "predictor.", "encoder."))}
    copied = copy_encoder(student_state, own, places, "DFP network")
    net.load_state_dict(copied, strict=False)
    return len(copied)


class DfpNet(nn.Module):
    """Prediction module + feature-propagation encoder sharing the input conv; ``forward(x) -> DfpOutput``."""

    def __init__(self, config: DfpConfig) -> None:
        super().__init__()
        self.config = config
        if config.backbone == UNET:
            self.stem, pred, enc = _unet_parts(config)
        else:
            _, pred = _resnet(config)
            _, enc = _resnet(config)
            conv1 = nn.Conv2d(config.image_channels, config.width, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            stem = [("conv1", conv1), ("bn1", nn.BatchNorm2d(config.width)), ("relu", nn.ReLU(inplace=True))]
            self.stem = nn.Sequential(OrderedDict(stem))
        self.predictor = nn.Sequential(OrderedDict([("layer1", pred[0]), ("layer2", pred[1]), ("layer3", pred[2])]))
        self.pool = nn.MaxPool2d(3, 2, 1) if config.encoder_maxpool else nn.Identity()
        self.encoder = nn.ModuleList(enc)
        self.head = GmpHead(config.feature_channels, config.n_classes)
        self.encoder_head = GmpHead(config.stage_channels(4), config.n_classes)

    def forward(self, x: torch.Tensor) -> DfpOutput:
        """x (B, image_channels, H, W) in [0, 1] -> both classifiers' logits, F and the encoder stages R_1..R_5."""
        stem = self.stem(x)
        feats = self.predictor(stem)
        stages, h = [stem], self.pool(stem)
        for layer in self.encoder:
            h = layer(h)
            stages.append(h)
        return DfpOutput(self.head(feats), self.encoder_head(stages[-1]), feats, stages)

    def saliency(self, out: DfpOutput) -> torch.Tensor:
        """The prediction module's saliency maps (B, K, H/8, W/8) of one forward pass."""
        return self.head.saliency(out.features)


def reference_maps(stages: list[torch.Tensor]) -> list[torch.Tensor]:
    """R_i (B, h_i, w_i) for each stage output: channel sum, min-max normalised per image to [0, 1]."""
    maps = []
    for stage in stages:
        s = stage.float().sum(dim=1)
        lo = s.amin(dim=(1, 2), keepdim=True)
        hi = s.amax(dim=(1, 2), keepdim=True)
        maps.append((s - lo) / (hi - lo).clamp_min(1e-8))
    return maps
