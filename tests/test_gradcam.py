"""GradCAM / GradCAM++ / CAM against hand-computed answers, augmentation inverses, and batched == looped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oct_wsss.explain.augment import SMOOTHING, Augmentation
from oct_wsss.explain.gradcam import GradCam, minmax

torchvision = pytest.importorskip("torchvision")


class GapLinear(nn.Module):
    """Identity 1×1 conv "features" → global average pooling → linear head with the given weights."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        k = weight.shape[1]
        self.features = nn.Conv2d(k, k, 1, bias=False)
        self.fc = nn.Linear(k, weight.shape[0])
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(k)[:, :, None, None])
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Halves(nn.Module):
    """Channel 0 sees only the left half of the image, channel 1 only the right half."""

    def __init__(self, width: int) -> None:
        super().__init__()
        left = (torch.arange(width) < width // 2).float()
        self.register_buffer("masks", torch.stack([left, 1 - left])[None, :, None, :])

    def forward(self, x: Tensor) -> Tensor:
        return x * self.masks


class SymmetricNet(nn.Module):
    """Left–right symmetric positive conv + ReLU → GAP → linear: its CAM is flip- and intensity-equivariant."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        w = torch.rand(4, 1, 3, 3, generator=g)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.copy_((w + w.flip(-1)) / 2)
            self.fc.weight.copy_(torch.rand(2, 4, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_gradcam_equals_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(3, 4, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    model = GapLinear(w, torch.randn(3, generator=g))
    cam, logits = GradCam(model, {"features": model.features})(x, return_logits=True)
    # ∂y_c/∂A_k = w_ck / (H·W) everywhere, so the CAM is ReLU(Σ_k w_ck A_k) up to a positive scale.
    expected = minmax(torch.einsum("ck,bkhw->bchw", w, x).clamp(min=0))
    assert cam.shape == (2, 3, 8, 8) and cam.dtype == torch.float32
    torch.testing.assert_close(cam, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits, model(x))


def test_gradcam_equals_cam_for_gap_linear_model() -> None:
    g = torch.Generator().manual_seed(1)
    model = GapLinear(torch.randn(3, 4, generator=g))
    x = torch.randn(2, 4, 8, 8, generator=g)
    grad_cam = GradCam(model, [model.features])(x, classes=[2, 0])
    plain_cam = GradCam(model, [model.features], "cam", fc_weight=model.fc.weight)(x, classes=[2, 0])
    torch.testing.assert_close(grad_cam, plain_cam, atol=1e-6, rtol=0)


def test_gradcam_plus_plus_matches_closed_form_and_support() -> None:
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, 1:3, 1:4], x[0, 1, 5:7, 4:8], x[0, 2, 3:5, 0:2] = 1.0, 2.0, 0.5  # disjoint planted features
    w = torch.tensor([[1.0, -0.5, -0.2], [-0.3, 0.8, -0.1], [-1.0, -1.0, 0.4]])
    model = GapLinear(w)
    cam = GradCam(model, [model.features], "gradcam++")(x)
    assert torch.isfinite(cam).all()
    for c in range(3):
        assert torch.equal(cam[0, c] > 0, x[0, c] > 0)  # each class lights exactly its own feature
    grad = (w / 64)[:, None, :, None, None].expand(3, 1, 3, 8, 8)
    alpha = grad**2 / (2 * grad**2 + x.sum(dim=(2, 3))[None, :, :, None, None] * grad**3 + 1e-6)
    weights = (grad.clamp(min=0) * alpha).sum(dim=(-2, -1))
    expected = minmax(torch.einsum("cnk,nkhw->nchw", weights, x).clamp(min=0))
    torch.testing.assert_close(cam, expected, atol=1e-6, rtol=0)


def test_each_class_cam_lies_on_its_own_half() -> None:
    model = nn.Sequential(Halves(16), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(3, 1, 12, 16) + 0.1
    cam = GradCam(model, [model[0]])(x)  # both classes in one batched backward: gradients must not mix
    assert (cam[:, 0, :, 8:] == 0).all() and (cam[:, 0, :, :8] > 0).all()
    assert (cam[:, 1, :, :8] == 0).all() and (cam[:, 1, :, 8:] > 0).all()


def test_augmentation_apply_and_invert() -> None:
    img, mask, vec = torch.rand(2, 3, 4, 5), torch.rand(2, 1, 4, 5), torch.rand(2, 7)
    assert len(SMOOTHING) == 6 and {(a.flip, a.intensity) for a in SMOOTHING} == {
        (f, s) for f in (False, True) for s in (0.9, 1.0, 1.1)
    }
    for aug in SMOOTHING:
        a_img, a_mask, a_vec = aug.apply([img, mask, vec], intensity_inputs=(0,))
        torch.testing.assert_close(aug.invert(a_img), img * aug.intensity)
        torch.testing.assert_close(aug.invert(a_mask), mask)  # not an image input: flipped, never scaled
        assert torch.equal(a_vec, vec)  # not spatial: untouched
        assert torch.equal(a_img[..., 0], img[..., -1] * aug.intensity) == aug.flip


def test_smoothing_is_identity_for_an_equivariant_model() -> None:
    model = SymmetricNet()
    x = torch.rand(2, 1, 16, 20)
    gc = GradCam(model, [model.features])
    torch.testing.assert_close(gc(x, smooth=True), gc(x), atol=1e-5, rtol=0)


def test_smoothing_maps_each_augmentation_back_to_the_planted_feature() -> None:
    model = SymmetricNet()
    x = torch.zeros(1, 1, 16, 20)
    x[0, 0, 3, 2] = 1.0  # far from the vertical mid-line: a missing un-flip would move the peak to column 17
    gc = GradCam(model, [model.features])
    cams = [gc(x, augmentations=[aug]) for aug in SMOOTHING]
    for aug, cam in zip(SMOOTHING, cams, strict=True):
        torch.testing.assert_close(cam, cams[0], atol=1e-5, rtol=0)
        raw = gc(aug.apply([x], intensity_inputs=(0,))[0])  # CAM in the augmented frame
        assert (raw[0, :, 2:5, 16:19] > 0).all() == aug.flip
        torch.testing.assert_close(aug.invert(raw), cam, atol=1e-5, rtol=0)
    support = torch.zeros(16, 20, dtype=torch.bool)
    support[2:5, 1:4] = True  # the 3×3 conv's footprint around the planted pixel
    assert torch.equal(cams[0][0, 0] > 0, support) and torch.equal(cams[0][0, 1] > 0, support)


def reference_gradcam(model: nn.Module, layers: list[nn.Module], x: Tensor, classes: list[int]) -> Tensor:
    """The straightforward loop: one augmentation and one class at a time, full backward, hooks on tensors."""
    model.eval()
    out = torch.zeros(x.shape[0], len(classes), *x.shape[-2:])
    for aug in SMOOTHING:
        for j, c in enumerate(classes):
            acts: list[Tensor] = []
            handles = [m.register_forward_hook(lambda _m, _i, o, acts=acts: acts.append(o)) for m in layers]
            logits = model(aug.apply([x], (0,))[0])
            for h in handles:
                h.remove()
            for a in acts:
                a.retain_grad()
            model.zero_grad()
            logits[:, c].sum().backward()
            per_layer = []
            for a in acts:
                cam = (a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True).clamp(min=0)
                per_layer.append(F.interpolate(minmax(cam), size=x.shape[-2:], mode="bilinear", align_corners=False))
            out[:, j : j + 1] += aug.invert(minmax(torch.stack(per_layer).mean(dim=0))).detach() / len(SMOOTHING)
    return out


def test_batched_equals_looped_on_resnet18_with_two_layers() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    x = torch.rand(2, 3, 64, 64)
    layers = {"layer3": model.layer3[-1], "layer4": model.layer4[-1]}  # 4×4 and 2×2 maps
    cam = GradCam(model, layers, max_batch=5)(x, classes=[1, 3], smooth=True)  # 12 rows in chunks of 5
    expected = reference_gradcam(model, list(layers.values()), x, [1, 3])
    assert cam.shape == (2, 2, 64, 64)
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=0)


def test_resnet18_layer4_and_model_state_restored() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).train()
    x = torch.rand(1, 3, 64, 64)
    for method in ("gradcam", "gradcam++"):
        cam, logits = GradCam(model, [model.layer4[-1]], method)(x, return_logits=True)
        assert cam.shape == (1, 4, 64, 64) and torch.isfinite(cam).all()
        assert cam.min() >= 0 and cam.max() <= 1
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    torch.testing.assert_close(logits, model.eval()(x))


def test_rejects_bad_arguments() -> None:
    model = GapLinear(torch.randn(2, 3))
    with pytest.raises(ValueError, match="fc_weight"):
        GradCam(model, [model.features], "cam")
    with pytest.raises(IndexError):
        GradCam(model, [model.features])(torch.rand(1, 3, 4, 4), classes=[2])
    with pytest.raises(RuntimeError, match="did not run"):
        GradCam(model, [nn.Conv2d(3, 3, 1)])(torch.rand(1, 3, 4, 4))


def test_multiple_inputs_with_forward_fn() -> None:
    """Intensity factors touch only the image input; the second input is flipped with it."""
    model = SymmetricNet()
    x, guide = torch.rand(2, 1, 8, 10), torch.rand(2, 1, 8, 10)
    seen: list[Tensor] = []

    def forward(inputs: list[Tensor]) -> Tensor:
        seen.append(inputs[1])
        return model(inputs[0] * inputs[1])

    cam = GradCam(model, [model.features], forward_fn=forward)((x, guide), smooth=True)
    assert cam.shape == (2, 2, 8, 10)
    stacked = seen[0].unflatten(0, (6, 2))
    for aug, g in zip(SMOOTHING, stacked, strict=True):
        torch.testing.assert_close(aug.invert(g), guide)


@pytest.mark.parametrize("aug", [Augmentation(flip=True), Augmentation(intensity=1.1)])
def test_logits_come_from_identity_or_mean(aug: Augmentation) -> None:
    model = GapLinear(torch.randn(2, 3))
    x = torch.rand(1, 3, 4, 4)
    _, logits = GradCam(model, [model.features])(x, augmentations=[aug, Augmentation()], return_logits=True)
    torch.testing.assert_close(logits, model(x))


def test_works_inside_inference_mode() -> None:
    """Proposers run under ``torch.inference_mode``; the CAM pass re-enables autograd locally."""
    model = SymmetricNet()
    x = torch.rand(2, 1, 8, 8)
    expected = GradCam(model, [model.features])(x, smooth=True)
    with torch.inference_mode():
        cam = GradCam(model, [model.features])(x.clone(), smooth=True)
    torch.testing.assert_close(cam, expected)
