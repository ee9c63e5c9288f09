"""LRP with zennit on the HRF classifiers: conservation with the AH/LN rules, and what breaks without them."""

from __future__ import annotations

import pytest
import torch

from oct_wsss.explain.lrp import relevance
from oct_wsss.models.cct import Cct, CctConfig
from oct_wsss.models.mil import MilConfig, MilNet


def _no_bias(net: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return net.eval()


def _cct(label_type: str = "binary") -> Cct:
    torch.manual_seed(0)
    net = Cct(CctConfig.variant("cct_2", dim=32, heads=2, conv_channels=8, input_size=[64, 128],
                                label_type=label_type))
    with torch.no_grad():  # make the attention and LayerNorm non-trivial, so the rules matter
        for name, p in net.named_parameters():
            if name.endswith(("q.weight", "k.weight")):
                p.mul_(40)
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.5)
    return _no_bias(net)


@pytest.mark.parametrize("label_type", ["binary", "three_class", "count"])
def test_cct_relevance_is_conservative(label_type: str) -> None:
    net = _cct(label_type)
    x = torch.randn(3, 1, 64, 128)
    r = relevance(net, x)
    total = r.pixels.sum((1, 2)) + r.positions
    assert torch.allclose(total, r.logits, rtol=1e-3, atol=1e-5), (total, r.logits)
    assert r.pixels.shape == (3, 64, 128)
    assert r.positions.abs().sum() > 0
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # zennit hooks removed


def test_cct_relevance_at_another_size_still_conserves() -> None:
    net = _cct()
    r = relevance(net, torch.randn(1, 1, 80, 96))  # positions interpolated from the 4 x 8 grid
    assert torch.allclose(r.pixels.sum() + r.positions.sum(), r.logits.sum(), rtol=1e-3, atol=1e-5)


def test_plain_gradient_times_input_is_not_conservative() -> None:
    net = _cct()
    x = torch.randn(3, 1, 64, 128, requires_grad=True)
    captured = {}
    handle = net.position.register_forward_hook(lambda m, i, o: captured.update(pos=o))
    out = net(x)
    handle.remove()
    gx, gp = torch.autograd.grad(out.sum(), (x, captured["pos"]))
    naive = (x * gx).sum((1, 2, 3)) + (captured["pos"] * gp).sum((1, 2))
    assert not torch.allclose(naive, out[:, 0], rtol=0.05)
    assert (naive - out[:, 0]).abs().max() > 10 * relevance(net, x).logits.abs().max() * 1e-3


def test_mil_relevance_is_conservative_and_stays_on_patches() -> None:
    torch.manual_seed(0)
    net = _no_bias(MilNet(MilConfig(width=8, features=32, attention=16)))
    x = torch.randn(2, 1, 256, 200)
    x[:, :, 100:160] += 2.0
    r = relevance(net, x)
    assert torch.allclose(r.pixels.sum((1, 2)), r.logits, rtol=1e-3, atol=1e-6)
    covered = torch.zeros(256, 200, dtype=torch.bool)
    from oct_wsss.models.mil import patch_origins
    for y0, x0 in patch_origins(x[:1], 64, 3)[0].tolist():
        covered[y0:y0 + 64, x0:x0 + 64] = True
    assert r.pixels[0][~covered].abs().max() == 0


def test_relevance_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        relevance(Cct(CctConfig.variant("cct_2", dim=32, heads=2, input_size=[64, 64])).train(),
                  torch.randn(1, 1, 64, 64))
