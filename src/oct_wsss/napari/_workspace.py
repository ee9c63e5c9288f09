"""The plugin's panels as one tabbed dock (Propose, Review, Propagate, Quantify, Layers, Fine-tune, SAM 2) that keeps
the canvas usable on a 1366 x 768 screen: each panel scrolls inside its tab instead of growing the window, as separate
docks did (four of them grew the window to 1863 px high there, and the B-scan shrank to a thumbnail)."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import Container, Label
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import QComboBox, QScrollArea, QSizePolicy, QTabWidget

from oct_wsss.napari._finetune import FinetuneWidget
from oct_wsss.napari._layers_panel import LayersWidget
from oct_wsss.napari._propagate import PropagateWidget
from oct_wsss.napari._propose import ProposeWidget
from oct_wsss.napari._quantify import QuantifyWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.napari._sam2 import Sam2Widget

#: tab title -> panel class, in the grader's order of work
PANELS: dict[str, type[Container]] = {"Propose": ProposeWidget, "Review": ReviewWidget, "Propagate": PropagateWidget,
                                      "Quantify": QuantifyWidget, "Layers": LayersWidget, "Fine-tune": FinetuneWidget,
                                      "SAM 2": Sam2Widget}


#: the dock's preferred width (px); every panel fits it without scrolling sideways
DOCK_WIDTH = 380
#: the narrowest a wrapped message or field label may become (px)
MIN_TEXT_WIDTH = 80


class WorkspaceWidget(QTabWidget):
    """One dock holding every panel in a scrolling tab; ``panels[title]`` is the panel (e.g. ``panels["Propose"]``)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.panels: dict[str, Container] = {title: cls(viewer) for title, cls in PANELS.items()}
        for title, panel in self.panels.items():
            _compact(panel)
            self.addTab(_scrolling(panel), title)
        show_scale_bar(viewer)
        QTimer.singleShot(0, viewer.reset_view)  # fit the B-scan once the dock has taken its place beside the canvas

    def sizeHint(self) -> QSize:
        """A dock about 380 px wide: beside napari's layer docks the canvas keeps ≥ 40 % of a 1366 px window."""
        return QSize(DOCK_WIDTH, super().sizeHint().height())

    def reset_choices(self, *_: Any) -> None:
        """Relist every panel's layer and checkpoint choices (napari calls this on layer events)."""
        for panel in self.panels.values():
            panel.reset_choices()


def _compact(panel: Container) -> None:
    """Let long choices (checkpoint names, class lists) and messages shrink to the dock instead of widening it."""
    for combo in panel.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(6)
    for message in (w.native for w in panel if isinstance(w, Label)):
        message.setWordWrap(True)
        message.setMinimumWidth(MIN_TEXT_WIDTH)  # wrapped text would otherwise ask for its heuristic width
        message.setSizePolicy(QSizePolicy.Policy.Expanding, message.sizePolicy().verticalPolicy())


def _scrolling(panel: Container) -> QScrollArea:
    """``panel`` in a scroll area that lets it be taller than the screen without growing the window."""
    area = QScrollArea()
    area.setWidget(panel.native)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
    return area


def show_scale_bar(viewer: napari.viewer.Viewer) -> None:
    """Turn the scale bar on (napari >= 0.9 keeps it among the canvas overlays)."""
    canvas = getattr(viewer, "canvas", None)
    (canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar).visible = True

