"""The Layers panel's en-face thickness map: retinal thickness (ILM -> BM, µm) over the volume in a small matplotlib
view, the ETDRS grid (1/3/6 mm) on the fovea, the current B-scan as a line, and the per-sector table.

Drawing only: thickness, fovea, sectors and grid geometry come from ``oct_wsss.propose.layers`` and
``layer_geometry`` (what ``oct-wsss layers`` writes as ``thickness.csv``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

from oct_wsss.propose.layer_geometry import etdrs_grid_lines
from oct_wsss.propose.layers import etdrs_sectors, etdrs_table, fovea_from_thickness

#: the map's least width and its height in the dock (px): it widens to the 380 px workspace's room, never beyond
MAP_SIZE = (200, 220)


def sector_table_html(rows: list[dict[str, Any]]) -> str:
    """ETDRS rows (``etdrs_table``) as a compact HTML table: sector and mean thickness in µm."""
    cells = "".join(f"<tr><td>{r['sector']}</td><td align='right'>{r['mean_um'] if r['mean_um'] != '' else '–'}"
                    f"</td></tr>" for r in rows)
    return f"<table><tr><th>sector</th><th>µm</th></tr>{cells}</table>"


class EnfaceMap(Container):
    """Thickness map with a movable ETDRS grid (fovea spin boxes) and the current B-scan's line."""

    def __init__(self) -> None:
        super().__init__(labels=True)
        self.figure = Figure(figsize=(3.0, 2.2), dpi=100, layout="constrained")
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(*MAP_SIZE)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(MAP_SIZE[1])
        self.centre_bscan = FloatSpinBox(label="fovea B-scan", min=0.0, max=1e6, step=0.5)
        self.centre_ascan = FloatSpinBox(label="fovea A-scan", min=0.0, max=1e6, step=1.0)
        self.table = Label(value="")
        self.extend([self.centre_bscan, self.centre_ascan, self.table])
        self.native.layout().insertWidget(0, self.canvas)
        self.thickness: np.ndarray | None = None
        self.spacing_mm = (1.0, 1.0, 1.0)
        self.laterality: str | None = None
        self.grid: list[Any] = []
        self.bscan_line: Any = None
        self.centre_bscan.changed.connect(self.draw_grid)
        self.centre_ascan.changed.connect(self.draw_grid)

    def show_thickness(self, thickness: np.ndarray, spacing_mm: tuple[float, float, float],
                       laterality: str | None, bscan: int) -> None:
        """Draw a (n_bscans, W) thickness map in µm, centre the grid on its fovea, mark ``bscan``."""
        self.thickness, self.spacing_mm, self.laterality = np.asarray(thickness, float), spacing_mm, laterality
        self.axes.clear()
        aspect = spacing_mm[0] / spacing_mm[2]
        finite = self.thickness[np.isfinite(self.thickness)]
        low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)  # a few wild A-scans set no range
        image = self.axes.imshow(self.thickness, origin="lower", cmap="viridis", aspect=aspect,
                                 interpolation="nearest", vmin=low, vmax=high)
        if not self.figure.axes[1:]:
            bar = self.figure.colorbar(image, ax=self.axes, location="bottom", shrink=0.9, aspect=30)
            bar.set_label("retinal thickness ILM–BM (µm)", fontsize=7)
            bar.ax.tick_params(labelsize=6)
        self.axes.set_xlabel("A-scan", fontsize=7)
        self.axes.set_ylabel("B-scan", fontsize=7)
        self.axes.tick_params(labelsize=6)
        self.bscan_line = self.axes.axhline(bscan, color="white", linewidth=1.0)
        self.grid = []
        z, x = fovea_from_thickness(self.thickness, spacing_mm)
        with self.centre_bscan.changed.blocked(), self.centre_ascan.changed.blocked():
            self.centre_bscan.value, self.centre_ascan.value = z, x
        self.draw_grid()

    @property
    def centre(self) -> tuple[float, float]:
        """The grid's centre (B-scan, A-scan) as the spin boxes set it."""
        return float(self.centre_bscan.value), float(self.centre_ascan.value)

    def draw_grid(self, *_: Any) -> None:
        """(Re)draw the ETDRS grid on ``centre`` and refresh the sector table."""
        if self.thickness is None:
            return
        for line in self.grid:
            line.remove()
        self.grid = [self.axes.plot(line[:, 1], line[:, 0], color="red", linewidth=0.8)[0]
                     for line in etdrs_grid_lines(self.centre, self.spacing_mm)]
        self.axes.set_xlim(-0.5, self.thickness.shape[1] - 0.5)
        self.axes.set_ylim(-0.5, self.thickness.shape[0] - 0.5)
        sectors = etdrs_sectors(self.thickness.shape, self.spacing_mm, self.centre, self.laterality)
        self.table.value = sector_table_html(etdrs_table(self.thickness, sectors))
        self.canvas.draw_idle()

    def move_bscan(self, bscan: int) -> None:
        """Move the current B-scan's line to ``bscan``."""
        if self.bscan_line is not None:
            self.bscan_line.set_ydata([bscan, bscan])
            self.canvas.draw_idle()

    @property
    def bscan_row(self) -> float | None:
        """Where the B-scan line is drawn (its B-scan index), None before a map is shown."""
        return None if self.bscan_line is None else float(self.bscan_line.get_ydata()[0])
