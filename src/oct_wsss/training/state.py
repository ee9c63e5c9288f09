"""Resumable training state in one ``.safetensors`` file: never pickled, written atomically.

Module state dicts are stored as tensors under ``module.<name>.<key>``. Optimizer, scheduler and ``extra`` states
are nested Python values: their tensors (Adam moments, step counters, momentum buffers, RNG states) are stored
under ``<section>.<name>.<n>`` and the rest as JSON in the header's ``__metadata__``, where each tensor is
replaced by a reference to its key (tuples and non-string dict keys are tagged so they come back as they were).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

META_KEY = "oct_wsss_state"
STATE_VERSION = 1
_TENSOR, _TUPLE, _ITEMS = "$tensor", "$tuple", "$items"


def save_state(path: str | Path, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
               extra: Mapping[str, Any], schedulers: Mapping[str, Any] | None = None) -> Path:
    """Write modules, optimizers, LR schedulers and ``extra`` to ``path`` (temp file in the same folder + rename)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        _check_name(name)
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    sections = {"optimizers": optimizers, "schedulers": schedulers or {}}
    meta: dict[str, Any] = {"version": STATE_VERSION, "modules": sorted(modules)}
    for section, objects in sections.items():
        meta[section] = {name: _encode(obj.state_dict(), f"{section}.{_check_name(name)}", tensors)
                         for name, obj in objects.items()}
    meta["extra"] = _encode(dict(extra), "extra", tensors)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}  # no shared storage
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644  # mkstemp's 0600 would hide it from others
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, mode)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_state(path: str | Path, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
               schedulers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into the given objects and return ``extra``.

    Each given object must be in the file (module keys strictly); saved objects not asked for are skipped, so a
    caller may read ``extra`` or the weights alone.
    """
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:  # tensors are read only when asked for
        raw = (f.metadata() or {}).get(META_KEY)
        if raw is None:
            raise ValueError(f"{path}: not an oct-wsss training state (no {META_KEY!r} metadata)")
        meta = json.loads(raw)
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: training state version {meta.get('version')!r}; this code reads {STATE_VERSION}")
        _have_names(path, "modules", meta["modules"], modules)
        for name, module in modules.items():
            prefix = f"module.{name}."
            weights = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
            module.load_state_dict(weights, strict=True)
        for section, objects in (("optimizers", optimizers), ("schedulers", schedulers or {})):
            _have_names(path, section, meta[section], objects)
            for name, obj in objects.items():
                obj.load_state_dict(_decode(meta[section][name], f.get_tensor))
        return _decode(meta["extra"], f.get_tensor)


def _check_name(name: str) -> str:
    """Names become key prefixes, so they must not contain dots."""
    if not name or "." in name:
        raise ValueError(f"state names must be non-empty and dot-free; got {name!r}")
    return name


def _have_names(path: Path, section: str, saved: Any, given: Mapping[str, Any]) -> None:
    """Every given name of one section was saved, else a ValueError listing both."""
    missing = sorted(set(given) - set(saved))
    if missing:
        raise ValueError(f"{path}: no saved {section} {missing}; the file holds {sorted(saved)}")


def _encode(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-ready copy of ``value`` with each tensor moved into ``tensors`` and replaced by its key."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"  # unique: the dict only grows
        tensors[key] = value
        return {_TENSOR: key}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, prefix, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, prefix, tensors) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, prefix, tensors) for k, v in value.items()}
        return {_ITEMS: [[_encode(k, prefix, tensors), _encode(v, prefix, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a training state (use tensors and plain values)")


def _decode(value: Any, tensor: Callable[[str], torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`; ``tensor(key)`` reads one stored tensor."""
    if isinstance(value, list):
        return [_decode(v, tensor) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensor(value[_TENSOR])
        if set(value) == {_TUPLE}:
            return tuple(_decode(v, tensor) for v in value[_TUPLE])
        if set(value) == {_ITEMS}:
            return {_decode(k, tensor): _decode(v, tensor) for k, v in value[_ITEMS]}
        return {k: _decode(v, tensor) for k, v in value.items()}
    return value

