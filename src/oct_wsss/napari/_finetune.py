"""The **Fine-tune** dock widget: corrections in the project, edit effort per model version, and a fine-tune run.

Thin: ``store.edit_effort`` counts how much of each model's proposals graders kept, removed and added, and
``training.finetune.finetune`` (what ``oct-wsss finetune --store P --from CKPT`` runs) trains in a ``thread_worker``
with a progress bar and Cancel. torch is imported only inside the worker. The new checkpoint is remembered as the
student's in Propose lesions, and **Re-propose unreviewed** runs it on the B-scans nobody has reviewed yet.
"""

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import napari.viewer
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox, Table
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSettings, QTimer

from oct_wsss.napari._imports import preload_method
from oct_wsss.napari._quantify import table_value
from oct_wsss.napari._remembered import remember, remembered
from oct_wsss.napari._session import session
from oct_wsss.store import CorrectionStore, StoreError, edit_effort
from oct_wsss.weights import bundled

EFFORT_HEADER = ["model", "B-scans", "kept", "removed", "added"]
EPOCH = re.compile(r"student epoch (\d+)")


class FinetuneWidget(Container):
    """Dock widget: project + parent student checkpoint -> a new checkpoint version, trained in the background."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.session.panels["Fine-tune"] = self
        self.settings = QSettings("napari-oct-wsss", "review")  # the Review widget's project
        self.propose_settings = QSettings("napari-oct-wsss", "propose")
        parent = remembered(self.propose_settings, "student", self.session.project) or str(bundled("student") or "")
        opened = self.session.store.root if self.session.store is not None else None  # Review's open project first
        self.project = FileEdit(label="project", mode="d", value=opened or self.settings.value("project", "") or "")
        self.parent_ckpt = FileEdit(label="parent student", mode="r", filter="*.safetensors", value=parent)
        self.epochs = SpinBox(label="epochs", min=1, max=500, value=10)
        self.device = ComboBox(label="device", choices=("auto", "cpu", "cuda"), value="auto")
        self.count = Label(value="")
        self.effort = Table(value=table_value([], EFFORT_HEADER))
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.repropose_button = PushButton(text="Re-propose unreviewed", enabled=False)
        self.status = Label(value="")
        self.extend([self.project, self.count, self.effort, self.parent_ckpt, self.epochs, self.device,
                     self.run_button, self.cancel_button, self.status, self.repropose_button])
        self.worker: Any = None
        self.result: Path | None = None
        self._cancel = False
        self._log: list[str] = []
        self._timer = QTimer()
        self._timer.setInterval(200)
        self.project.changed.connect(self.summarise)
        self.run_button.changed.connect(self.finetune)
        self.cancel_button.changed.connect(self.cancel)
        self.repropose_button.changed.connect(self.repropose)
        self.summarise()

    def _store(self) -> CorrectionStore | None:
        folder = Path(str(self.project.value or ""))
        if str(self.project.value) in ("", ".") or not folder.is_dir():
            return None
        return CorrectionStore(folder)

    def summarise(self, *_: Any) -> None:
        """Count the project's corrections and show the edit effort of each model version that proposed them."""
        try:
            store = self._store()
        except StoreError as err:
            self.count.value = str(err)
            return
        if store is None:
            self.count.value, self.effort.value = "choose the project folder", table_value([], EFFORT_HEADER)
            return
        accepted = store.corrections()
        volumes = len({c.volume for c in accepted})
        self.count.value = f"{len(accepted)} accepted B-scans in {volumes} volume(s)"
        rows = [[e.model, e.bscans, f"{e.kept_share:.0%}", f"{e.removed_share:.0%}", f"{e.added_share:.0%}"]
                for e in edit_effort(accepted)]
        self.effort.value = table_value(rows, EFFORT_HEADER)

    def finetune(self, *_: Any) -> Any:
        """Start fine-tuning; returns the worker (tests wait on it)."""
        parent = Path(str(self.parent_ckpt.value or ""))
        if self._store() is None:
            show_error("Fine-tune: choose the project folder that holds the accepted corrections")
            return None
        if not parent.is_file():
            show_error("Fine-tune: choose the student checkpoint to start from (.safetensors)")
            return None
        preload_method("student")  # first torch/torchvision imports on the main thread (see registry.preload)
        self._cancel, self._log, self.result = False, [], None
        bar = progress(total=self.epochs.value, desc="Fine-tuning the student")
        self.worker = _finetune_worker(str(self.project.value), str(parent), self.epochs.value, self.device.value,
                                       self._log.append, lambda: self._cancel)
        self.worker.returned.connect(self._finished)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(lambda: self._done(bar))
        self._timer.timeout.connect(lambda: self._poll(bar))
        self._timer.start()
        self.run_button.enabled, self.cancel_button.enabled, self.repropose_button.enabled = False, True, False
        self.status.value = "starting ..."
        self.worker.start()
        return self.worker

    def _poll(self, bar: Any) -> None:
        """Progress from the trainer's log lines (main thread; the worker only appends to a list)."""
        epochs = [int(m.group(1)) for line in self._log if (m := EPOCH.search(line))]
        done = max(epochs) + 1 if epochs else 0
        if done > bar.n:
            bar.update(done - bar.n)
        if self._log and self.cancel_button.enabled:
            self.status.value = self._log[-1]

    def _finished(self, result: tuple[Path, dict]) -> None:
        path, lineage = result
        self.result = path
        remember(self.propose_settings, "student", self.session.project, path)  # Propose's choice in this project
        propose = self.session.panels.get("Propose")
        if propose is not None:
            propose.refresh_checkpoints()
        before, after = lineage.get("metrics_before") or {}, lineage.get("metrics_after") or {}
        scores = (f"; held-out mIoU {before['miou']:.3f} → {after['miou']:.3f}"
                  if before.get("miou") is not None and after.get("miou") is not None else "")
        self.status.value = f"wrote {path.name}{scores}"
        show_info(f"Fine-tune: new checkpoint {path}{scores}; it is now the student's checkpoint in Propose lesions")
        self.repropose_button.enabled = True
        self.summarise()

    def _failed(self, err: BaseException) -> None:
        if type(err).__name__ == "TrainingCancelled":  # by class name: training/ imports torch
            show_info(f"Fine-tune: {err}; Fine-tune again resumes from there")
        else:
            show_error(f"Fine-tune failed: {err}")

    def _done(self, bar: Any) -> None:
        self._timer.stop()
        self._timer.timeout.disconnect()
        bar.close()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        if self.result is None:
            self.status.value = "cancelled" if self._cancel else "failed (see the notification)"

    def cancel(self, *_: Any) -> None:
        """Stop at the next batch; the resumable state is kept, so pressing Fine-tune again resumes."""
        self._cancel = True

    def repropose(self, *_: Any) -> Any:
        """Run Propose lesions with the new checkpoint on the B-scans not yet accepted or rejected."""
        propose = self.session.panels.get("Propose")
        if propose is None or self.result is None:
            show_error("Re-propose: open Plugins ▸ Propose lesions first")
            return None
        propose.method.value, propose.checkpoint.value, propose.range.value = "student", str(self.result), "all"
        return propose.propose(skip=set(self.session.decisions))


@thread_worker(ignore_errors=True)  # errors become notifications (errored handler)
def _finetune_worker(project: str, parent: str, epochs: int, device: str, log: Any, cancel: Any):
    from oct_wsss.training.finetune import DEFAULTS, finetune

    return finetune(project, parent, config=replace(DEFAULTS, epochs=epochs), device=device, log=log, cancel=cancel)
