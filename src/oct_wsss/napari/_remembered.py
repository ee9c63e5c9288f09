"""The checkpoint Propose lesions preselects per method, kept in QSettings (it outlives a session): remembered per
project folder (the one Review opened; globally while none is open), saved only once it has loaded, and forgotten,
from the recent list too, when it fails to load, so a broken file is never preselected again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

#: how many checkpoints the recent list of a method keeps
RECENT = 10


def key(method: str, project: Path | None) -> str:
    """The settings key of ``method``'s checkpoint in ``project`` (a hash of its folder: no path in the key)."""
    if project is None:
        return f"checkpoint/{method}"
    return f"project-{hashlib.sha256(str(Path(project).resolve()).encode()).hexdigest()[:16]}/checkpoint/{method}"


def remembered(settings: Any, method: str, project: Path | None) -> str:
    """The checkpoint remembered for ``method`` in ``project``, else the one remembered without a project, or ""."""
    found = settings.value(key(method, project), "") if project is not None else ""
    return str(found or settings.value(key(method, None), "") or "")


def recent(settings: Any, method: str) -> list[str]:
    """``method``'s checkpoints used or fine-tuned recently, newest first."""
    value = settings.value(f"recent/{method}", []) or []
    return [value] if isinstance(value, str) else [str(p) for p in value]  # QSettings may hand back one path alone


def remember(settings: Any, method: str, project: Path | None, path: str | Path) -> None:
    """Preselect ``path`` for ``method`` in ``project`` (globally without one) and put it first in the recent list."""
    path = str(path)
    settings.setValue(key(method, project), path)
    settings.setValue(f"recent/{method}", [path, *[p for p in recent(settings, method) if p != path]][:RECENT])


def forget(settings: Any, method: str, project: Path | None, path: str | Path) -> None:
    """Drop ``path``, which failed to load, from ``method``'s remembered choices and from its recent list."""
    path = str(path)
    for name in {key(method, project), key(method, None)}:
        if settings.value(name, "") == path:
            settings.setValue(name, "")
    settings.setValue(f"recent/{method}", [p for p in recent(settings, method) if p != path])
