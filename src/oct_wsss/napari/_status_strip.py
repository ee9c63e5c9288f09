"""A clickable overview strip of per-B-scan review status: one cell per B-scan, coloured by its decision."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QRect, Qt
from qtpy.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

COLOURS = {"unreviewed": QColor(110, 110, 110), "proposed": QColor(230, 160, 30), "accepted": QColor(40, 170, 70),
           "rejected": QColor(200, 50, 50)}


class StatusStrip(QWidget):
    """Grey = unreviewed, amber = propagated (proposed, to review), green = accepted, red = rejected; the current
    B-scan is outlined; a click jumps there."""

    def __init__(self, jump: Callable[[int], None]) -> None:
        super().__init__()
        self.jump = jump
        self.statuses: list[str] = []
        self.current = 0
        self.setMinimumHeight(18)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("review status per B-scan (grey unreviewed, amber propagated, green accepted, red rejected); "
                        "click to go there")

    def set_status(self, statuses: list[str], current: int) -> None:
        """Show ``statuses`` (one per B-scan) with ``current`` outlined."""
        self.statuses, self.current = list(statuses), int(current)
        self.update()

    def index_at(self, x: float) -> int:
        """The B-scan under horizontal position ``x`` (pixels)."""
        n = max(len(self.statuses), 1)
        return min(max(int(x * n / max(self.width(), 1)), 0), n - 1)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self.statuses:
            self.jump(self.index_at(event.position().x()))

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        n, w, h = len(self.statuses), self.width(), self.height()
        for i, status in enumerate(self.statuses):
            x0, x1 = round(i * w / n), round((i + 1) * w / n)
            painter.fillRect(QRect(x0, 0, max(x1 - x0 - (1 if n < w / 3 else 0), 1), h), COLOURS[status])
        if n:
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            x0, x1 = round(self.current * w / n), round((self.current + 1) * w / n)
            painter.drawRect(QRect(x0 + 1, 1, max(x1 - x0 - 2, 1), h - 2))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.end()
