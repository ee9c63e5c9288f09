"""The **Propose lesions** dock widget: pick image, method, checkpoint, device and B-scans; proposals stream in.

Thin by design: ``oct_wsss.propose.load_proposer`` and ``stream`` do the work in a ``thread_worker`` (the same calls
``oct-wsss propose`` makes); the widget turns each streamed B-scan into a slice of the "lesions (proposed)" layer.
B-scans the grader has accepted (``protected``) are never overwritten. No ``from __future__ import annotations``:
napari reads the ``Viewer`` annotation at run time to pass the viewer in.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox, create_widget
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QSettings

from oct_wsss.checkpoint import CheckpointError
from oct_wsss.classes import ONTOLOGY
from oct_wsss.napari._layers import ACCEPTED_KEY, PROPOSED_KEY, labels_layer
from oct_wsss.propose.registry import METHODS, load_proposer, preload, stream
from oct_wsss.volume import OctVolume

PROPOSED = "lesions (proposed)"
HRF_PROPOSED = "HRF (proposed)"
RANGES = ("all", "current", "from-to")


def legend_html() -> str:
    """The ontology's names in their colours, for the widget's legend."""
    def hex_colour(c: tuple[float, ...]) -> str:
        return "#" + "".join(f"{round(255 * v):02x}" for v in c[:3])

    rows = [f'<span style="color:{hex_colour(c.colour)}">■</span> {c.id} {c.name}' for c in ONTOLOGY[1:]]
    return "<br>".join(rows)


def fix_for(err: BaseException) -> str:
    """A one-line thing to try for a failed proposal, shown with the error."""
    text = str(err).lower()
    if isinstance(err, CheckpointError):
        return "choose a checkpoint file trained for this method (.safetensors)"
    if "out of memory" in text:
        return "try device 'cpu' or a smaller B-scan range"
    if "checkpoint" in text or "expected" in text:
        return "choose a checkpoint trained for this method (.safetensors)"
    if "cuda" in text or "mps" in text:
        return "choose device 'auto' or 'cpu'"
    return "check the image layer and the options"


class ProposeWidget(Container):
    """Dock widget: Propose runs in a worker thread with a progress bar and a Cancel button."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.settings = QSettings("napari-oct-wsss", "propose")
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.method = ComboBox(label="method", choices=sorted(METHODS), value="student" if "student" in METHODS
                               else sorted(METHODS)[0])
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors")
        self.device = ComboBox(label="device", choices=("auto", "cpu", "cuda"), value="auto")
        self.range = ComboBox(label="B-scans", choices=RANGES, value="all")
        self.first = SpinBox(label="from", min=0, max=10**6)
        self.last = SpinBox(label="to", min=0, max=10**6)
        self.threshold = FloatSpinBox(label="threshold τ", min=0.0, max=1.0, step=0.05, value=0.0,
                                      tooltip="0 keeps the checkpoint's own threshold (HRF: the stop probability)")
        self.iterations = SpinBox(label="HRF iterations", min=0, max=50, value=0,
                                  tooltip="most foci per B-scan; 0 keeps the checkpoint's (6)")
        self.sam2 = FileEdit(label="SAM 2 checkpoint", mode="r", filter="*.pt",
                             tooltip="a sam2.1 checkpoint file; without one HRF uses the classical region step")
        self.run_button = PushButton(text="Propose")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.legend = Label(value=legend_html())
        self.extend([self.image, self.method, self.checkpoint, self.device, self.range, self.first, self.last,
                     self.threshold, self.iterations, self.sam2, self.run_button, self.cancel_button, self.status,
                     self.legend])
        self.protected: Callable[[], set[int]] = self._accepted  # B-scans a proposal never overwrites
        self.worker: Any = None
        self._cancel = False
        self.method.changed.connect(self._restore_checkpoint)
        self.run_button.changed.connect(self.propose)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)
        self._restore_checkpoint()

    def _accepted(self) -> set[int]:
        """B-scans the Review widget marked accepted on this method's proposal layer."""
        if self.target_name not in self.viewer.layers:
            return set()
        return set(self.viewer.layers[self.target_name].metadata.get(ACCEPTED_KEY, set()))

    def _restore_checkpoint(self, *_: Any) -> None:
        saved = self.settings.value(f"checkpoint/{self.method.value}", "")
        if saved:
            self.checkpoint.value = saved
        hrf = self.method.value == "hrf"
        self.iterations.visible = self.sam2.visible = hrf
        if hrf and self.settings.value("sam2", ""):
            self.sam2.value = self.settings.value("sam2", "")

    def options(self) -> dict[str, Any]:
        """The proposer options the controls set (what ``oct-wsss propose`` takes as flags)."""
        options: dict[str, Any] = {"device": self.device.value, "threshold": self.threshold.value or None}
        if self.method.value == "hrf":
            sam2 = Path(str(self.sam2.value or ""))
            options.update(iterations=self.iterations.value or None,
                           sam2_checkpoint=sam2 if sam2.is_file() else None)
        return options

    @property
    def target_name(self) -> str:
        """HRF proposals get their own layer; every other method fills "lesions (proposed)"."""
        return HRF_PROPOSED if self.method.value == "hrf" else PROPOSED

    def bscans(self, n_bscans: int) -> list[int]:
        """The B-scans the range control names, in range, minus the protected ones."""
        if self.range.value == "current":
            todo = [int(self.viewer.dims.current_step[0])]
        elif self.range.value == "from-to":
            todo = list(range(max(0, self.first.value), min(n_bscans - 1, self.last.value) + 1))
        else:
            todo = list(range(n_bscans))
        keep = self.protected()
        return [i for i in todo if 0 <= i < n_bscans and i not in keep]

    def proposed_layer(self, shape: tuple[int, ...], scale: tuple[float, ...]) -> Any:
        """The method's proposal Labels layer for ``shape``, created (empty) on first use."""
        name = self.target_name
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
            return self.viewer.layers[name]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data, kwargs, _ = labels_layer(np.zeros(shape, np.uint8), tuple(scale), name)
        return self.viewer.add_labels(data, **kwargs)

    def propose(self, *_: Any) -> Any:
        """Start a proposal run; returns the worker (tests wait on it)."""
        layer = self.image.value
        if layer is None:
            show_error("Propose: open an OCT volume first (File > Open, or a sample)")
            return None
        ckpt = str(self.checkpoint.value or "")
        if not Path(ckpt).is_file():
            show_error(f"Propose: choose a {self.method.value} checkpoint (.safetensors) first")
            return None
        data = np.asarray(layer.data)
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            show_error(f"Propose: the image layer must be a B-scan or a volume of B-scans; it is {data.shape}")
            return None
        scale = [float(s) for s in layer.scale[-3:]]
        volume = OctVolume(data, spacing_mm=tuple(([1.0] * 3 + scale)[-3:]))
        todo = self.bscans(volume.n_bscans)
        if not todo:
            show_info("Propose: every B-scan in that range is already accepted")
            return None
        self.settings.setValue(f"checkpoint/{self.method.value}", ckpt)
        options = self.options()
        if options.get("sam2_checkpoint") is not None:
            self.settings.setValue("sam2", str(options["sam2_checkpoint"]))
        target = self.proposed_layer(volume.shape, volume.spacing_mm)
        target.metadata["oct_wsss_provenance"] = {"method": self.method.value, "checkpoint": Path(ckpt).name}
        self._cancel = False
        preload(self.method.value)  # on the main thread: some first imports crash in a worker thread
        bar = progress(total=len(todo), desc=f"Proposing ({self.method.value})")
        self.worker = _propose_worker(self.method.value, ckpt, options, volume, todo, lambda: self._cancel)
        self.worker.yielded.connect(lambda result: self._show(target, result, bar))
        self.worker.errored.connect(lambda err: show_error(f"Propose failed: {err} — {fix_for(err)}"))
        self.worker.warned.connect(
            lambda info: show_warning(f"Propose: {info[0] if isinstance(info, tuple) else info}"))
        self.worker.finished.connect(lambda: self._done(bar))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"proposing {len(todo)} B-scans ..."
        self.worker.start()
        return self.worker

    def _show(self, target: Any, result: Any, bar: Any) -> None:
        if result.index in self.protected():
            return
        target.data[result.index] = result.labels
        target.metadata.setdefault(PROPOSED_KEY, {})[result.index] = result.labels.copy()
        target.refresh()
        bar.update(1)
        if self.cancel_button.enabled:  # still running (queued signals may arrive after the worker finished)
            self.status.value = f"B-scan {result.index} proposed"

    def _done(self, bar: Any) -> None:
        bar.close()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.status.value = "cancelled" if self._cancel else "done"

    def cancel(self, *_: Any) -> None:
        """Stop after the batch in flight; finished B-scans stay in the layer."""
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()


@thread_worker(ignore_errors=True)  # errors become notifications (errored handler)
def _propose_worker(method: str, checkpoint: str, options: dict[str, Any], volume: OctVolume, todo: list[int],
                    cancelled: Callable[[], bool]):
    proposer = load_proposer(method, checkpoint, **options)
    yield from stream(proposer, volume, todo, cancel=cancelled)
