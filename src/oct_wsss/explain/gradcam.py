"""GradCAM, GradCAM++ and CAM for any ``nn.Module``: all classes and all augmentations in one batched pass.

Per target layer: cam = ReLU(Σ_k w_k A_k), min–max per image, bilinear to the input size; layers are averaged and
min–max scaled again; smoothing un-does each augmentation and averages (METHODS.md §1, as pytorch-grad-cam does).
Gradients of every requested class come from one ``torch.autograd.grad`` call with ``is_grads_batched=True``
(one-hot grad_outputs, vmapped backward) taken w.r.t. the target activations only: the forward runs once per
augmented image, the backward covers only the layers after the targets, and no parameter gradient is computed.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oct_wsss.explain.augment import IDENTITY, SMOOTHING, Augmentation

Method = Literal["gradcam", "gradcam++", "cam"]
ForwardFn = Callable[[Sequence[Tensor]], Tensor]
_EPS = 1e-7


def minmax(x: Tensor) -> Tensor:
    """Scale every map (..., H, W) to [0, 1] by its own minimum and maximum (an all-constant map becomes 0)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    x = x - lo
    return x / (x.amax(dim=(-2, -1), keepdim=True) + _EPS)


def cam_weights(method: Method, act: Tensor, grad: Tensor) -> Tensor:
    """Channel weights (C, N, K) from activations (N, K, h, w) and per-class gradients (C, N, K, h, w)."""
    if method == "gradcam":
        return grad.mean(dim=(-2, -1))
    # GradCAM++ (Chattopadhay et al. 2018, eq. 19) with the exp-free closed form of pytorch-grad-cam.
    g2 = grad.pow(2)
    g3 = g2 * grad
    alpha = g2 / (2 * g2 + act.sum(dim=(-2, -1))[None, :, :, None, None] * g3 + 1e-6)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (grad.clamp(min=0) * alpha).sum(dim=(-2, -1))


class GradCam:
    """Class activation maps of ``model`` at ``target_layers``; call it with the model's input tensor(s).

    ``forward_fn`` maps the (augmented) inputs to logits (N, K), default ``model(*inputs)``; ``intensity_inputs``
    lists the inputs that are images (intensity factors apply to them only; flips apply to every spatial input).
    ``method="cam"`` needs ``fc_weight`` (K, channels): the linear head after global pooling. ``max_batch`` bounds
    the augmented images per forward; ``autocast`` uses bf16/fp16 on CUDA.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Mapping[str, nn.Module] | Sequence[nn.Module],
        method: Method = "gradcam",
        *,
        forward_fn: ForwardFn | None = None,
        fc_weight: Tensor | None = None,
        intensity_inputs: Collection[int] = (0,),
        max_batch: int = 16,
        autocast: bool = False,
    ) -> None:
        if method not in ("gradcam", "gradcam++", "cam"):
            raise ValueError(f"unknown CAM method {method!r}; use 'gradcam', 'gradcam++' or 'cam'")
        if method == "cam" and fc_weight is None:
            raise ValueError("method='cam' needs fc_weight, the (classes, channels) weight of the linear head")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        layers = dict(target_layers) if isinstance(target_layers, Mapping) else dict(enumerate(target_layers))
        if not layers:
            raise ValueError("at least one target layer is needed")
        self.model = model
        self.target_layers: dict[str, nn.Module] = {str(k): v for k, v in layers.items()}
        self.method: Method = method
        self.forward_fn: ForwardFn = forward_fn or (lambda inputs: model(*inputs))
        self.fc_weight = None if fc_weight is None else fc_weight.detach()
        self.intensity_inputs = frozenset(intensity_inputs)
        self.max_batch = max_batch
        self.autocast = autocast

    def __call__(
        self,
        inputs: Tensor | Sequence[Tensor],
        classes: Sequence[int] | None = None,
        *,
        smooth: bool = False,
        augmentations: Sequence[Augmentation] | None = None,
        output_size: tuple[int, int] | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """CAMs (B, C, H, W) float32 in [0, 1] for ``classes`` (default: all logits), optionally with logits (B, K).

        ``smooth`` uses the six AGM augmentations unless ``augmentations`` are given. The logits returned are
        those of the identity augmentation when it is among them, else their mean over augmentations.
        """
        xs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not xs:
            raise ValueError("no input tensors given")
        augs = tuple(augmentations) if augmentations is not None else (SMOOTHING if smooth else IDENTITY)
        if not augs:
            raise ValueError("augmentations must not be empty")
        device = self._device(xs[0])
        xs = [x.to(device) for x in xs]
        n_img = xs[0].shape[0]
        size = output_size or (int(xs[0].shape[-2]), int(xs[0].shape[-1]))
        # Augmentation-major stacking: row a * B + b is image b under augmentation a.
        stacked = [torch.cat(parts) for parts in zip(*(a.apply(xs, self.intensity_inputs) for a in augs), strict=True)]
        cams, logits = [], []
        with self._cam_mode():
            for start in range(0, n_img * len(augs), self.max_batch):
                chunk = [x[start : start + self.max_batch] for x in stacked]
                cam, logit = self._chunk(chunk, classes, size)
                cams.append(cam)
                logits.append(logit)
        cam = torch.cat(cams).unflatten(0, (len(augs), n_img))
        cam = torch.stack([a.invert(c) for a, c in zip(augs, cam, strict=True)]).mean(dim=0)
        if not return_logits:
            return cam
        logit = torch.cat(logits).unflatten(0, (len(augs), n_img))
        ident = [i for i, a in enumerate(augs) if a.is_identity]
        return cam, (logit[ident[0]] if ident else logit.mean(dim=0))

    def _device(self, fallback: Tensor) -> torch.device:
        """The model's device (its first parameter or buffer), else the input's."""
        return next(itertools.chain(self.model.parameters(), self.model.buffers()), fallback).device

    @contextlib.contextmanager
    def _cam_mode(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the duration of a call; the model's own state is restored after."""
        modes = [(m, m.training) for m in self.model.modules()]
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            self.model.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            yield
        finally:
            for m, training in modes:
                m.training = training
            for p, flag in flags:
                p.requires_grad_(flag)

    @contextlib.contextmanager
    def _capture(self, acts: dict[str, Tensor]) -> Iterator[None]:
        """Forward hooks that store each target layer's output as a gradient leaf (graph recorded from there on)."""

        def hook(name: str) -> Callable[[nn.Module, object, object], Tensor | None]:
            def store(_m: nn.Module, _args: object, out: object) -> Tensor | None:
                if not isinstance(out, Tensor):
                    raise TypeError(f"target layer {name!r} must return a tensor, got {type(out).__name__}")
                if name in acts:
                    raise RuntimeError(f"target layer {name!r} ran more than once in one forward")
                if not torch.is_grad_enabled():
                    acts[name] = out
                    return None
                acts[name] = out if out.requires_grad else out.detach().requires_grad_()
                return acts[name].clone()  # downstream in-place ops must not touch the stored activation

            return store

        handles = [m.register_forward_hook(hook(n)) for n, m in self.target_layers.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _chunk(self, xs: list[Tensor], classes: Sequence[int] | None, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """CAMs (n, C, H, W) and float32 logits (n, K) for one chunk of augmented inputs."""
        acts: dict[str, Tensor] = {}
        use_amp = self.autocast and xs[0].device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        grad_mode = torch.no_grad() if self.method == "cam" else torch.enable_grad()
        amp = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
        with torch.inference_mode(False), self._capture(acts), grad_mode, amp:
            logits = self.forward_fn(xs)
        if logits.ndim != 2:
            raise ValueError(f"forward_fn must return logits (N, K), got shape {tuple(logits.shape)}")
        missing = set(self.target_layers) - set(acts)
        if missing:
            raise RuntimeError(f"target layers {sorted(missing)} did not run in the forward pass")
        n_cls = logits.shape[1] if self.fc_weight is None else self.fc_weight.shape[0]
        cls = list(range(n_cls)) if classes is None else [int(c) for c in classes]
        if not cls or min(cls) < 0 or max(cls) >= n_cls:
            raise IndexError(f"classes {cls} out of range for {n_cls} classes")
        names = list(self.target_layers)
        if self.method == "cam":
            grads: Sequence[Tensor | None] = [None] * len(names)
        else:
            onehot = torch.zeros((len(cls), *logits.shape), dtype=logits.dtype, device=logits.device)
            onehot[torch.arange(len(cls)), :, cls] = 1
            grads = torch.autograd.grad(logits, [acts[n] for n in names], onehot, is_grads_batched=True)
        per_layer = [self._layer_cam(acts[n].detach(), g, cls, size) for n, g in zip(names, grads, strict=True)]
        cam = minmax(torch.stack(per_layer).mean(dim=0))
        return cam.float(), logits.detach().float()

    def _layer_cam(self, act: Tensor, grad: Tensor | None, cls: list[int], size: tuple[int, int]) -> Tensor:
        """One layer's CAMs (n, C, H, W): ReLU of the weighted channel sum, min–max per map, resized to ``size``."""
        if act.ndim != 4:
            raise ValueError(f"target activations must be (N, K, h, w), got shape {tuple(act.shape)}")
        dtype = torch.promote_types(act.dtype, torch.float32)
        act = act.to(dtype)
        if grad is None:
            assert self.fc_weight is not None
            w = self.fc_weight.to(act.device, dtype)[cls]
            if w.shape[1] != act.shape[1]:
                raise ValueError(f"fc_weight has {w.shape[1]} input channels, the target layer {act.shape[1]}")
            weights = w[:, None, :].expand(-1, act.shape[0], -1)
        else:
            weights = cam_weights(self.method, act, grad.to(dtype))
        cam = torch.einsum("cnk,nkhw->nchw", weights, act).clamp(min=0)
        return F.interpolate(minmax(cam), size=size, mode="bilinear", align_corners=False)
