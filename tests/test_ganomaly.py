"""GANomaly modules: shapes, output range, DCGAN init, parameter counts, losses, training signal, round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.models.ganomaly import (
    Discriminator,
    GanomalyConfig,
    Generator,
    anomaly_score,
    count_parameters,
    discriminator_loss,
    generator_losses,
)

TINY = GanomalyConfig(image_size=16, nc=1, nz=8, ngf=8, ndf=8)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is ~10x faster than two on a busy 2-core runner (no OpenMP spin contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        GanomalyConfig(image_size=32, nc=3, nz=16, ngf=4, ndf=6, extra_layers=1),
        GanomalyConfig(image_size=64, nc=1, nz=10, ngf=4, ndf=4, extra_layers=2),
    ],
)
def test_shapes_and_range(cfg: GanomalyConfig) -> None:
    torch.manual_seed(0)
    x = 5 * torch.randn(2, cfg.nc, cfg.image_size, cfg.image_size)
    x_hat, z, z_hat = Generator(cfg)(x)
    assert x_hat.shape == x.shape
    assert z.shape == z_hat.shape == (2, cfg.nz, 1, 1)
    assert x_hat.min() >= -1 and x_hat.max() <= 1
    p, features = Discriminator(cfg)(x)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    assert features.shape == (2, cfg.ndf * cfg.image_size // 8, 4, 4)
    assert anomaly_score(z, z_hat).shape == (2,)


def test_dcgan_init_statistics() -> None:
    torch.manual_seed(0)
    g = Generator(GanomalyConfig(image_size=64, nc=3, nz=32, ngf=16, ndf=16))
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.bias is None for m in convs)
    w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(w.mean()) < 1e-3 and w.std() == pytest.approx(0.02, rel=0.02)
    bw = torch.cat([m.weight.detach() for m in bns])
    assert bw.mean() == pytest.approx(1.0, abs=5e-3) and bw.std() == pytest.approx(0.02, rel=0.2)
    assert all((m.bias == 0).all() for m in bns)


def test_parameter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nn.init, "normal_", lambda t, *args: t)  # init is irrelevant to counting; meta normal_ is slow
    with torch.device("meta"):  # no memory for 146 M parameters
        paper = Generator(GanomalyConfig())
        paper_d = Discriminator(GanomalyConfig())
    assert count_parameters(paper) == 146_010_304  # METHODS.md: "~146 M" at 512 px, nz 120, ngf 32
    assert count_parameters(paper_d) == 44_770_688
    assert count_parameters(Generator(GanomalyConfig(image_size=128, ngf=16, ndf=16))) == 3_568_736


def test_config_validation_and_dict_round_trip() -> None:
    cfg = GanomalyConfig(image_size=128, nc=1, nz=64, ngf=16, ndf=8, extra_layers=1)
    assert GanomalyConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"image_size": 24}, {"image_size": 8}, {"nz": 0}, {"extra_layers": -1}, {"ngf": 2.5}):
        with pytest.raises(ValueError):
            GanomalyConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        GanomalyConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="not a GANomaly"):
        GanomalyConfig.from_dict({**cfg.to_dict(), "name": "agm"})


def test_losses_match_their_definitions() -> None:
    torch.manual_seed(0)
    x, x_hat = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    z, z_hat = torch.randn(2, 3, 1, 1), torch.randn(2, 3, 1, 1)
    fr, ff = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    losses = generator_losses(x, x_hat, z, z_hat, fr, ff)
    assert losses.reconstruction == pytest.approx(float((x - x_hat).abs().mean()))
    assert losses.adversarial == pytest.approx(float(((fr - ff) ** 2).mean()))
    assert losses.latent == pytest.approx(float(((z - z_hat) ** 2).mean()))
    expected = losses.adversarial + 50 * losses.reconstruction + 0.1 * losses.latent
    assert losses.total == pytest.approx(float(expected))
    half = torch.full((3,), 0.5)
    assert discriminator_loss(half, half) == pytest.approx(math.log(2))
    assert discriminator_loss(torch.ones(3), torch.zeros(3)) == pytest.approx(0.0)
    assert torch.allclose(anomaly_score(z, z_hat), ((z - z_hat) ** 2).flatten(1).mean(1))
    assert (anomaly_score(z, z) == 0).all()


def test_a_few_steps_reduce_reconstruction_loss() -> None:
    torch.manual_seed(0)
    g, d = Generator(TINY), Discriminator(TINY)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.5, 0.999))
    history = []
    for _ in range(15):
        x_hat, z, z_hat = g(x)
        losses = generator_losses(x, x_hat, z, z_hat, d(x)[1], d(x_hat)[1])
        opt_g.zero_grad()
        losses.total.backward()
        opt_g.step()
        loss_d = discriminator_loss(d(x)[0], d(x_hat.detach())[0])
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        history.append(losses.reconstruction.item())
    assert history[-1] < 0.85 * history[0]


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    cfg = GanomalyConfig(image_size=32, nc=1, nz=12, ngf=4, ndf=4, extra_layers=1)
    torch.manual_seed(0)
    g = Generator(cfg)
    g.train()(torch.randn(4, 1, 32, 32))  # move BN running statistics away from their defaults
    g.eval()
    path = Checkpoint.new(
        g.state_dict(),
        method="ganomaly",
        architecture=cfg.to_dict(),
        classes=[],
        input_size=(32, 32),
        normalisation={"range": [-1, 1], "channels": 1},
    ).save(tmp_path / "ganomaly.safetensors")

    ckpt = Checkpoint.load(path, expect_method="ganomaly")
    rebuilt = ckpt.load_into(Generator(GanomalyConfig.from_dict(ckpt.meta["architecture"]))).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        for a, b in zip(g(x), rebuilt(x), strict=True):
            assert torch.equal(a, b)
