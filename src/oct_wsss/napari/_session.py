"""The widgets' shared state: one :class:`Session` per viewer, with named fields, as micro-sam keeps its annotator
state in one ``AnnotatorState`` and napari-nninteractive in one ``session``.

Who writes what: Review opens the project (``store``, ``volume_id``, ``decisions``) and marks B-scans ``accepted``;
Propose, Propagate and Import record what they put into a lesions layer (``proposed``, ``provenance``); Review
reads those on accept, Propose and Propagate read ``accepted`` so they never overwrite the grader's work, and
Fine-tune reads the project and the panels; Propose notes which (checkpoint, image) pairings it has warned about
(``warned``: a phantom-only checkpoint on a real scan is said once). Preferences that outlive a session (checkpoint
files, remembered per ``project``; the project folder) stay in QSettings. Sessions, layers and panels are held
weakly: closing a viewer frees its session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary, WeakValueDictionary

import numpy as np

from oct_wsss.store import CorrectionStore


@dataclass
class LayerRecords:
    """What the widgets know about the B-scans of one lesions (Labels) layer."""

    accepted: set[int] = field(default_factory=set)  # decision in effect is accepted: never overwritten
    proposed: dict[int, np.ndarray] = field(default_factory=dict)  # labels as proposed (edit effort's baseline)
    provenance: dict[int, dict[str, Any]] = field(default_factory=dict)  # who proposed it (method, checkpoint, ...)

    @classmethod
    def of(cls, layer: Any) -> LayerRecords:
        """Empty records, or every B-scan proposed when the reader opened the layer as an imported segmentation."""
        info = ((getattr(layer, "metadata", None) or {}).get("oct_wsss") or {}).get("imported")
        if not info:
            return cls()
        pages = np.asarray(layer.data)
        return cls(proposed={i: page.copy() for i, page in enumerate(pages)}, provenance=dict.fromkeys(
            range(len(pages)), info))

    def propose(self, bscan: int, labels: np.ndarray, provenance: dict[str, Any]) -> None:
        """Record ``labels`` as what was proposed on ``bscan``, by ``provenance``."""
        self.proposed[bscan] = np.array(labels, copy=True)
        self.provenance[bscan] = provenance


@dataclass
class Session:
    """The plugin's shared state in one viewer."""

    store: CorrectionStore | None = None  # the open project (Review opens it)
    volume_id: str = ""  # the reviewed volume's id in that project
    decisions: dict[int, str] = field(default_factory=dict)  # B-scan -> accepted / rejected (in effect)
    panels: WeakValueDictionary[str, Any] = field(default_factory=WeakValueDictionary)  # "Propose" -> its widget
    layers: WeakKeyDictionary[Any, LayerRecords] = field(default_factory=WeakKeyDictionary)
    warned: set[tuple[str, str]] = field(default_factory=set)  # (checkpoint, image layer) pairings warned about

    @property
    def project(self) -> Path | None:
        """The open project's folder, or None before Review opens one."""
        return None if self.store is None else self.store.root

    def records(self, layer: Any) -> LayerRecords:
        """The records of a lesions layer (created on first use)."""
        if layer not in self.layers:
            self.layers[layer] = LayerRecords.of(layer)
        return self.layers[layer]


_SESSIONS: WeakKeyDictionary[Any, Session] = WeakKeyDictionary()


def session(viewer: Any) -> Session:
    """The session of ``viewer``: every panel of that viewer gets the same one."""
    return _SESSIONS.setdefault(viewer, Session())
