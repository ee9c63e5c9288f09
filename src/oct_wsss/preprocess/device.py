"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) to torch devices, refusing unavailable ones."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` = CUDA, then MPS, then CPU; an explicit device that is not available is a ValueError saying why."""
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (no GPU visible, or CPU-only torch)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} requested but only {count} CUDA device(s) are visible")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {name!r} requested but Apple MPS is not available on this machine")
        return device
    raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    """True when torch has a working Apple Metal backend."""
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
