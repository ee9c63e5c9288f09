"""``fused_for_inference``: batch norm folded into the convolutions, the same outputs, the trained network untouched."""

from __future__ import annotations

import torch
from torch import nn

from oct_wsss.models.inference import fused_for_inference
from oct_wsss.models.layers import LayerNet, LayerNetConfig


def test_the_fused_layer_net_gives_the_same_logits_without_batch_norm() -> None:
    torch.manual_seed(0)
    net = LayerNet(LayerNetConfig(width=4, depth=2))
    net.train()
    for _ in range(3):  # give the batch-norm statistics something other than their initial values
        net(torch.rand(2, 1, 32, 48))
    net.eval()
    x = torch.rand(2, 1, 32, 48)
    with torch.inference_mode():
        ref = net(x)
        fused = fused_for_inference(net)
        out = fused(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is unchanged
    assert (out - ref).abs().max() < 1e-4


def test_a_network_fx_cannot_trace_is_returned_unfused_in_eval_mode() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    net = DataDependent().train()
    fused = fused_for_inference(net)
    assert not fused.training and any(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) and net.training
