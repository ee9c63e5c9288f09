"""The **Propagate** dock widget: carry the current B-scan's labels to its neighbours over a chosen range, B-scan by
B-scan, with progress, Cancel and Undo (docs/propagation.md).

Thin: ``propose.propagate.propagate_stream`` does the work in a ``thread_worker``; each propagated B-scan is written
into the lesions layer through ``data_setitem`` (so napari's Ctrl-Z undoes it too) and recorded as *proposed* in the
viewer's session, never accepted: the Review widget still accepts it. Accepted B-scans are left as they are.
With a project open (Review), each page is also a *proposed* version in the store (``CorrectionStore.propose``, one
``run`` per propagation): Undo and Redo of the last propagation go through the store's versions
(``undo_run`` / ``redo_run``) and survive reopening the project; B-scans decided since are left to Review's Undo.
Without a project, Undo puts back the pages kept in memory and there is no Redo.
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

from oct_wsss.napari._layers import follow_proposals, write_page
from oct_wsss.napari._session import session
from oct_wsss.napari._versions import show_version
from oct_wsss.store import StoreError, new_run_id


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
        follow_proposals(viewer, self.labels)
        self.start = SpinBox(label="from B-scan", min=0, max=9999)
        self.end = SpinBox(label="to B-scan", min=0, max=9999)
        self.engine = ComboBox(label="engine", choices=["flow", "sam2"], value="flow")
        self.checkpoint = FileEdit(label="SAM 2 checkpoint", mode="r", filter="*.pt",
                                   value=self.settings.value("sam2", "") or "")
        self.min_confidence = FloatSpinBox(label="stop below confidence", min=0.0, max=1.0, step=0.05, value=0.5)
        self.run_button = PushButton(text="Propagate current B-scan")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.undo_button = PushButton(text="Undo last propagation", enabled=False)
        self.redo_button = PushButton(text="Redo last propagation", enabled=False,
                                      tooltip="needs a project open in Review (propagations are kept there)")
        self.status = Label(value="draw or correct a B-scan, choose the range, Propagate")
        self.status.native.setWordWrap(True)
        self.extend([self.image, self.labels, self.start, self.end, self.engine, self.checkpoint, self.min_confidence,
                     self.run_button, self.cancel_button, self.undo_button, self.redo_button, self.status])
        self.worker: Any = None
        self.previous: dict[int, tuple[np.ndarray, Any, Any]] = {}  # B-scan -> (page, proposed, provenance) before
        self.run_info: dict[str, Any] = {}  # what the running propagation records as each B-scan's provenance
        self.run: str | None = None  # the store's id of the last propagation (with a project open)
        self._pixels: np.ndarray | None = None  # the running propagation's B-scans, stored beside each page
        self._cancel = False
        self._failure: str | None = None  # the run's error, so the status says failed, not what was proposed only
        self.run_button.changed.connect(self.propagate)
        self.cancel_button.changed.connect(self.cancel)
        self.undo_button.changed.connect(self.undo)
        self.redo_button.changed.connect(self.redo)
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
        review = self.session.panels.get("Review")
        if self.session.store is None and review is not None and review.project_chosen():
            review.open()  # the pages are kept in the project: undo and redo survive reopening it
        self.previous, self._cancel, self._failure = {}, False, None
        self.run = new_run_id() if self.session.store is not None else None
        self.run_info = {"method": "propagate", "engine": self.engine.value, "from_bscan": k,
                         "min_confidence": float(self.min_confidence.value), "source": "napari",
                         **({"run": self.run} if self.run else {})}  # sam2: the worker adds its checkpoint
        self._pixels = np.asarray(image.data)
        self.worker = _propagate_worker(self._pixels, np.array(labels.data), k, start, end, ckpt,
                                        float(self.min_confidence.value), lambda: self._cancel)
        self.worker.yielded.connect(lambda result: self._apply(labels, result, end - start))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._done)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.undo_button.enabled = self.redo_button.enabled = False
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
        before = (old, records.proposed.get(i), records.provenance.get(i))
        if not self._keep(i, new, before):
            return
        self.previous.setdefault(i, before)
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
        if (review := self.session.panels.get("Review")) is not None:  # its strip marks the propagated B-scans
            review.refresh_status()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._show_history()
        what = f"failed ({self._failure}): " if self._failure is not None else "cancelled: " if self._cancel else ""
        done = ", ".join(map(str, sorted(self.previous)))
        self.status.value = (f"{what}{len(self.previous)} B-scans proposed ({done}); review and accept them"
                             if self.previous else f"{what}nothing propagated")

    def cancel(self, *_: Any) -> None:
        """Stop after the B-scan being propagated; what was written stays (Undo removes it)."""
        self._cancel = True

    def _keep(self, i: int, page: np.ndarray, before: tuple[np.ndarray, Any, Any]) -> bool:
        """Record page ``i`` as a proposed version of this run in the open project (what it replaced beside it);
        False, with the reason shown, when the store refuses it (then the page is not written either)."""
        s = self.session
        if s.store is None or self.run is None:
            return True
        old, record, info = before
        previous = {"page": old} if record is None else {"page": old, "proposal": record}
        try:
            s.store.propose(s.volume_id, i, page, run=self.run, image=self._pixels[i], previous=previous,
                            proposal_info={**self.run_info, "replaced": info})
        except (StoreError, ValueError) as err:
            show_error(f"Propagation: B-scan {i} not kept: {err}")
            return False
        return True

    def refresh(self) -> None:
        """Follow the open project's last propagation (Review calls this when it opens a project)."""
        s = self.session
        run = None if s.store is None else s.store.last_run(s.volume_id)
        if run is not None:  # else a propagation made before the project opened keeps its in-memory Undo
            self.run, self.previous = run, {}
        self._show_history()

    def _show_history(self) -> None:
        """Undo / Redo enabled where the last propagation has pages to take back or bring back."""
        s = self.session
        if s.store is not None and self.run is not None:
            undo, redo = s.store.run_moves(s.volume_id, self.run)
            self.undo_button.enabled, self.redo_button.enabled = undo > 0, redo > 0
        else:
            self.undo_button.enabled, self.redo_button.enabled = bool(self.previous), False

    def undo(self, *_: Any) -> None:
        """Take back the last propagation: its pages, except on B-scans decided since (Review's Undo does those)."""
        layer = self.labels.value
        if layer is None or self.worker is not None:
            return
        s = self.session
        if s.store is not None and self.run is not None:
            undone = self._step_run("undo")
        else:
            undone = self._undo_in_memory(layer)
        left = sorted(set(self.previous) - set(undone)) if self.previous else []
        self.status.value = f"undone: B-scans {', '.join(map(str, undone)) or 'none'} restored" + (
            f"; decided since (undo in Review): {', '.join(map(str, left))}" if left else "")
        self.previous = {}
        self._show_history()

    def redo(self, *_: Any) -> None:
        """Bring back the last propagation's pages where what they replaced is in effect again (a project is open)."""
        if self.labels.value is None or self.worker is not None or self.session.store is None or self.run is None:
            return
        redone = self._step_run("redo")
        self.status.value = f"redone: B-scans {', '.join(map(str, redone)) or 'none'} proposed again"
        self._show_history()

    def _step_run(self, action: str) -> list[int]:
        """Undo or redo the last run in the store and show each B-scan's version in effect; the B-scans moved."""
        s, layer = self.session, self.labels.value
        mine = {c.bscan: c for c in s.store.corrections(s.volume_id, status=None) if c.run == self.run}
        moved = getattr(s.store, f"{action}_run")(s.volume_id, self.run)
        for i, c in moved.items():
            show_version(s, layer, i, c, mine.get(i))
        if (review := s.panels.get("Review")) is not None:
            review.refresh_status()
        return sorted(moved)

    def _undo_in_memory(self, layer: Any) -> list[int]:
        """Put back the pages (and proposed records) kept before the last propagation, except on B-scans accepted
        since (no project open)."""
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
        if (review := self.session.panels.get("Review")) is not None:
            review.refresh_status()
        return restored


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
