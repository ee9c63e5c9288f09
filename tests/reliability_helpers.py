"""Small things the reliability tests share: a random-weight student checkpoint and a tiny volume file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_student(path: Path, *, classes: tuple[int, ...] = (1, 2), width: int = 4, depth: int = 2,
                 input_size: tuple[int, int] = (32, 32), tamper: dict | None = None) -> Path:
    """A ``student`` checkpoint with random (seeded) weights: a U-Net of ``width`` channels at ``input_size``;
    ``tamper`` overrides architecture fields in the metadata only (the weights stay those of the real network)."""
    import torch

    from oct_wsss.checkpoint import Checkpoint
    from oct_wsss.models.student import StudentConfig, StudentNet

    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=len(classes) + 1, width=width, depth=depth))
    arch = {**net.config.to_dict(), **(tamper or {})}
    return Checkpoint.new(net.state_dict(), method="student", architecture={"student": arch}, classes=list(classes),
                          input_size=list(input_size), normalisation={"input": "unit"},
                          training={"data": "random weights (tests)"}).save(path)


def npy_volume(path: Path, shape: tuple[int, int, int] = (2, 32, 32)) -> Path:
    """A random uint8 volume saved as ``.npy`` (readable by ``read_volume``)."""
    np.save(path, np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    return path


def report(name: str, figures: dict) -> None:
    """Add ``figures`` under ``name`` to the JSON file named by ``OCT_RELIABILITY_REPORT`` (if set)."""
    import json
    import os

    target = os.environ.get("OCT_RELIABILITY_REPORT")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault(name, {}).update(figures)
    path.write_text(json.dumps(data, indent=2))
