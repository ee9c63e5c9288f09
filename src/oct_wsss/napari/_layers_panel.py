"""The **Layers** panel: retinal layer bands and editable boundaries, the thickness en-face map with an ETDRS grid.

Thin like Propose: ``oct_wsss.propose.layers.LayerModel`` (what ``oct-wsss layers`` runs) segments one B-scan at a
time in a ``thread_worker``; with *source* eyesegpy ``propose.layers_eyeseg.EyesegpyBoundaries`` (what
``oct-wsss layers --source eyesegpy`` runs) then puts the converted eyesegpy networks' BM and RPE into each B-scan's
result. Each result fills the "layer bands" Labels layer and adds that B-scan's boundaries as paths to the "layer
boundaries" Shapes layer, which the grader drags. *Accept boundaries* turns the current B-scan's paths back into rows
(``layer_geometry.boundaries_from_paths``) and keeps them in the project's store.
No ``from __future__ import annotations``: napari reads the ``Viewer`` annotation at run time.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning

from oct_wsss.io.eyesegpy import default_dir
from oct_wsss.napari._enface import EnfaceMap
from oct_wsss.napari._imports import hide_triton
from oct_wsss.napari._layers import AXES, BOUNDARY_LAYER, boundary_kwargs, boundary_paths, refresh_bscan, write_page
from oct_wsss.napari._run import RunProgress, WorkerFailed, done_status
from oct_wsss.napari._session import session
from oct_wsss.propose.layer_geometry import boundaries_from_paths
from oct_wsss.propose.layers import (
    BOUNDARIES,
    LayerError,
    has_physical_scale,
    preload,
    rebuild_bands,
    thickness_map_um,
)
from oct_wsss.propose.layers_eyeseg import CHOICE, missing, scale_x_mm
from oct_wsss.propose.layers_eyeseg import preload as preload_eyesegpy
from oct_wsss.volume import OctVolume
from oct_wsss.weights import layers_checkpoint

BANDS_LAYER = "layer bands"
NO_SCALE = ("this volume has no physical scale (its reader fell back to a default spacing), so there is no "
            "thickness in µm and no ETDRS grid; open a file that records its pixel spacing (.vol, .e2e, Heyex XML, "
            ".eye in mm)")


def layer_volume(layer: Any) -> OctVolume:
    """The image layer as an OctVolume: its scale as spacing, its reader's ``spacing_source`` (a plain array at
    scale 1 has none)."""
    data = np.asarray(layer.data)
    data = data[None] if data.ndim == 2 else data
    info = (getattr(layer, "metadata", None) or {}).get("oct_wsss") or {}
    scale = tuple(float(s) for s in ([1.0] * 3 + list(layer.scale))[-3:])
    source = info.get("spacing_source") or ("default" if not info and scale == (1.0, 1.0, 1.0) else "given")
    return OctVolume(data, spacing_mm=scale, laterality=info.get("laterality"), meta={"spacing_source": source})


class LayersWidget(Container):
    """Dock widget: Run segments the layers in a worker (progress, Cancel); Accept keeps the edited boundaries."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.session = session(viewer)
        self.session.panels["Layers"] = self
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.safetensors",
                                   value=str(layers_checkpoint() or ""))
        self.device = ComboBox(label="device", choices=("auto", "cpu", "cuda"), value="auto")
        self.source = ComboBox(label="source", choices=("bundled", "eyesegpy"), value="bundled",
                               tooltip="bundled: every boundary from the checkpoint; eyesegpy: "
                                       f"{' and '.join(CHOICE)} from the Bonn group's eyesegpy network (MIT; slow on "
                                       "CPU), the rest from the checkpoint (oct-wsss layers --source eyesegpy)")
        self.eyesegpy_dir = FileEdit(label="eyesegpy dir", mode="d", value=str(default_dir()), visible=False,
                                     tooltip="folder of the converted eyesegpy networks (scripts/convert_eyesegpy.py)")
        self.run_button = PushButton(text="Segment layers")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.accept_button = PushButton(text="Accept boundaries (this B-scan)")
        self.status = Label(value="")
        self.scale_note = Label(value="")
        self.enface = EnfaceMap()
        self.extend([self.image, self.checkpoint, self.device, self.source, self.eyesegpy_dir, self.run_button,
                     self.cancel_button, self.status, self.accept_button, self.scale_note, self.enface])
        self.volume: OctVolume | None = None
        self.boundaries: np.ndarray | None = None  # (n, 9, W) rows as segmented, then as accepted
        self.without_retina: list[int] = []  # B-scans of the last run that showed no retina
        self.worker: Any = None
        self._cancel, self._failure = False, None
        self.run_button.changed.connect(self.run)
        self.source.changed.connect(lambda value: setattr(self.eyesegpy_dir, "visible", value == "eyesegpy"))
        self.cancel_button.changed.connect(self.cancel)
        self.accept_button.changed.connect(self.accept_boundaries)
        viewer.dims.events.current_step.connect(self._follow_slider)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)

    def run(self, *_: Any) -> Any:
        """Segment every B-scan of the chosen image in a worker; returns the worker (None when nothing to do)."""
        checkpoint = Path(str(self.checkpoint.value or ""))
        if self.image.value is None:
            show_error("Layers: open an OCT volume first (File > Open, or a sample)")
            return None
        if not checkpoint.is_file():
            show_error(f"Layers: no layer checkpoint at '{checkpoint}'; choose a layers .safetensors file "
                       "(training/layers_train.py makes one)")
            return None
        folder = Path(str(self.eyesegpy_dir.value or default_dir())) if self.source.value == "eyesegpy" else None
        absent = missing(folder) if folder is not None else None
        if absent:  # before any layer changes (oct-wsss layers stops there too); the worker would only fail later
            show_error(f"Layers: {absent}")
            return None
        self.volume = volume = layer_volume(self.image.value)
        n, _, w = volume.shape
        self.boundaries = np.full((n, len(BOUNDARIES), w), np.nan, np.float32)
        self._prepare_layers(volume)
        self._cancel, self._failure, self.without_retina = False, None, []
        hide_triton()
        preload()  # torch on the main thread: some first imports crash in a worker thread
        eyesegpy = None if folder is None else (folder, scale_x_mm(volume))
        if eyesegpy is not None:
            preload_eyesegpy()

        bar = RunProgress(n, "Segmenting layers")
        self.worker = _segment_worker(str(checkpoint), self.device.value, volume.data, lambda: self._cancel, eyesegpy)
        self.worker.yielded.connect(lambda item: self._show(item, bar))
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(lambda: self._done(bar))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        extra = f" ({', '.join(CHOICE)} from eyesegpy)" if eyesegpy is not None else ""
        self.status.value = f"segmenting {n} B-scans{extra} ..."
        self.worker.start()
        return self.worker

    def _prepare_layers(self, volume: OctVolume) -> None:
        """An empty bands layer and an empty boundary layer for ``volume`` (replacing earlier ones)."""
        for name in (BANDS_LAYER, BOUNDARY_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.viewer.add_labels(np.zeros(volume.shape, np.uint8), name=BANDS_LAYER, scale=volume.spacing_mm,
                               units=("mm",) * 3, axis_labels=AXES, opacity=0.35)
        self.viewer.add_shapes(None, ndim=3, **boundary_kwargs(volume.spacing_mm, list(BOUNDARIES)))
        self.viewer.layers.selection.active = self.viewer.layers[BOUNDARY_LAYER]

    def _show(self, item: tuple[int, np.ndarray, np.ndarray, bool], bar: Any) -> None:
        """One segmented B-scan into the layers (a B-scan without retina: a warning naming it)."""
        index, bands, rows, retina = item
        bar.step()
        if not retina:
            self.without_retina.append(index)
            show_warning(f"Layers: B-scan {index} shows no retina; it has no bands or boundaries")
            return
        self.viewer.layers[BANDS_LAYER].data[index] = bands
        refresh_bscan(self.viewer, self.viewer.layers[BANDS_LAYER], index)
        self.boundaries[index] = rows
        self._add_paths(index)
        self.status.value = f"B-scan {index} segmented"

    def _add_paths(self, index: int) -> None:
        """Add B-scan ``index``'s paths (``self.boundaries[index]``) to the boundary layer, with their features."""
        shapes = self.viewer.layers[BOUNDARY_LAYER]
        paths, new = boundary_paths({name: self.boundaries[:, k] for k, name in enumerate(BOUNDARIES)}, [index])
        kept = {key: list(shapes.features[key]) if len(shapes.features) else [] for key in new}
        shapes.add_paths(paths, edge_color=new["colour"], edge_width=1.5)
        shapes.features = {key: kept[key] + new[key] for key in new}

    def _failed(self, err: BaseException) -> None:
        err = err.cause if isinstance(err, WorkerFailed) else err
        self._failure = str(err).splitlines()[0] if str(err) else type(err).__name__
        show_error(f"Layers failed: {err}")

    def _done(self, bar: Any) -> None:
        bar.close()
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.status.value = done_status(self._cancel, self._failure)
        self.show_thickness()

    def cancel(self, *_: Any) -> None:
        """Stop after the B-scan in flight; finished B-scans stay."""
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()

    def show_thickness(self) -> None:
        """The en-face thickness map with its ETDRS grid, or the clear message when the volume has no scale."""
        volume = self.volume
        if volume is None or self.boundaries is None or np.isnan(self.boundaries).all():
            return
        scaled = has_physical_scale(volume)
        self.scale_note.value = "" if scaled else NO_SCALE
        self.enface.visible = scaled
        if scaled:
            self.enface.show_thickness(thickness_map_um(self.boundaries, volume.spacing_mm), volume.spacing_mm,
                                       volume.laterality, self.current_bscan)

    @property
    def current_bscan(self) -> int:
        """The B-scan the viewer's dims slider shows."""
        return int(self.viewer.dims.current_step[0])

    def _follow_slider(self, *_: Any) -> None:
        self.enface.move_bscan(self.current_bscan)

    def edited_boundaries(self, index: int) -> np.ndarray:
        """(9, W) rows of B-scan ``index`` from its paths in the boundary layer, as the grader left them."""
        shapes = self.viewer.layers[BOUNDARY_LAYER]
        features = shapes.features
        by_name = {str(features["boundary"][i]): shapes.data[i] for i in np.flatnonzero(features["bscan"] == index)}
        missing = [name for name in BOUNDARIES if name not in by_name]
        if missing:
            raise LayerError(f"B-scan {index} has no path for {', '.join(missing)}; run Segment layers again")
        return boundaries_from_paths([by_name[name] for name in BOUNDARIES], self.volume.shape[2])

    def accept_boundaries(self, *_: Any) -> Path | None:
        """Keep the current B-scan's edited boundaries in the project (Review opens it); returns the file."""
        store, index = self.session.store, self.current_bscan
        if store is None:
            show_error("Layers: open a project in the Review tab first; accepted boundaries are kept there")
            return None
        if self.volume is None or BOUNDARY_LAYER not in self.viewer.layers:
            show_error("Layers: segment the layers first")
            return None
        try:
            rows = self.edited_boundaries(index)
        except LayerError as err:
            show_error(f"Layers: {err}")
            return None
        volume_id = self.session.volume_id or store.volume_id(self.volume)
        path = store.accept_boundaries(volume_id, index, rows, BOUNDARIES)
        self.boundaries[index] = rows
        bands = self.viewer.layers[BANDS_LAYER]
        write_page(bands, index, rebuild_bands(rows, bands.data[index]))
        self.show_thickness()
        show_info(f"Layers: boundaries of B-scan {index} accepted")
        self.status.value = f"B-scan {index}: boundaries accepted"
        return path


@thread_worker(ignore_errors=True)  # errors become notifications (errored handler)
def _segment_worker(checkpoint: str, device: str, data: np.ndarray, cancelled: Callable[[], bool],
                    eyesegpy: tuple[Path, float | None] | None = None):
    """Yields (index, bands, boundaries, retina shown) per B-scan; with ``eyesegpy`` = (folder, scale_x_mm) the
    chosen boundaries come from the converted eyesegpy networks. Stops before the next B-scan once ``cancelled``."""
    from oct_wsss.propose.layers import LayerModel
    from oct_wsss.propose.layers_eyeseg import EyesegpyBoundaries

    try:
        model = LayerModel(checkpoint, device=device)
        lines = EyesegpyBoundaries(eyesegpy[0], device=device) if eyesegpy is not None else None
        for index in range(len(data)):
            if cancelled():
                return
            result = model.segment(data[index], require_retina=False)
            retina = not result.provenance["bscans_without_retina"]
            if lines is not None and retina:
                result = lines.apply(result, data[index], eyesegpy[1])
            yield index, result.bands[0], result.boundaries[0], retina
    except RuntimeError as err:  # superqt's generator worker drops RuntimeErrors
        raise WorkerFailed(err) from err
