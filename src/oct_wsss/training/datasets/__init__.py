"""Dataset adapters: each turns one on-disk layout into a :class:`~oct_wsss.training.data.LabelledSet`.

``load_dataset({"layout": NAME, "root": PATH, ...})`` dispatches to the adapter registered under NAME; recipes
name their data this way. Every adapter keeps patient ids so that splits are patient-level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oct_wsss.training.data import LabelledSet

Adapter = Callable[..., LabelledSet]


def _adapters() -> dict[str, Adapter]:
    from oct_wsss.training.datasets import (
        agm_reference,
        aroi,
        bonn,
        duke,
        kermany,
        manifest,
        resc,
        retouch,
        sjtu,
        synth,
    )

    return {"synth": synth.load_synth, "resc": resc.load_resc, "duke": duke.load_duke,
            "kermany": kermany.load_kermany, "csv": manifest.load_csv, "retouch": retouch.load_retouch,
            "aroi": aroi.load_aroi, "agm": agm_reference.load_agm_reference, "bonn": bonn.load_bonn,
            "sjtu": sjtu.load_sjtu}


def layouts() -> tuple[str, ...]:
    """Names ``load_dataset`` accepts as ``layout``."""
    return tuple(_adapters())


def load_dataset(spec: dict[str, Any], base: str | Path | None = None) -> LabelledSet:
    """Load the dataset a recipe's ``data`` block describes; relative roots resolve against ``base``."""
    spec = dict(spec)
    layout = spec.pop("layout", None)
    adapters = _adapters()
    if layout not in adapters:
        raise ValueError(f"unknown dataset layout {layout!r}; known: {', '.join(adapters)}")
    if "root" not in spec:
        raise ValueError(f"dataset layout {layout!r} needs a 'root' folder")
    root = Path(spec.pop("root")).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    return adapters[layout](root, **spec)
