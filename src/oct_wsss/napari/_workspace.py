"""The plugin's panels as one tabbed dock (Propose, Review, Propagate, Quantify, Layers, Fine-tune, SAM 2) that keeps
the canvas usable on a 1366 x 768 screen: each panel scrolls inside its tab instead of growing the window, as separate
docks did (four of them grew the window to 1863 px high there, and the B-scan shrank to a thumbnail). The B-scan stays
fitted to the canvas while the window and its docks settle, until the grader zooms or pans."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import Container, Label
from qtpy.QtCore import QSize, Qt
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
        self.fitted = FittedView(viewer)

    def sizeHint(self) -> QSize:
        """A dock about 380 px wide: beside napari's layer docks the canvas keeps ≥ 40 % of a 1366 px window."""
        return QSize(DOCK_WIDTH, super().sizeHint().height())

    def reset_choices(self, *_: Any) -> None:
        """Relist every panel's layer and checkpoint choices (napari calls this on layer events)."""
        for panel in self.panels.values():
            panel.reset_choices()


class FittedView:
    """Fits the view again whenever the canvas changes size while the camera is still where a fit put it: docking the
    workspace narrows the canvas after napari fitted the first image (the B-scan then showed only its middle half)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.fitted: tuple[float, tuple[float, ...]] | None = None
        viewer.events.reset_view.connect(self._remember)  # napari's own fits (first layer, Home) count too
        canvas = getattr(viewer, "canvas", None)  # napari >= 0.9; older versions only get the fit below
        if canvas is not None:
            canvas.events.size.connect(self.refit)
        viewer.reset_view()

    def _camera(self) -> tuple[float, tuple[float, ...]]:
        camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        return float(camera.zoom), tuple(float(c) for c in camera.center)

    def _remember(self, *_: Any) -> None:
        self.fitted = self._camera()

    def refit(self, *_: Any) -> None:
        """Fit the layers to the resized canvas unless the grader has zoomed or panned since the last fit."""
        if self.fitted == self._camera():
            self.viewer.reset_view()


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

