"""CCT and attention-MIL HRF classifiers: native-size forward/backward, label types, configs."""

from __future__ import annotations

import pytest
import torch

from oct_wsss.models import hrf_labels
from oct_wsss.models.cct import Cct, CctConfig
from oct_wsss.models.mil import MilConfig, MilNet, extract_patches, patch_origins


def _small_cct(**kw) -> Cct:
    return Cct(CctConfig.variant("cct_2", dim=32, heads=2, conv_channels=8, **kw))


def test_cct_forward_backward_at_496x1024() -> None:
    torch.manual_seed(0)
    net = _small_cct()
    x = torch.randn(2, 1, 496, 1024, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert CctConfig().grid(496, 1024) == (31, 64)  # default cct_7 tokenizer: stride 16, 1,984 tokens


def test_cct_other_sizes_interpolate_positions() -> None:
    net = _small_cct(input_size=[64, 128]).eval()
    assert net.position.grid == (4, 8)
    assert net(torch.randn(1, 1, 100, 60)).shape == (1, 1)
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(1, 3, 64, 64))


def test_mil_forward_backward_at_496x1024() -> None:
    torch.manual_seed(0)
    net = MilNet(MilConfig(width=8, features=32, attention=16))
    x = torch.randn(2, 1, 496, 1024)
    x[:, :, 150:330] += 2.0  # a bright band the Otsu placement must find
    x.requires_grad_(True)
    out = net(x)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert x.grad[:, :, 150:330].abs().sum() > 0
    assert net.pool.last_weights.shape == (2, 16 * 3)
    assert torch.allclose(net.pool.last_weights.sum(1), torch.ones(2))


def test_mil_patches_sit_on_the_retina_and_copy_pixels() -> None:
    x = torch.zeros(1, 1, 496, 300)
    x[:, :, 300:360] = 1.0
    origins = patch_origins(x, 64, 3)
    assert origins.shape == (1, 5 * 3, 2)  # 4 columns of 64 px plus a flush-right one
    centres = origins[0, :, 0] + 32
    assert centres.min() >= 330 - 96 and centres.max() <= 330 + 96
    assert int(origins[0, :, 1].max()) == 300 - 64
    y = torch.arange(496 * 300.0).reshape(1, 1, 496, 300)
    p = extract_patches(y, origins, 64)
    y0, x0 = (int(v) for v in origins[0, 4])
    assert torch.equal(p[0, 4, 0], y[0, 0, y0:y0 + 64, x0:x0 + 64])
    with pytest.raises(ValueError, match="at least"):
        patch_origins(torch.zeros(1, 1, 100, 300), 64, 3)


@pytest.mark.parametrize("label_type", hrf_labels.LABEL_TYPES)
def test_label_types_heads_losses_presence(label_type: str) -> None:
    torch.manual_seed(0)
    net = _small_cct(label_type=label_type, input_size=[64, 128])
    out = net(torch.randn(4, 1, 64, 128))
    assert out.shape == (4, hrf_labels.n_outputs(label_type))
    counts = torch.tensor([0, 1, 3, 12])
    loss = hrf_labels.loss(out, counts, label_type)
    loss.backward()
    assert torch.isfinite(loss)
    p = hrf_labels.presence(out, label_type)
    assert p.shape == (4,) and bool(((p >= 0) & (p <= 1)).all())
    assert hrf_labels.explained_logit(out, label_type).sum() == 4


def test_targets_follow_the_paper() -> None:
    counts = torch.tensor([0, 1, 2, 15])
    assert hrf_labels.targets(counts, "binary").tolist() == [0, 1, 1, 1]
    assert hrf_labels.targets(counts, "three_class").tolist() == [0, 1, 2, 2]
    assert hrf_labels.targets(counts, "count").tolist() == [0, 1, 2, 10]


def test_configs_round_trip_and_refuse_typos() -> None:
    c = CctConfig.variant("cct_4", label_type="count")
    assert CctConfig.from_dict(c.to_dict()) == c and c.layers == 4 and c.dim == 128
    m = MilConfig(encoder="alexnet")
    assert MilConfig.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError, match="unknown"):
        CctConfig.from_dict({"layrs": 3})
    with pytest.raises(ValueError, match="label type"):
        MilConfig(label_type="multi")
    with pytest.raises(ValueError, match="variant"):
        CctConfig.variant("cct_99")
    assert MilNet(MilConfig(encoder="alexnet"))(torch.randn(1, 1, 192, 128)).shape == (1, 1)
