"""AGM network and ASAM: shapes, SASA against a naive loop reference, gradients, config round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from oct_wsss.models.agm import AgmConfig, AgmNet, anomaly_input
from oct_wsss.models.asam import Asam, LocalSelfAttention, light_encoder, unet_encoder


def _inputs(b: int = 2, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size, size, generator=g)
    x_hat = torch.rand(b, 3, size, size, generator=g)
    return x, x_hat, anomaly_input(x, x_hat)


def naive_sasa(attn: LocalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Explicit loops over batch, head, pixel and window offset (the paper's Eq. 3-5)."""
    b, c, h, w = x.shape
    nh, dh = attn.heads, attn.head_dim
    kh, kw = attn.window_size(h, w)
    q, k, v = attn.query(x), attn.key(x), attn.value(x)
    c0 = attn.window // 2
    out = torch.zeros_like(x)
    for n in range(b):
        for head in range(nh):
            ch = slice(head * dh, (head + 1) * dh)
            for y in range(h):
                for xx in range(w):
                    qv = q[n, ch, y, xx]
                    logits, values = [], []
                    for dy in range(-(kh // 2), kh // 2 + 1):
                        for dx in range(-(kw // 2), kw // 2 + 1):
                            yy, xc = y + dy, xx + dx
                            inside = 0 <= yy < h and 0 <= xc < w
                            if not inside and attn.pad_mode == "mask":
                                continue
                            kv = k[n, ch, yy, xc] if inside else torch.zeros(dh)
                            vv = v[n, ch, yy, xc] if inside else torch.zeros(dh)
                            r = torch.cat([attn.rel_row[head, :, c0 + dy], attn.rel_col[head, :, c0 + dx]])
                            logits.append((qv @ kv + qv @ r) / math.sqrt(dh))
                            values.append(vv)
                    weights = torch.softmax(torch.stack(logits), dim=0)
                    out[n, ch, y, xx] = (weights[:, None] * torch.stack(values)).sum(0)
    return torch.relu(out)


@pytest.mark.parametrize("pad_mode", ["mask", "zeros"])
@pytest.mark.parametrize("size", [(5, 5), (4, 6)])
def test_sasa_matches_naive_reference(pad_mode: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    attn = LocalSelfAttention(8, heads=2, window=3, pad_mode=pad_mode)  # type: ignore[arg-type]
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        fast, slow = attn(x), naive_sasa(attn, x)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert fast.abs().sum() > 0


def test_window_crops_on_small_maps() -> None:
    torch.manual_seed(1)
    attn = LocalSelfAttention(8, heads=2, window=7)
    assert attn.window_size(16, 16) == (7, 7)
    assert attn.window_size(2, 3) == (3, 5)
    x = torch.randn(1, 8, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_sasa(attn, x), atol=1e-5, rtol=1e-5)


def test_relative_embeddings_change_output() -> None:
    torch.manual_seed(2)
    attn = LocalSelfAttention(8, heads=2, window=3)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        before = attn(x)
        attn.rel_row[0, :, 0] += 3.0  # only the "one row up" offset of head 0
        after_row = attn(x)
        attn.rel_col[1, :, 2] += 3.0  # only the "one column right" offset of head 1
        after_col = attn(x)
    assert not torch.allclose(before[:, :4], after_row[:, :4])
    torch.testing.assert_close(before[:, 4:], after_row[:, 4:])  # head 1 untouched by head 0's embedding
    assert not torch.allclose(after_row[:, 4:], after_col[:, 4:])


@pytest.mark.parametrize("pad_mode", ["mask", "zeros"])
def test_sasa_translation_equivariant_away_from_borders(pad_mode: str) -> None:
    torch.manual_seed(3)
    attn = LocalSelfAttention(8, heads=2, window=5, pad_mode=pad_mode)  # type: ignore[arg-type]
    big = torch.randn(1, 8, 20, 20)
    sy, sx, p, n = 2, 3, 2, 16
    with torch.no_grad():
        a = attn(big[..., :n, :n])
        b = attn(big[..., sy : sy + n, sx : sx + n])
    # b[y, x] sees the same neighbourhood as a[y + sy, x + sx]; compare where both windows are inside.
    torch.testing.assert_close(b[..., p : n - p - sy, p : n - p - sx], a[..., p + sy : n - p, p + sx : n - p])


def test_sasa_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="heads"):
        LocalSelfAttention(10, heads=4)
    with pytest.raises(ValueError, match="odd"):
        LocalSelfAttention(8, heads=2, window=4)
    with pytest.raises(ValueError, match="pad_mode"):
        LocalSelfAttention(8, heads=2, pad_mode="reflect")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(backbone="resnet18", encoder="light", pooling="gmp"),
        dict(backbone="resnet18", encoder="unet", pooling="gap"),
        dict(backbone="resnet34", encoder="light", pooling="gmp", background_logit=True),
        dict(backbone="resnet50", encoder="light", pooling="gmp"),
        dict(backbone="resnet50", use_adr=False, use_asam=False, pooling="gap"),  # BASE ablation
    ],
)
def test_output_shapes(kwargs: dict) -> None:
    torch.manual_seed(0)
    cfg = AgmConfig(n_classes=4, **kwargs)
    model = AgmNet(cfg).eval()
    x, x_hat, anomaly = _inputs()
    with torch.no_grad():
        logits = model(x, x_hat, anomaly)
        feats = model.features(x, x_hat, anomaly)
    assert logits.shape == (2, cfg.n_outputs)
    assert feats.shape == (2, cfg.feature_channels, 2, 2)
    assert model.backbone.conv1.in_channels == (6 if cfg.use_adr else 3)
    assert torch.isfinite(logits).all()
    assert ("asam" in model.cam_layers()) == cfg.use_asam


def test_missing_inputs_are_errors() -> None:
    model = AgmNet(AgmConfig(backbone="resnet18"))
    x, x_hat, anomaly = _inputs(b=1)
    with pytest.raises(ValueError, match="x_hat"):
        model(x, None, anomaly)
    with pytest.raises(ValueError, match="anomaly"):
        model(x, x_hat, None)


@pytest.mark.parametrize("size", [(512, 512), (100, 76)])
def test_encoders_match_backbone_feature_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = AgmNet(AgmConfig(backbone="resnet18", n_classes=2)).eval()
    x, x_hat = torch.rand(1, 3, *size), torch.rand(1, 3, *size)
    with torch.no_grad():
        backbone = model.backbone(torch.cat([x, x_hat], 1))
        asam = model.asam(anomaly_input(x, x_hat))  # type: ignore[misc]
        wide = light_encoder(2048)(x)
    expected_hw = tuple(backbone.shape[2:])
    if size == (512, 512):
        assert backbone.shape == asam.shape == (1, 512, 16, 16)
        assert wide.shape == (1, 2048, 16, 16)
    else:
        assert asam.shape == backbone.shape
        with torch.no_grad():
            assert tuple(unet_encoder(64)(x).shape) == (1, 64, *expected_hw)


def test_gradients_reach_both_branches() -> None:
    torch.manual_seed(0)
    model = AgmNet(AgmConfig(backbone="resnet18", n_classes=3)).train()
    x, x_hat, anomaly = _inputs()
    model(x, x_hat, anomaly).sum().backward()
    asam = model.asam
    assert asam is not None
    for name, param in [
        ("backbone conv1", model.backbone.conv1.weight),
        ("asam encoder", asam.encoder[0].weight),
        ("asam query", asam.attention.query.weight),
        ("asam key", asam.attention.key.weight),
        ("asam value", asam.attention.value.weight),
        ("rel_row", asam.attention.rel_row),
        ("rel_col", asam.attention.rel_col),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_cam_layers_are_hookable_modules() -> None:
    torch.manual_seed(0)
    model = AgmNet(AgmConfig(backbone="resnet18", n_classes=2)).eval()
    seen: dict[str, tuple[int, ...]] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, tuple(out.shape)))
        for key, module in model.cam_layers().items()
    ]
    with torch.no_grad():
        model(*_inputs(b=1))
    for h in handles:
        h.remove()
    assert seen == {"backbone": (1, 512, 2, 2), "asam": (1, 512, 2, 2), "asam_encoder": (1, 512, 2, 2)}
    assert set(AgmNet(AgmConfig(backbone="resnet18", use_asam=False)).cam_layers()) == {"backbone"}


def test_config_round_trip_and_validation() -> None:
    cfg = AgmConfig(n_classes=5, backbone="resnet34", encoder="unet", heads=2, window=5, background_logit=True)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert AgmConfig.from_dict(data) == cfg
    assert AgmConfig.from_dict({}) == AgmConfig()
    with pytest.raises(ValueError, match="unknown"):
        AgmConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="backbone"):
        AgmConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="pooling"):
        AgmConfig(pooling="sum")


def test_anomaly_input() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.zeros(2, 3, 4, 4)
    x[:, :, 1, 1] = 1.0
    x[:, :, 2, 2] = 0.5
    x_hat[:, :, 0, 0] = 2.0  # scaled to 1 by the per-sample min-max
    mask = torch.ones(2, 4, 4)
    mask[1, 0, 0] = 0
    out = anomaly_input(x, x_hat, mask)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 1, 1] == 1 and out[0, 0, 2, 2] == 0.5
    assert out[1, 0, 0, 0] == 0  # masked out
    torch.testing.assert_close(anomaly_input(x, x), torch.zeros_like(x))  # identical images: no anomaly


def test_asam_rejects_unknown_encoder() -> None:
    with pytest.raises(ValueError, match="encoder"):
        Asam(512, encoder="vit")  # type: ignore[arg-type]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_output_stride_16_doubles_the_feature_map(backbone: str) -> None:
    torch.manual_seed(0)
    x, x_hat, anomaly = _inputs(1, 64)
    for stride, side in ((32, 2), (16, 4)):
        net = AgmNet(AgmConfig(backbone=backbone, n_classes=2, output_stride=stride, encoder_width=4)).eval()
        with torch.no_grad():
            assert net.features(x, x_hat, anomaly).shape[2:] == (side, side)
            assert net(x, x_hat, anomaly).shape == (1, 2)
    with pytest.raises(ValueError, match="output_stride"):
        AgmConfig(output_stride=8)


@pytest.mark.parametrize(("backbone", "stride"), [("resnet18", 16), ("resnet18", 32), ("resnet50", 16)])
def test_a_narrow_backbone_scales_every_stage_and_keeps_the_output_stride(backbone: str, stride: int) -> None:
    """width w: stages at w, 2w, 4w, 8w (x expansion); the bundled demo AGM uses ResNet-18 at width 16."""
    config = AgmConfig(n_classes=2, backbone=backbone, image_channels=1, output_stride=stride, width=8)
    net = AgmNet(config)
    x = torch.rand(1, 1, 64, 64)
    feats = net.features(x, x, x)
    assert feats.shape == (1, config.feature_channels, 64 // stride, 64 // stride)
    assert config.feature_channels == (64 if backbone == "resnet18" else 256)
    full = sum(p.numel() for p in AgmNet(AgmConfig(n_classes=2, backbone=backbone, image_channels=1)).parameters())
    assert sum(p.numel() for p in net.parameters()) < full / 20
    with pytest.raises(ValueError, match="width"):
        AgmConfig(width=2)
