"""The **Quantify** dock widget: the measurement table of the chosen labels layer, live, with a plot per B-scan.

Thin: ``evaluate.measure.measure_labels`` does the counting (what ``oct-wsss export`` writes as CSV); the widget
re-measures shortly after each edit (debounced), shows volume per class and HRF count, and plots the area of each
class per B-scan in the ontology's colours. Spacing is the layer's scale (mm), so values are physical.
"""

from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import Container, Label, PushButton, Table, create_widget
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate.measure import Measurements, measure_labels
from oct_wsss.napari._layers import follow_proposals

HEADER = ["class", "B-scans", "pixels", "volume (mm³)"]


def table_value(rows: list[list[Any]], columns: list[str]) -> dict[str, Any]:
    """A magicgui Table value (the "split" form: it needs the index to read the rows as rows)."""
    return {"data": rows, "columns": columns, "index": list(range(len(rows)))}


def area_per_bscan(m: Measurements, n_bscans: int) -> dict[str, np.ndarray]:
    """Class key -> area (mm²) in each of the ``n_bscans`` B-scans (0 where absent), from the measurement rows."""
    out: dict[str, np.ndarray] = {}
    for row in m.bscans:
        out.setdefault(str(row["class"]), np.zeros(n_bscans))[int(row["bscan"])] = float(row["area_mm2"])
    return out


class QuantifyWidget(Container):
    """Dock widget: volumes per class, HRF count, and a lesion-area-per-B-scan plot for one labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.labels = create_widget(annotation="napari.layers.Labels", label="labels")
        follow_proposals(viewer, self.labels)
        self.refresh_button = PushButton(text="Measure now")
        self.table = Table(value=table_value([], HEADER))
        self.summary = Label(value="")
        self.figure = Figure(figsize=(4, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.extend([self.labels, self.refresh_button, self.summary, self.table])
        self.native.layout().addWidget(self.canvas)
        self.measurements: Measurements | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)  # re-measure once the grader pauses, not on every brush stroke
        self._timer.timeout.connect(self.refresh)
        self._watched: Any = None
        self.refresh_button.changed.connect(self.refresh)
        self.labels.changed.connect(self._watch)
        viewer.layers.events.inserted.connect(self.labels.reset_choices)
        viewer.layers.events.removed.connect(self.labels.reset_choices)
        self._watch()

    def _watch(self, *_: Any) -> None:
        """Follow edits of the chosen layer (paint, fill, erase, data replaced)."""
        if self._watched is not None:
            for event in (self._watched.events.data, self._watched.events.paint):
                event.disconnect(self._soon)
        self._watched = self.labels.value
        if self._watched is not None:
            for event in (self._watched.events.data, self._watched.events.paint):
                event.connect(self._soon)
        self.refresh()

    def _soon(self, *_: Any) -> None:
        self._timer.start()

    def refresh(self, *_: Any) -> Measurements | None:
        """Measure the chosen layer now; returns the measurements (None without a 3-D labels layer)."""
        layer = self.labels.value
        data = None if layer is None else np.asarray(layer.data)
        if data is None or data.ndim not in (2, 3):
            self.measurements, self.table.value = None, table_value([], HEADER)
            self.summary.value = "choose a labels layer"
            return None
        data = data[None] if data.ndim == 2 else data
        spacing = tuple(([1.0] * 3 + [float(s) for s in layer.scale[-3:]])[-3:])
        m = self.measurements = measure_labels(data, spacing)
        rows = [[by_key(str(r["class"])).name, r["bscans"], r["pixels"], r["volume_mm3"]] for r in m.volume]
        self.table.value = table_value(rows, HEADER)
        self.summary.value = f"{len(m.hrf)} HRF foci · spacing z {spacing[0]:g} mm"
        self._plot(area_per_bscan(m, len(data)))
        return m

    def _plot(self, areas: dict[str, np.ndarray]) -> None:
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        for c in ONTOLOGY[1:]:
            if c.key in areas:
                ax.plot(areas[c.key], color=c.colour[:3], label=c.key.upper(), lw=1.5)
        ax.set_xlabel("B-scan")
        ax.set_ylabel("area (mm²)")
        if areas:
            ax.legend(fontsize=7, loc="upper right")
        self.canvas.draw_idle()
