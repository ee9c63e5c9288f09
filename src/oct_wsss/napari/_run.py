"""What the widgets' background runs share: a throttled napari progress bar, the status line once a run has ended,
and the wrapper that carries a worker's RuntimeError to the main thread."""

from __future__ import annotations

from napari.utils import progress
from qtpy.QtCore import QTimer


def done_status(cancelled: bool, failure: str | None) -> str:
    """The status line once a run has ended: a failure says failed (never "done"), then cancelled, else done."""
    if failure is not None:
        return f"failed: {failure}"
    return "cancelled" if cancelled else "done"


class WorkerFailed(Exception):
    """A RuntimeError (e.g. ProposalError) from the worker, carried to the main thread; superqt would swallow it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class RunProgress:
    """A napari progress bar updated at most every 250 ms, each update its own event (updating it redraws napari)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self.shown, self.bar = total, desc, 0, 0, None
        self.timer = QTimer()
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._update)
        QTimer.singleShot(0, self._create)  # after the click returns, so the click handler stays short

    def _create(self) -> None:
        if self.bar is None and self.timer is not None:
            self.bar = progress(total=self.total, desc=self.desc)
            if self.timer is None:  # the run ended while the bar was being made
                self.bar.close()
            else:
                self.timer.start()

    def step(self) -> None:
        self.done += 1

    def _update(self) -> None:
        if self.bar is not None and self.done > self.shown:
            self.bar.update(self.done - self.shown)
            self.shown = self.done

    def close(self) -> None:
        self.timer.stop()
        self.timer = None
        if self.bar is not None:
            self.bar.close()
