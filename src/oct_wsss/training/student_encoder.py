"""Start a weak classifier's U-Net backbone from a trained student's encoder (issue 19, item 2b): the phantom student
as the domain-matched stand-in for the ImageNet weights the AGM and DFP papers start from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.training.errors import TrainingError


def init_from_student(net: nn.Module, path: Path, load: Callable[[nn.Module, dict[str, torch.Tensor]], int]) -> int:
    """Copy the student checkpoint's encoder into ``net`` with its model's ``load`` (``load_unet_encoder``); the
    student must be a depth-4 U-Net of the backbone's width. Returns the number of tensors copied."""
    ckpt = Checkpoint.load(path, expect_method="student")
    arch = ckpt.meta["architecture"]["student"]
    width = net.config.width
    if arch.get("arch") != "unet" or arch.get("depth") != 4 or arch.get("width") != width:
        raise TrainingError(f"{path.name}: a 'unet' backbone of width {width} needs a depth-4 U-Net student of "
                            f"that width; the checkpoint has {arch}")
    try:
        return load(net, ckpt.state_dict)
    except ValueError as err:
        raise TrainingError(f"{path.name}: {err}") from err
