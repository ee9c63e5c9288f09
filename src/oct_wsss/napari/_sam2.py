"""The **SAM 2 assist** dock widget: positive/negative points or a box on the current B-scan -> a SAM 2 mask painted
into the chosen class of the lesions layer (undoable with napari's undo, Ctrl-Z).

Thin: ``propose.sam2_assist.Sam2Assist`` builds SAM 2 from the user's checkpoint, caches each B-scan's embedding and
answers prompts; it runs in a ``thread_worker`` (torch is imported only there and by the preload). With a project
open (Review) the embeddings also go to ``PROJECT/sam2-embeddings``, so reopening the volume reads them back.
Without a SAM 2 checkpoint the widget says where to get one; nothing is downloaded.
"""

import weakref
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSettings

from oct_wsss.classes import ONTOLOGY
from oct_wsss.napari._layers import follow_proposals
from oct_wsss.napari._session import session
from oct_wsss.store.store import EMBEDDINGS_DIR

POSITIVE, NEGATIVE, BOX = "SAM 2 positive", "SAM 2 negative", "SAM 2 box"
HOW = ("SAM 2 assist needs a SAM 2 checkpoint file, e.g. sam2.1_hiera_tiny.pt from the SAM 2 release "
       "(github.com/facebookresearch/sam2, 'Download checkpoints'); choose it above. Nothing is downloaded.")


class Sam2Widget(Container):
    """Dock widget: prompt layers on the image, Segment (or automatic on each new point), mask into the class."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.settings = QSettings("napari-oct-wsss", "propose")  # the SAM 2 checkpoint is shared with HRF
        self.checkpoint = FileEdit(label="SAM 2 checkpoint", mode="r", filter="*.pt",
                                   value=self.settings.value("sam2", "") or "")
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="lesion labels")
        follow_proposals(viewer, self.labels)
        self.lesion = ComboBox(label="class", choices=[(c.name, c.id) for c in ONTOLOGY[1:]], value=1)
        self.auto = CheckBox(text="segment on each new point", value=True)
        self.prompts_button = PushButton(text="Add prompt layers (points ±, box)")
        self.segment_button = PushButton(text="Segment current B-scan")
        self.clear_button = PushButton(text="Clear prompts")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.checkpoint, self.image, self.labels, self.lesion, self.prompts_button, self.auto,
                     self.segment_button, self.clear_button, self.status])
        self.assist: Any = None
        self.built_for: tuple[Any, ...] = ()  # (checkpoint, its mtime and size, cache folder) the assist was built for
        self.hashed: tuple[Any, str] | None = None  # (weak reference to the volume, its hash) for the disk cache
        self.worker: Any = None
        self.busy = False
        self.last: dict[str, Any] = {}
        self.prompts_button.changed.connect(self.add_prompt_layers)
        self.segment_button.changed.connect(self.segment)
        self.clear_button.changed.connect(self.clear)
        self.checkpoint.changed.connect(self._explain)
        for widget in (self.image, self.labels):
            viewer.layers.events.inserted.connect(widget.reset_choices)
            viewer.layers.events.removed.connect(widget.reset_choices)
        self._explain()

    def _checkpoint(self) -> Path | None:
        path = Path(str(self.checkpoint.value or ""))
        return path if str(self.checkpoint.value) not in ("", ".") and path.is_file() else None

    def _explain(self, *_: Any) -> None:
        self.status.value = HOW if self._checkpoint() is None else "add prompts on the current B-scan"
        self.segment_button.enabled = self._checkpoint() is not None

    def add_prompt_layers(self, *_: Any) -> None:
        """A positive (green) and a negative (red) Points layer and a Shapes layer for a box, at the image's scale."""
        image = self.image.value
        if image is None:
            show_error("SAM 2: open an OCT volume first")
            return
        scale = image.scale
        for name, colour in ((NEGATIVE, "red"), (POSITIVE, "lime")):
            if name not in self.viewer.layers:
                layer = self.viewer.add_points(np.zeros((0, image.ndim)), name=name, scale=scale, size=6,
                                               face_color=colour, border_color="white", ndim=image.ndim)
                layer.events.data.connect(self._point_added)
        if BOX not in self.viewer.layers:
            self.viewer.add_shapes(name=BOX, ndim=image.ndim, scale=scale, edge_color="yellow",
                                   face_color="transparent", edge_width=2)
        self.viewer.layers.selection.active = self.viewer.layers[POSITIVE]
        self.viewer.layers[POSITIVE].mode = "add"

    def _point_added(self, event: Any = None) -> None:
        if self.auto.value and getattr(event, "action", "added") in ("added", None):
            self.segment()

    def prompt(self, bscan: int) -> Any:
        """The prompt on ``bscan``: points of the two Points layers and the last box drawn on it (pixels)."""
        from oct_wsss.propose.sam2_assist import Prompt

        points, labels = [], []
        for name, label in ((POSITIVE, 1), (NEGATIVE, 0)):
            if name in self.viewer.layers:
                for z, r, c in np.asarray(self.viewer.layers[name].data)[:, -3:]:
                    if round(z) == bscan:
                        points.append((float(r), float(c)))
                        labels.append(label)
        box = None
        if BOX in self.viewer.layers:
            for shape in self.viewer.layers[BOX].data:
                vertices = np.asarray(shape)[:, -3:]
                if np.all(np.round(vertices[:, 0]) == bscan):
                    box = (*vertices[:, 1:].min(0), *vertices[:, 1:].max(0))
        return Prompt(tuple(points), tuple(labels), box)

    def segment(self, *_: Any) -> Any:
        """SAM 2 on the current B-scan's prompts (in a worker); the mask goes into the chosen class. The worker."""
        ckpt, image, labels = self._checkpoint(), self.image.value, self.labels.value
        if ckpt is None:
            show_info(HOW)
            return None
        if image is None or labels is None:
            show_error("SAM 2: choose the OCT image and the lesion labels layer")
            return None
        if self.busy:  # one prompt at a time (a queued worker may not have started yet)
            return None
        from oct_wsss.napari._imports import preload_sam2

        preload_sam2()  # torch and SAM 2 imported on the main thread
        i = int(self.viewer.dims.current_step[0])
        try:
            prompt = self.prompt(i)
        except ValueError as err:
            self.status.value = f"B-scan {i}: {err}"
            return None
        self.settings.setValue("sam2", str(ckpt))
        key, store = (id(image), i), self.session.store
        cache = None if store is None else store.root / EMBEDDINGS_DIR
        self.worker = _segment_worker(self, str(ckpt), image.data, i, prompt, key, cache)
        self.worker.returned.connect(lambda out: self._paint(labels, i, *out))
        self.worker.errored.connect(lambda err: self._failed(i, err))
        self.worker.finished.connect(self._idle)
        self.busy, self.last = True, {}
        how = "read from the project or computed once per B-scan" if cache is not None else "once per B-scan"
        self.status.value = f"B-scan {i}: computing the image embedding ({how}) ..." \
            if self.assist is None or key not in self.assist.backend.cache else f"B-scan {i}: segmenting ..."
        self.worker.start()
        return self.worker

    def _paint(self, layer: Any, i: int, mask: np.ndarray, score: float, embedded: bool, read: bool) -> None:
        from oct_wsss.propose.sam2_assist import paint

        class_id = int(self.lesion.value)
        rows, cols = paint(layer.data[i], mask, class_id)
        if len(rows):
            layer.data_setitem((np.full(len(rows), i), rows, cols), class_id)  # recorded for napari's undo
        a = self.assist
        self.last = {"bscan": i, "pixels": int(mask.sum()), "score": score, "embed_s": a.last_embed_s if embedded
                     else None, "prompt_ms": 1000 * a.last_prompt_s}
        embed = (f"embedding {a.last_embed_s:.1f} s" if embedded else "embedding read from the project" if read
                 else "embedding cached")
        self.status.value = (f"B-scan {i}: {int(mask.sum())} px → {ONTOLOGY[class_id].key.upper()} (score {score:.2f};"
                             f" {embed}, prompt {1000 * a.last_prompt_s:.0f} ms)")

    def _failed(self, i: int, err: BaseException) -> None:
        """A notification, and a status that says failed (it said it was still computing the embedding)."""
        self.status.value = f"B-scan {i}: failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        show_error(f"SAM 2 failed: {err}")

    def _idle(self) -> None:
        self.busy = False

    def clear(self, *_: Any) -> None:
        """Remove every prompt (points and boxes)."""
        for name in (POSITIVE, NEGATIVE):
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                with layer.events.data.blocker(self._point_added):
                    layer.data = np.zeros((0, layer.ndim))
        if BOX in self.viewer.layers:
            self.viewer.layers[BOX].data = []


@thread_worker(ignore_errors=True)  # errors become notifications
def _segment_worker(widget: Sam2Widget, checkpoint: str, volume: Any, i: int, prompt: Any, key: Any,
                    cache: Path | None):
    from oct_wsss.propose.sam2_assist import Sam2Assist

    stat = Path(checkpoint).stat()
    built_for = (checkpoint, stat.st_mtime_ns, stat.st_size, cache)
    if widget.assist is None or widget.built_for != built_for:  # a replaced file is another model
        widget.assist = Sam2Assist(checkpoint, device="cpu", cache_dir=cache)  # built here, off the main thread
        widget.built_for = built_for
    bscan, read = np.asarray(volume[i]), widget.assist.backend.embeddings_loaded
    embedded = widget.assist.embed(bscan, key, None if cache is None else (_volume_hash(widget, volume), i))
    result = widget.assist.segment(bscan, prompt, key)
    return result.mask, result.score, embedded, widget.assist.backend.embeddings_loaded > read


def _volume_hash(widget: Sam2Widget, volume: Any) -> str:
    """The disk cache's key of ``volume`` (SHA-256 of its voxels), hashed once per volume the widget meets."""
    from oct_wsss.propose.sam2_cache import volume_hash

    if widget.hashed is None or widget.hashed[0]() is not volume:
        widget.hashed = (weakref.ref(volume), volume_hash(np.asarray(volume)))
    return widget.hashed[1]
