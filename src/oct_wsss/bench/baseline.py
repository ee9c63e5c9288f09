"""The baseline ``oct-wsss bench`` compares our CAM stage with: the straightforward implementation a researcher writes
with the ``grad-cam`` package (pytorch-grad-cam) — a loop over B-scans and classes, its ``aug_smooth`` (one
augmentation at a time), fp32, no batching — on the same weights and the same network inputs.

pytorch-grad-cam wants a model of one input tensor, so AGM's three inputs (x, x̂, anomaly map) go in stacked along
the channels and are split again inside a thin wrapper. Its ``aug_smooth`` (horizontal flip x intensity 0.9/1.0/1.1)
is the same augmentation set as ours, except that it also scales the anomaly map (ours scales x and x̂ only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oct_wsss.propose.agm import AgmProposer


def grad_cam_available() -> bool:
    """True when the ``grad-cam`` package imports (``pip install napari-oct-wsss[bench]``)."""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        return False
    return True


class StackedInputs(nn.Module):
    """AGM as a one-input model: (B, 3c, H, W) = concat(x, x̂, anomaly) -> logits."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        x, x_hat, anomaly = stacked.split(self.channels, dim=1)
        return self.net(x, x_hat, anomaly)


class BaselineCam:
    """pytorch-grad-cam's GradCAM on an AGM proposer's network and CAM layers, used as a researcher would."""

    def __init__(self, proposer: AgmProposer) -> None:
        from pytorch_grad_cam import GradCAM

        net = proposer.net
        layers = net.cam_layers()
        self.model = StackedInputs(net, net.config.image_channels).eval()
        self.cam = GradCAM(model=self.model, target_layers=[layers[n] for n in proposer.cam_layers if n in layers])

    def __call__(self, inputs: Sequence[torch.Tensor], outputs: Sequence[int], output_size: tuple[int, int], *,
                 smooth: bool) -> np.ndarray:
        """CAMs (n, K, H, W) at ``output_size``: one GradCAM call per B-scan and class, fp32."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        stacked = torch.cat([t.float() for t in inputs], dim=1)
        out = np.zeros((stacked.shape[0], len(outputs), *output_size), np.float32)
        for i in range(stacked.shape[0]):
            for j, k in enumerate(outputs):
                cam = self.cam(input_tensor=stacked[i:i + 1], targets=[ClassifierOutputTarget(k)], aug_smooth=smooth)
                up = F.interpolate(torch.from_numpy(cam)[None], size=output_size, mode="bilinear")
                out[i, j] = up[0, 0].numpy()
        return out
