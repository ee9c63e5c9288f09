"""Third-party pickled weights (e.g. SAM 2's ``.pt``), read with torch's weights-only unpickler and a warning: the
one way a pickle comes in."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from oct_wsss.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    import torch


#: terminal control sequences (torch bolds part of its weights-only refusal with ANSI escapes)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _torch_refusal(message: str) -> str:
    """One plain line for torch's weights-only refusal: the global it refused when named, else its first line; no
    terminal escapes (they print as garbage in notifications and logs)."""
    text = _ANSI.sub("", message)
    refused = re.search(r"GLOBAL (\S+)", text)
    if refused:
        return f"it holds {refused.group(1)}, which is not a tensor or plain container"
    return next((line.strip() for line in text.splitlines() if line.strip()), "unreadable")


def import_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a third-party pickled ``.pt`` (e.g. SAM 2), loaded with ``weights_only=True`` and a warning."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such weights file")
    warnings.warn(
        f"{path.name} is a third-party pickle; loading it with torch.load(weights_only=True), which only "
        "rebuilds tensors and plain containers. Convert it to .safetensors once you trust it.",
        UserWarning,
        stacklevel=2,
    )
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(
            path, f"refused: not plain tensors (weights-only unpickling failed: {_torch_refusal(str(e))})"
        ) from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(path, "does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)
