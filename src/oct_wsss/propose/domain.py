"""Whether a checkpoint learnt from real scans or from the synthetic phantom only, read from its metadata (no torch),
and the one warning every entry point gives when a phantom-only checkpoint proposes on a real scan."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oct_wsss.checkpoint import CheckpointError, read_meta

#: dataset layouts and ``training.data`` keys that are the phantom, not scans of eyes
PHANTOM_DATA = frozenset({"synth", "synthetic", "phantom"})


def saw_real_data(meta: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's metadata names real scans among its training data: ``training.real_data`` (real-wsss),
    a non-phantom ``training.data`` (real-student's counts, the layer model's dataset), a recipe data layout other
    than ``synth``, or a fine-tuned parent that did (``parent_training``, which ``finetune`` copies into the child).
    The bundled ``demo-*`` checkpoints name none."""
    training = meta.get("training") or {}
    data = training.get("data")
    if training.get("real_data") or any(layout not in PHANTOM_DATA for layout in training.get("layouts") or ()):
        return True
    if isinstance(data, str) and data and not data.lower().startswith(tuple(PHANTOM_DATA)):
        return True
    if isinstance(data, Mapping) and any(count for key, count in data.items() if key not in PHANTOM_DATA):
        return True
    parent = training.get("parent_training")
    return isinstance(parent, Mapping) and saw_real_data({"training": parent})


def phantom_warning(checkpoint: str | Path, real_scan: bool) -> str | None:
    """The warning for proposing with ``checkpoint`` on a real scan when it learnt from the phantom only; None when
    the scan is the phantom, the checkpoint saw real data, or it cannot be read (loading it then says why)."""
    if not real_scan:
        return None
    try:
        meta = read_meta(checkpoint)
    except CheckpointError:
        return None
    if saw_real_data(meta):
        return None
    return (f"{Path(checkpoint).name} was trained on the synthetic phantom only; its proposals on this real scan may "
            "be poor: prefer a checkpoint trained on real data (bundled real-*), or fine-tune it on your corrections")
