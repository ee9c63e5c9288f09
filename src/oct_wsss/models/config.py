"""Building hyper-parameter dataclasses from recipe or checkpoint mappings, refusing keys they do not have."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def strict_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)`` after checking every key is a field: a typo in a recipe must fail, not be ignored."""
    unknown = set(data) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")
    return cls(**data)
