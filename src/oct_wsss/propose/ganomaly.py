"""The GANomaly generator of a ``ganomaly`` checkpoint, ready to make healthy counterparts for AGM proposals."""

from __future__ import annotations

import torch

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.models.ganomaly import GanomalyConfig, Generator
from oct_wsss.preprocess.device import resolve_device

PREFIX = "generator."


def load_generator(ckpt: Checkpoint, device: str | torch.device = "cpu") -> Generator:
    """The checkpoint's ``generator.*`` weights in a :class:`Generator` built from its architecture, in eval mode."""
    if ckpt.method != "ganomaly":
        raise CheckpointError(None, f"checkpoint {ckpt.id} is a {ckpt.method!r} checkpoint, not 'ganomaly'")
    try:
        config = GanomalyConfig.from_dict(ckpt.meta["architecture"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(None, f"checkpoint {ckpt.id}: bad GANomaly architecture: {e}") from e
    weights = {k[len(PREFIX):]: v for k, v in ckpt.state_dict.items() if k.startswith(PREFIX)}
    with torch.device("meta"):  # no throw-away random init: the weights are assigned below
        generator = Generator(config)
    try:
        generator.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(None, f"checkpoint {ckpt.id}: generator weights do not fit {config}: {e}") from e
    return generator.to(resolve_device(device)).eval()
