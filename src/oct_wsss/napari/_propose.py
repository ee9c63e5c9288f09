"""The **Propose lesions** dock widget: pick image, method, checkpoint, device and B-scans; proposals stream in.

Thin by design: ``oct_wsss.propose.load_proposer`` and ``stream`` do the work in a ``thread_worker`` (the same calls
``oct-wsss propose`` makes); the widget turns each streamed B-scan into a slice of the "lesions (proposed)" layer.
B-scans the grader has accepted (``protected``, from the viewer's session) are never overwritten. An existing
segmentation can be imported into the same layer instead (``_import``; ``oct-wsss import`` on the command line).
No ``from __future__ import annotations``: napari reads the ``Viewer`` annotation at run time to pass the viewer in.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import Notification, notification_manager, show_error, show_info, show_warning
from qtpy.QtCore import QSettings

import oct_wsss.weights as weights
from oct_wsss.checkpoint import CheckpointError
from oct_wsss.classes import ONTOLOGY
from oct_wsss.napari._confidence import ConfidenceLayers
from oct_wsss.napari._import import ImportRow
from oct_wsss.napari._imports import preload_method
from oct_wsss.napari._layers import PROPOSED, is_synthetic, labels_layer, refresh_bscan
from oct_wsss.napari._remembered import forget, recent, remember, remembered
from oct_wsss.napari._run import RunProgress, WorkerFailed, done_status
from oct_wsss.napari._session import session
from oct_wsss.propose.domain import phantom_warning
from oct_wsss.propose.registry import (
    LAYER_USERS,
    METHODS,
    load_proposer,
    proposal_provenance,
    stream,
    timings,
    to_propose,
)
from oct_wsss.store.store import EMBEDDINGS_DIR
from oct_wsss.volume import OctVolume

HRF_PROPOSED = "HRF (proposed)"
RANGES = ("all", "current", "from-to")
OTHER = "other file (below)"


def legend_html() -> str:
    """The ontology's names in their colours, for the widget's legend."""
    def hex_colour(c: tuple[float, ...]) -> str:
        return "#" + "".join(f"{round(255 * v):02x}" for v in c[:3])

    rows = [f'<span style="color:{hex_colour(c.colour)}">■</span> {c.id} {c.name}' for c in ONTOLOGY[1:]]
    return "<br>".join(rows)


#: how a method's checkpoint is named in messages, with its article ("an AGM checkpoint", not "a agm checkpoint")
CHECKPOINT_NAMES = {"agm": "an AGM", "dfp": "a DFP", "hrf": "an HRF", "student": "a student"}


def checkpoint_name(method: str) -> str:
    """'an AGM checkpoint', 'a student checkpoint': the method's checkpoint with the right article, for messages."""
    return f"{CHECKPOINT_NAMES.get(method, f'a {method}')} checkpoint"


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
        self.session = session(viewer)
        self.session.panels["Propose"] = self
        self.settings = QSettings("napari-oct-wsss", "propose")
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.method = ComboBox(label="method", choices=sorted(METHODS), value="student" if "student" in METHODS
                               else sorted(METHODS)[0])
        self.known = ComboBox(label="checkpoint", choices=[OTHER], value=OTHER,
                              tooltip="bundled checkpoints first (for a real image the real-data one, for the "
                                      "synthetic phantom the demo one), then the ones used or fine-tuned recently")
        self.checkpoint = FileEdit(label="file", mode="r", filter="*.safetensors")
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
        self.layers = FileEdit(label="layer model", mode="r", filter="*.safetensors",
                               tooltip="the layer checkpoint behind a student's or AGM's retina filter (as "
                                       "oct-wsss propose --layers); empty: the bundled one")
        self.confidence = CheckBox(label="confidence layers", value=False,
                                   tooltip="one Image layer per class with the model's per-pixel score")
        self.run_button = PushButton(text="Propose")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.legend = Label(value=legend_html())
        self.importer = ImportRow(self)
        self.extend([self.image, self.method, self.known, self.checkpoint, self.device, self.range, self.first,
                     self.last, self.threshold, self.iterations, self.sam2, self.layers, self.confidence,
                     self.run_button, self.cancel_button, self.status, self.importer, self.legend])
        self.protected: Callable[[], set[int]] = self._accepted  # B-scans a proposal never overwrites
        self.worker: Any = None
        self.scores: ConfidenceLayers | None = None
        self.provenance: dict[str, Any] = {}  # the running proposal's, recorded per B-scan as results arrive
        self._cancel = False
        self._failure: str | None = None  # the first line of the run's error, so the status never says "done"
        self._running = ("", "")  # (method, checkpoint) of the run in flight: remembered once loaded, else forgotten
        self.method.changed.connect(self._restore_checkpoint)
        self.method.changed.connect(self.prepare_layer)
        self.known.changed.connect(self._pick_known)
        self.checkpoint.changed.connect(self._sync_known)
        self.run_button.changed.connect(self.propose)
        self.cancel_button.changed.connect(self.cancel)
        self.image.changed.connect(self.prepare_layer)
        self.image.changed.connect(self._image_changed)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)
        self._restore_checkpoint()
        self.prepare_layer()

    def _accepted(self) -> set[int]:
        """B-scans the Review widget marked accepted on this method's proposal layer."""
        if self.target_name not in self.viewer.layers:
            return set()
        return set(self.session.records(self.viewer.layers[self.target_name]).accepted)

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, path) of the method's bundled checkpoints (the real-data one first unless the image is synthetic),
        then recent ones, then 'other file'."""
        method = self.method.value
        tagged = [("demo" if path.name.startswith("demo-") else "real", path)
                  for path in weights.offered(method, synthetic=is_synthetic(self.image.value))]
        choices = [(f"{tag}: {path.name}", str(path)) for tag, path in tagged]
        saved = remembered(self.settings, method, self.session.project)
        for path in ([saved] if saved else []) + recent(self.settings, method):
            if Path(path).is_file() and path not in [p for _, p in choices]:
                choices.append((Path(path).name, path))
        return choices + [(OTHER, OTHER)]

    def refresh_checkpoints(self) -> None:
        """Relist the checkpoints (after a fine-tune registered a new version, or Review opened a project) and select
        the remembered one."""
        self._restore_checkpoint()

    def _sync_known(self, *_: Any) -> None:
        path = str(self.checkpoint.value or "")
        self.known.value = path if path in self.known.choices else OTHER

    def _pick_known(self, *_: Any) -> None:
        if self.known.value != OTHER:
            self.checkpoint.value = self.known.value

    @staticmethod
    def _bundled() -> set[str]:
        return {str(p) for p in weights.WEIGHTS_DIR.glob("*.safetensors")}

    def _image_changed(self, *_: Any) -> None:
        """A bundled (or no) checkpoint follows the image, real or synthetic; a file the user chose stays."""
        current = str(self.checkpoint.value or "")
        if current in self._bundled() or not Path(current).is_file():
            self._restore_checkpoint()

    def _known_choices(self, *_: Any) -> list[tuple[str, str]]:
        """The checkpoint list as a callable, so napari's ``reset_choices`` on layer events relists it (a plain
        list would be reset to the widget's initial one, leaving only 'other file')."""
        return self.checkpoint_choices()

    def _restore_checkpoint(self, *_: Any) -> None:
        with self.known.changed.blocked():
            self.known.choices = []  # else magicgui keeps the selected item in front
            self.known.choices = self._known_choices
        paths = list(self.known.choices)  # what the callable just listed, in order
        saved = remembered(self.settings, self.method.value, self.session.project)
        if saved in self._bundled():  # bundled choices follow the image; own files stay
            saved = paths[0]
        self.known.value = saved if saved in paths else paths[0]
        if saved:
            self.checkpoint.value = saved
        self._pick_known()
        hrf = self.method.value == "hrf"
        self.iterations.visible = self.sam2.visible = hrf
        self.layers.visible = self.method.value in LAYER_USERS
        if hrf and self.settings.value("sam2", ""):
            self.sam2.value = self.settings.value("sam2", "")

    def options(self) -> dict[str, Any]:
        """The proposer options the controls set (what ``oct-wsss propose`` takes as flags)."""
        options: dict[str, Any] = {"device": self.device.value, "threshold": self.threshold.value or None}
        layers = Path(str(self.layers.value or ""))
        if self.method.value in LAYER_USERS and layers.is_file():
            options["layers_checkpoint"] = layers
        if self.method.value == "hrf":
            sam2 = Path(str(self.sam2.value or ""))
            options.update(iterations=self.iterations.value or None,
                           sam2_checkpoint=sam2 if sam2.is_file() else None)
            if sam2.is_file() and self.session.store is not None:  # SAM 2's embeddings kept in the open project
                options["sam2_cache"] = self.session.store.root / EMBEDDINGS_DIR
        return options

    @property
    def target_name(self) -> str:
        """HRF proposals get their own layer; every other method fills "lesions (proposed)"."""
        return HRF_PROPOSED if self.method.value == "hrf" else PROPOSED

    def bscans(self, n_bscans: int, skip: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """The B-scans the range control names, in range, minus the protected ones (and ``skip``)."""
        if self.range.value == "current":
            todo = [int(self.viewer.dims.current_step[0])]
        elif self.range.value == "from-to":
            todo = list(range(max(0, self.first.value), min(n_bscans - 1, self.last.value) + 1))
        else:
            todo = list(range(n_bscans))
        return [i for i in to_propose(todo, self.protected() | set(skip)) if 0 <= i < n_bscans]

    def proposed_layer(self, shape: tuple[int, ...], scale: tuple[float, ...], name: str | None = None) -> Any:
        """The Labels layer ``name`` (default: the method's proposal layer) for ``shape``, created empty if need be."""
        name = name or self.target_name
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == shape:
            return self.viewer.layers[name]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        data, kwargs, _ = labels_layer(np.zeros(shape, np.uint8), tuple(scale), name)
        return self.viewer.add_labels(data, **kwargs)

    def prepare_layer(self, *_: Any) -> None:
        """Make the proposal layer as soon as an image is chosen: creating a layer blocks napari for up to a second
        on a slow machine, which should not happen while a proposal streams in."""
        layer = self.image.value
        if layer is not None and np.ndim(layer.data) == 3:
            self.proposed_layer(tuple(layer.data.shape), tuple(float(s) for s in layer.scale[-3:]))

    def propose(self, *_: Any, skip: set[int] | frozenset[int] = frozenset()) -> Any:
        """Start a proposal run (leaving out ``skip``, e.g. the reviewed B-scans); returns the worker."""
        layer = self.image.value
        if layer is None:
            show_error("Propose: open an OCT volume first (File > Open, or a sample)")
            return None
        ckpt = str(self.checkpoint.value or "")
        if not Path(ckpt).is_file():
            show_error(f"Propose: choose {checkpoint_name(self.method.value)} (.safetensors) first")
            return None
        data = np.asarray(layer.data)
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            show_error(f"Propose: the image layer must be a B-scan or a volume of B-scans; it is {data.shape}")
            return None
        scale = [float(s) for s in layer.scale[-3:]]
        volume = OctVolume(data, spacing_mm=tuple(([1.0] * 3 + scale)[-3:]))
        todo = self.bscans(volume.n_bscans, skip)
        if not todo:
            show_info("Propose: every B-scan in that range is already accepted")
            return None
        self._warn_phantom(layer, ckpt)
        options = self.options()
        if options.get("sam2_checkpoint") is not None:
            self.settings.setValue("sam2", str(options["sam2_checkpoint"]))
        target = self.proposed_layer(volume.shape, volume.spacing_mm)
        self.provenance = {"method": self.method.value}  # until the worker has loaded the model
        self.scores = ConfidenceLayers(self.viewer, volume.shape, volume.spacing_mm) if self.confidence.value else None
        self._cancel, self._failure, self._running = False, None, (self.method.value, ckpt)
        preload_method(self.method.value)  # on the main thread: some first imports crash in a worker thread
        bar = RunProgress(len(todo), f"Proposing ({self.method.value})")
        self.worker = _propose_worker(self.method.value, ckpt, options, volume, todo, lambda: self._cancel,
                                      self.scores is not None)
        self.worker.yielded.connect(lambda result: self._show(target, result, bar))
        self.worker.errored.connect(self._failed)
        self.worker.warned.connect(
            lambda info: show_warning(f"Propose: {info[0] if isinstance(info, tuple) else info}"))
        self.worker.finished.connect(lambda: self._done(bar))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"proposing {len(todo)} B-scans ..."
        self.worker.start()
        return self.worker

    def _warn_phantom(self, layer: Any, ckpt: str) -> None:
        """Warn, once per checkpoint and image in this session, that a phantom-only checkpoint meets a real scan."""
        pairing = (ckpt, str(layer.name))
        message = None if pairing in self.session.warned else phantom_warning(ckpt, not is_synthetic(layer))
        if message is not None:
            self.session.warned.add(pairing)
            show_warning(f"Propose: {message}")

    def _failed(self, err: BaseException) -> None:
        """A notification with the fix; out of GPU memory (after the library halved the batch) offers the CPU. A
        checkpoint that failed to load is forgotten, so it is not preselected again."""
        err = err.cause if isinstance(err, WorkerFailed) else err
        self._failure = str(err).splitlines()[0] if str(err) else type(err).__name__
        method, path = self._running
        if isinstance(err, CheckpointError) and (err.path is None or Path(err.path) == Path(path)):  # not the layers'
            forget(self.settings, method, self.session.project, path)
            self._restore_checkpoint()
        message = f"Propose failed: {err} — {fix_for(err)}"
        if "out of memory" not in str(err).lower() or self.device.value == "cpu":
            show_error(message)
            return
        notification_manager.dispatch(Notification(message, "error", actions=[("Run on CPU", self.run_on_cpu)]))

    def run_on_cpu(self, *_: Any) -> Any:
        """Switch the device to CPU and propose again (the out-of-memory notification's action)."""
        self.device.value = "cpu"
        return self.propose()

    def _show(self, target: Any, result: Any, bar: Any) -> None:
        if isinstance(result, tuple):  # ("classes", ids): the model is loaded; its confidence layers can be made
            kind, value = result
            if kind == "provenance":  # the same record `oct-wsss propose` writes: checkpoint SHA-256, parameters
                self.provenance = value
            elif kind == "timings":  # the run's B-scans share one record: each gets the run's timings
                self.provenance["timings"] = value
            else:  # the model has loaded: its checkpoint is the one to preselect in this project from now on
                remember(self.settings, self._running[0], self.session.project, self._running[1])
                if self.scores is not None:
                    self.scores.prepare(value)
            return
        if result.index in self.protected():
            return
        if self.scores is not None and result.scores is not None:
            self.scores.put(result.index, result.scores)
        target.data[result.index] = result.labels
        self.session.records(target).propose(result.index, result.labels, self.provenance)
        refresh_bscan(self.viewer, target, result.index)
        bar.step()
        if self.cancel_button.enabled:  # still running (queued signals may arrive after the worker finished)
            self.status.value = f"B-scan {result.index} proposed"

    def _done(self, bar: Any) -> None:
        bar.close()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.status.value = done_status(self._cancel, self._failure)

    def cancel(self, *_: Any) -> None:
        """Stop after the batch in flight; finished B-scans stay in the layer."""
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()


@thread_worker(ignore_errors=True)  # errors become notifications (errored handler)
def _propose_worker(method: str, checkpoint: str, options: dict[str, Any], volume: OctVolume, todo: list[int],
                    cancelled: Callable[[], bool], keep_scores: bool = False):
    try:
        proposer = load_proposer(method, checkpoint, **options)  # built here, off the main thread
        yield ("classes", tuple(proposer.classes))
        yield ("provenance", {**proposal_provenance(proposer, volume, todo, None), "source": "napari"})
        start = time.perf_counter()  # as ``propose`` times it: the B-scans, not the model's loading
        yield from stream(proposer, volume, todo, cancel=cancelled, keep_scores=keep_scores)
        yield ("timings", timings(time.perf_counter() - start, len(todo)))
    except RuntimeError as err:  # superqt's generator worker drops RuntimeErrors (no errored, no finished signal)
        raise WorkerFailed(err) from err
