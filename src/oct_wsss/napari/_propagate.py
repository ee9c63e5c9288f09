"""The **Propagate** dock widget: carry the current B-scan's labels to its neighbours over a chosen range, B-scan by
B-scan, with progress, Cancel and Undo (docs/propagation.md).

Thin: ``propose.propagate.propagate_stream`` does the work in a ``thread_worker``; each propagated B-scan is written
into the lesions layer through ``data_setitem`` (so napari's Ctrl-Z undoes it too) and recorded as *proposed* in the
viewer's session, never accepted: the Review widget still accepts it. Accepted B-scans are left as they are.
Propagation records nothing in the store; once a propagated B-scan is accepted, that accept is undone through the
store's versions (Review's Undo), and "Undo last propagation" leaves it alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QSettings

from oct_wsss.napari._layers import write_page
from oct_wsss.napari._session import session


class PropagateWidget(Container):
    """Dock widget: range around the current B-scan, engine, Propagate / Cancel / Undo."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.session.panels["Propagate"] = self
        self.settings = QSettings("napari-oct-wsss", "propose")  # the SAM 2 checkpoint is shared with HRF and assist
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="lesion labels")
        self.start = SpinBox(label="from B-scan", min=0, max=9999)
        self.end = SpinBox(label="to B-scan", min=0, max=9999)
        self.engine = ComboBox(label="engine", choices=["flow", "sam2"], value="flow")
        self.checkpoint = FileEdit(label="SAM 2 checkpoint", mode="r", filter="*.pt",
                                   value=self.settings.value("sam2", "") or "")
        self.min_confidence = FloatSpinBox(label="stop below confidence", min=0.0, max=1.0, step=0.05, value=0.5)
        self.run_button = PushButton(text="Propagate current B-scan")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.undo_button = PushButton(text="Undo last propagation", enabled=False)
        self.status = Label(value="draw or correct a B-scan, choose the range, Propagate")
        self.status.native.setWordWrap(True)
        self.extend([self.image, self.labels, self.start, self.end, self.engine, self.checkpoint, self.min_confidence,
                     self.run_button, self.cancel_button, self.undo_button, self.status])
        self.worker: Any = None
        self.previous: dict[int, tuple[np.ndarray, Any, Any]] = {}  # B-scan -> (page, proposed, provenance) before
        self.run_info: dict[str, Any] = {}  # what the running propagation records as each B-scan's provenance
        self._cancel = False
        self._failure: str | None = None  # the run's error, so the status says failed, not what was proposed only
        self.run_button.changed.connect(self.propagate)
        self.cancel_button.changed.connect(self.cancel)
        self.undo_button.changed.connect(self.undo)
        viewer.dims.events.current_step.connect(self._default_range)
        for widget in (self.image, self.labels):
            viewer.layers.events.inserted.connect(widget.reset_choices)
            viewer.layers.events.removed.connect(widget.reset_choices)
        self._default_range()

    def _default_range(self, *_: Any) -> None:
        """Current B-scan ± 3 (within the volume) until the grader sets a range."""
        if self.worker is not None or self.image.value is None:
            return
        k, n = int(self.viewer.dims.current_step[0]), self.image.value.data.shape[0]
        self.start.value, self.end.value = max(0, k - 3), min(n - 1, k + 3)

    def propagate(self, *_: Any) -> Any:
        """Start propagating the current B-scan over the range (in a worker); returns the worker."""
        image, labels = self.image.value, self.labels.value
        if image is None or labels is None or self.worker is not None:
            return None
        from oct_wsss.propose.propagate import PropagationError, check_request

        k, start, end = int(self.viewer.dims.current_step[0]), int(self.start.value), int(self.end.value)
        try:
            check_request(image.data.shape, np.asarray(labels.data), k, start, end)
        except PropagationError as err:
            self.status.value = str(err)
            return None
        ckpt = None
        if self.engine.value == "sam2":
            ckpt = Path(str(self.checkpoint.value or ""))
            if not ckpt.is_file():
                self.status.value = "the sam2 engine needs a SAM 2 checkpoint (.pt); choose it above, or use flow"
                return None
            self.settings.setValue("sam2", str(ckpt))
            from oct_wsss.napari._imports import preload_sam2

            preload_sam2()
        self.previous, self._cancel, self._failure = {}, False, None
        self.run_info = {"method": "propagate", "engine": self.engine.value, "from_bscan": k,
                         "min_confidence": float(self.min_confidence.value), "source": "napari"}  # sam2: the worker
        self.worker = _propagate_worker(np.asarray(image.data), np.array(labels.data), k, start, end, ckpt,
                                        float(self.min_confidence.value), lambda: self._cancel)
        self.worker.yielded.connect(lambda result: self._apply(labels, result, end - start))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._done)
        self.run_button.enabled, self.cancel_button.enabled, self.undo_button.enabled = False, True, False
        self.status.value = f"propagating B-scan {k} over {start}..{end} ({self.engine.value}) ..."
        self.worker.start()
        return self.worker

    def _apply(self, layer: Any, result: Any, total: int) -> None:
        """Write one propagated B-scan into the layer (undoable) and mark it proposed; accepted ones stay. A dict (the
        worker's first yield with the sam2 engine) joins this run's provenance: SAM 2's config, file and SHA-256."""
        from oct_wsss.propose.propagate import apply_page

        if isinstance(result, dict):
            self.run_info = {**self.run_info, **result}
            return
        i, records = result.index, self.session.records(layer)
        if i in records.accepted:
            return
        old = np.array(layer.data[i])
        new = old.copy()
        apply_page(new, result)
        self.previous.setdefault(i, (old, records.proposed.get(i), records.provenance.get(i)))
        write_page(layer, i, new)
        records.propose(i, new, self.run_info)
        conf = ", ".join(f"{c}: {v:.2f}" for c, v in result.confidence.items())
        self.status.value = f"B-scan {i} proposed ({len(self.previous)} of at most {total}; confidence {conf})"

    def _failed(self, err: BaseException) -> None:
        """A notification, and the reason kept for the status line once the worker has finished."""
        self._failure = str(err).splitlines()[0] if str(err) else type(err).__name__
        show_error(f"Propagation failed: {err}")

    def _done(self) -> None:
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.undo_button.enabled = bool(self.previous)
        what = f"failed ({self._failure}): " if self._failure is not None else "cancelled: " if self._cancel else ""
        done = ", ".join(map(str, sorted(self.previous)))
        self.status.value = (f"{what}{len(self.previous)} B-scans proposed ({done}); review and accept them"
                             if self.previous else f"{what}nothing propagated")

    def cancel(self, *_: Any) -> None:
        """Stop after the B-scan being propagated; what was written stays (Undo removes it)."""
        self._cancel = True

    def undo(self, *_: Any) -> None:
        """Put back the pages (and proposed records) the last propagation replaced, except on B-scans accepted since
        (their accept is undone in Review, through the store)."""
        layer = self.labels.value
        if layer is None or self.worker is not None:
            return
        records = self.session.records(layer)
        restored = sorted(set(self.previous) - records.accepted)
        for i in restored:
            page, record, info = self.previous[i]
            write_page(layer, i, page)
            for kept, value in ((records.proposed, record), (records.provenance, info)):
                if value is None:
                    kept.pop(i, None)
                else:
                    kept[i] = value
        accepted = sorted(set(self.previous) & records.accepted)
        self.status.value = f"undone: B-scans {', '.join(map(str, restored)) or 'none'} restored" + (
            f"; accepted since (undo in Review): {', '.join(map(str, accepted))}" if accepted else "")
        self.previous, self.undo_button.enabled = {}, False


@thread_worker(ignore_errors=True)  # errors become notifications (errored handler)
def _propagate_worker(data: np.ndarray, labels: np.ndarray, source: int, start: int, end: int, checkpoint: Path | None,
                      min_confidence: float, cancelled: Any):
    from oct_wsss.propose.propagate import flow_engine, propagate_stream

    try:
        if checkpoint is None:
            engine = flow_engine()
        else:
            from oct_wsss.propose.propagate_sam2 import build_video_predictor, sam2_engine, sam2_provenance

            yield {"sam2": sam2_provenance(checkpoint)}  # hashed here, off the main thread, before any B-scan
            engine = sam2_engine(build_video_predictor(checkpoint))  # built here, off the main thread
        yield from propagate_stream(data, labels, source, start, end, engine, min_confidence=min_confidence,
                                    cancel=cancelled)
    except RuntimeError as err:  # superqt's generator worker drops RuntimeErrors (no errored, no finished signal)
        raise ValueError(str(err)) from err
