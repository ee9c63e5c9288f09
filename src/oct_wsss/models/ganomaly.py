"""GANomaly (DCGAN encoder-decoder-encoder) that turns any B-scan into its "healthy counterpart" x̂ for AGM.

Architecture, initialisation and losses follow METHODS.md §1: a generator trained on healthy B-scans
only reconstructs x̂ = G(x); the latent gap (z − ẑ)² is the anomaly score. Modules and loss math only;
the training loop lives in ``oct_wsss.training``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GanomalyConfig:
    """Hyper-parameters that rebuild the networks; defaults are the paper's (512 px, 3 channels, nz 120, 32 wide)."""

    image_size: int = 512
    nc: int = 3
    nz: int = 120
    ngf: int = 32
    ndf: int = 32
    extra_layers: int = 0

    def __post_init__(self) -> None:
        s = self.image_size
        if not (isinstance(s, int) and s >= 16 and s & (s - 1) == 0):
            raise ValueError(f"image_size must be a power of 2 and at least 16, got {s!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if f.name == "extra_layers" else 1):
                raise ValueError(
                    f"{f.name} must be a {'non-negative' if f.name == 'extra_layers' else 'positive'} "
                    f"integer, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for a checkpoint's ``architecture``."""
        return {"name": "ganomaly", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GanomalyConfig:
        """Rebuild from ``to_dict`` output; unknown keys are an error (they would be silently ignored otherwise)."""
        d = dict(d)
        if d.pop("name", "ganomaly") != "ganomaly":
            raise ValueError(f"not a GANomaly architecture: {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GANomaly architecture keys: {sorted(unknown)}")
        return cls(**d)


class Encoder(nn.Module):
    """DCGAN encoder: image (nc, S, S) → (n_out, 1, 1), halving the map and doubling channels down to 4×4."""

    def __init__(self, image_size: int, nc: int, width: int, n_out: int, extra_layers: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(nc, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(extra_layers):
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, True)]
        size, c = image_size // 2, width
        while size > 4:
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, True)]
            size, c = size // 2, 2 * c
        layers.append(nn.Conv2d(c, n_out, 4, 1, 0, bias=False))
        self.layers = nn.Sequential(*layers)
        self.out_channels = c  # channels of the last 4×4 feature map (before the final conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: (nz, 1, 1) → image (nc, S, S) in [-1, 1] through ConvTranspose+BN+ReLU and Tanh."""

    def __init__(self, image_size: int, nc: int, width: int, nz: int, extra_layers: int = 0) -> None:
        super().__init__()
        c = width * image_size // 8  # channels at 4×4, equal to the encoder's deepest width
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        size = 4
        while size < image_size // 2:
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            size, c = size * 2, c // 2
        for _ in range(extra_layers):
            layers += [nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class Generator(nn.Module):
    """Encoder → decoder → encoder; ``forward(x)`` returns (x̂, z, ẑ) with z, ẑ of shape (B, nz, 1, 1)."""

    def __init__(self, config: GanomalyConfig) -> None:
        super().__init__()
        cfg = self.config = config
        self.encoder1 = Encoder(cfg.image_size, cfg.nc, cfg.ngf, cfg.nz, cfg.extra_layers)
        self.decoder = Decoder(cfg.image_size, cfg.nc, cfg.ngf, cfg.nz, cfg.extra_layers)
        self.encoder2 = Encoder(cfg.image_size, cfg.nc, cfg.ngf, cfg.nz, cfg.extra_layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


class Reconstructor(nn.Module):
    """The generator's encoder 1 and decoder alone (same state-dict keys): all a proposal needs for x̂."""

    def __init__(self, config: GanomalyConfig) -> None:
        super().__init__()
        cfg = self.config = config
        self.encoder1 = Encoder(cfg.image_size, cfg.nc, cfg.ngf, cfg.nz, cfg.extra_layers)
        self.decoder = Decoder(cfg.image_size, cfg.nc, cfg.ngf, cfg.nz, cfg.extra_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder1(x))


class Discriminator(nn.Module):
    """Encoder whose last conv is a real/fake classifier; ``forward(x)`` returns (P(real) of shape (B,), features)."""

    def __init__(self, config: GanomalyConfig) -> None:
        super().__init__()
        self.config = config
        encoder = Encoder(config.image_size, config.nc, config.ndf, 1, config.extra_layers)
        self.features = nn.Sequential(*list(encoder.layers)[:-1])
        self.classifier = encoder.layers[-1]
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return torch.sigmoid(self.classifier(features)).flatten(), features


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), BN weights N(1, 0.02) and biases 0 (also used to re-initialise D)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class GeneratorLosses(NamedTuple):
    """Weighted total and the three unweighted terms (for logging)."""

    total: torch.Tensor
    adversarial: torch.Tensor
    reconstruction: torch.Tensor
    latent: torch.Tensor


def generator_losses(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    z_hat: torch.Tensor,
    features_real: torch.Tensor,
    features_fake: torch.Tensor,
    w_adv: float = 1.0,
    w_rec: float = 50.0,
    w_lat: float = 0.1,
) -> GeneratorLosses:
    """Adversarial MSE(D-features of x, of x̂) + reconstruction L1(x̂, x) + latent MSE(ẑ, z), paper weights 1/50/0.1."""
    adversarial = F.mse_loss(features_fake, features_real)
    reconstruction = F.l1_loss(x_hat, x)
    latent = F.mse_loss(z_hat, z)
    return GeneratorLosses(
        w_adv * adversarial + w_rec * reconstruction + w_lat * latent, adversarial, reconstruction, latent
    )


def discriminator_loss(p_real: torch.Tensor, p_fake: torch.Tensor) -> torch.Tensor:
    """0.5·(BCE(D(x), 1) + BCE(D(x̂), 0)), in float32 outside autocast (BCE on probabilities is unsafe there)."""
    with torch.autocast(p_real.device.type, enabled=False):
        p_real, p_fake = p_real.float(), p_fake.float()
        return 0.5 * (
            F.binary_cross_entropy(p_real, torch.ones_like(p_real))
            + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
        )


def anomaly_score(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample mean (z − ẑ)², shape (B,); larger means less like the healthy training data (min–max scale later)."""
    return (z - z_hat).pow(2).flatten(1).mean(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


HealthyModel = Generator | Reconstructor
"""What makes x̂: the full GANomaly generator, or the encoder-decoder half that a proposal needs."""


def healthy_counterpart(generator: HealthyModel, x: torch.Tensor) -> torch.Tensor:
    """x̂ in [0, 1] for images x (B, C, H, W) in [0, 1]: scaled to [-1, 1], resized to the generator's square size
    and back, grey replicated to its channels and averaged back (METHODS.md §1: x̂ rescaled to [0, 1] like x)."""
    cfg = generator.config
    size = tuple(x.shape[-2:])
    z = x * 2.0 - 1.0
    if size != (cfg.image_size, cfg.image_size):
        z = F.interpolate(z, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    if z.shape[1] != cfg.nc:
        if z.shape[1] != 1 and cfg.nc != 1:
            raise ValueError(f"generator takes {cfg.nc} channels, got {z.shape[1]}")
        z = z.expand(-1, cfg.nc, -1, -1) if z.shape[1] == 1 else z.mean(dim=1, keepdim=True)
    x_hat = generator.decoder(generator.encoder1(z))  # x̂ only: encoder2's ẑ is not needed here
    if x_hat.shape[1] != x.shape[1]:
        x_hat = x_hat.mean(dim=1, keepdim=True).expand(-1, x.shape[1], -1, -1)
    if size != tuple(x_hat.shape[-2:]):
        x_hat = F.interpolate(x_hat, size=size, mode="bilinear", align_corners=False)
    return (x_hat + 1.0) / 2.0
