"""Regenerate the napari screenshots in docs/images/ (run under xvfb-run; real viewer, real plugin).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py --workflow STUDENT.safetensors
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py --grader
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py --hrf
    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshots.py --workspace
    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py --layers
    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py --propagate
    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py --layers-eyesegpy
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from skimage.io import imsave

from oct_wsss.cli import populate_demo

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
SHARED = REPO.parent / "shared" / "data"


def _shoot(viewer: napari.Viewer, name: str, zoom: float = 1.0) -> None:
    viewer.window._qt_window.resize(1500, 900)
    viewer.reset_view()
    viewer.camera.zoom *= zoom
    napari.qt.get_qapp().processEvents()
    imsave(OUT / name, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print("wrote", OUT / name)


def workflow(student: Path) -> None:
    """The grader's view: Propose lesions run with a student checkpoint on the phantom, Review docked beside it."""
    from oct_wsss.napari._propose import PROPOSED
    from oct_wsss.synth import make_volume

    viewer = napari.Viewer(title="napari-oct-wsss")
    # a phantom at the size the bundled demo-student (training/phantom-student.yaml) trains on (496 x 512), from a
    # seed outside its dataset
    phantom = make_volume(100, n_bscans=20, height=496, width=512, prevalence={"srf": 1.0, "irf": 1.0, "ped": 1.0})
    viewer.add_image(phantom.volume.data, name="synthetic OCT (seed 100)", scale=phantom.volume.spacing_mm)
    viewer.add_labels(phantom.labels, name="ground truth", scale=phantom.volume.spacing_mm, visible=False)
    _, propose = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Propose lesions")
    _, review = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Review and accept")
    propose.method.value, propose.checkpoint.value, propose.device.value = "student", str(student), "cpu"
    worker = propose.propose()
    while worker.is_running or not propose.run_button.enabled:
        napari.qt.get_qapp().processEvents()
    busiest = int(np.argmax([(b > 0).sum() for b in viewer.layers[PROPOSED].data]))
    viewer.dims.set_current_step(0, busiest)
    review.labels.value = viewer.layers[PROPOSED]
    review.status.value = "open a project folder to accept B-scans"
    _shoot(viewer, "napari_propose_review.png", zoom=1.3)
    viewer.close()


def hrf() -> None:
    """Propose lesions with method HRF and the bundled demo-hrf checkpoint on the demo phantom (classical step)."""
    from oct_wsss.classes import HRF
    from oct_wsss.napari._propose import HRF_PROPOSED

    viewer = napari.Viewer(title="napari-oct-wsss")
    populate_demo(viewer)
    _, propose = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Propose lesions")
    propose.method.value, propose.device.value = "hrf", "cpu"
    truth = viewer.layers["ground truth"].data
    viewer.dims.set_current_step(0, int(np.argmax((truth == HRF).sum(axis=(1, 2)))))  # the B-scan richest in HRF
    propose.range.value = "current"
    worker = propose.propose()
    while worker.is_running or not propose.run_button.enabled:
        napari.qt.get_qapp().processEvents()
    viewer.layers["ground truth"].visible = False
    viewer.layers[HRF_PROPOSED].opacity = 1.0
    _shoot(viewer, "napari_hrf.png", zoom=2.5)
    viewer.close()


def grader() -> None:
    """Review (status strip, image-level labels), Quantify, Fine-tune (edit effort) and SAM 2 assist on a phantom whose
    ground truth stands in for a proposal the grader edits."""
    import tempfile

    from oct_wsss.napari._layers import PROPOSED_KEY, labels_layer
    from oct_wsss.napari._propose import PROPOSED
    from oct_wsss.synth import make_volume

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-oct-wsss")
    phantom = make_volume(100, n_bscans=20, height=248, width=256,
                          prevalence={"srf": 1.0, "irf": 1.0, "ped": 1.0, "hrf": 1.0})
    spacing = phantom.volume.spacing_mm
    viewer.add_image(phantom.volume.data, name="synthetic OCT (seed 100)", scale=spacing)
    data, kwargs, _ = labels_layer(phantom.labels.copy(), spacing, PROPOSED)
    layer = viewer.add_labels(data, **kwargs)
    layer.metadata[PROPOSED_KEY] = {i: phantom.labels[i].copy() for i in range(len(phantom.labels))}
    layer.metadata["oct_wsss_provenance"] = {"method": "student", "checkpoint": "demo-student.safetensors"}
    busiest = int(np.argmax([(b > 0).sum() for b in phantom.labels]))

    dock, review = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Review and accept")
    review.labels.value = layer
    review.project.value, review.grader.value = tempfile.mkdtemp(prefix="oct-wsss-project-"), "grader A"
    review.open()
    for i in range(busiest - 4, busiest):
        viewer.dims.set_current_step(0, i)
        layer.data[i][layer.data[i] == 5] = 0  # the grader erases the proposed HRF in these B-scans
        review.accept()
    viewer.dims.set_current_step(0, busiest + 1)
    review.reject()
    viewer.dims.set_current_step(0, busiest)
    review.present[5].value = True  # the grader marks an HRF present that the mask does not outline
    layer.refresh()
    app.processEvents()
    _shoot(viewer, "napari_review_status.png", zoom=1.3)
    viewer.window.remove_dock_widget(dock)

    dock, quantify = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Quantify")
    quantify.labels.value = layer
    quantify.refresh()
    _shoot(viewer, "napari_quantify.png", zoom=1.3)
    viewer.window.remove_dock_widget(dock)

    dock, finetune = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "Fine-tune")
    finetune.project.value = review.project.value
    finetune.parent_ckpt.value = str(REPO / "src" / "oct_wsss" / "weights" / "demo-student.safetensors")
    finetune.summarise()
    _shoot(viewer, "napari_finetune.png", zoom=1.3)
    viewer.window.remove_dock_widget(dock)

    dock, sam2 = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "SAM 2 assist")
    sam2.checkpoint.value = ""
    sam2.labels.value = layer
    sam2.add_prompt_layers()
    viewer.layers["SAM 2 positive"].add([busiest, 150, 128])
    viewer.layers["SAM 2 negative"].add([busiest, 100, 150])
    _shoot(viewer, "napari_sam2.png", zoom=1.3)
    viewer.close()


def workspace() -> None:
    """The demo as `oct-wsss demo` shows it (OCT workspace docked, demo student proposed) at the two screen sizes the
    plugin must fit: 1920 x 1080 and 1366 x 768."""
    from oct_wsss.weights import bundled_checkpoints

    viewer = napari.Viewer(title="napari-oct-wsss")
    worker = populate_demo(viewer, "student", bundled_checkpoints()["student"], device="cpu")
    app = napari.qt.get_qapp()
    from oct_wsss.napari._propose import PROPOSED
    from oct_wsss.napari._session import session

    def proposed() -> set[int]:
        return set(session(viewer).records(viewer.layers[PROPOSED]).proposed) if PROPOSED in viewer.layers else set()

    n = viewer.layers[0].data.shape[0]
    while worker.is_running or proposed() < set(range(n)):  # every B-scan proposed, not just the worker returned
        app.processEvents()
        time.sleep(0.01)
    for _ in range(100):
        app.processEvents()
        time.sleep(0.01)
    for width, height in ((1920, 1080), (1366, 768)):
        viewer.window._qt_window.resize(width, height)
        for _ in range(5):
            app.processEvents()
        viewer.reset_view()
        app.processEvents()
        name = f"napari_workspace_{width}x{height}.png"
        imsave(OUT / name, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        print("wrote", OUT / name)
    viewer.close()


def propagation() -> None:
    """The grader's loop at 1366 x 768 on the demo: B-scan 24 corrected (its truth) and accepted into a project,
    carried over 20..28 by the Propagate tab (flow engine), then the Review tab on a propagated B-scan: its strip marks
    the propagated B-scans amber (proposed, to review)."""
    import tempfile

    from oct_wsss.napari._propose import PROPOSED
    from oct_wsss.weights import bundled_checkpoints

    viewer = napari.Viewer(title="napari-oct-wsss")
    worker = populate_demo(viewer, "student", bundled_checkpoints()["student"], device="cpu")
    app = napari.qt.get_qapp()
    while worker.is_running or PROPOSED not in viewer.layers:
        app.processEvents()
        time.sleep(0.01)
    _, dock = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "OCT workspace")
    viewer.window._qt_window.resize(1366, 768)
    review, propagate = dock.panels["Review"], dock.panels["Propagate"]
    layer = viewer.layers[PROPOSED]
    viewer.dims.set_current_step(0, 24)
    layer.data[24] = viewer.layers["ground truth"].data[24]  # the grader's correction
    review.project.value = tempfile.mkdtemp(prefix="oct-wsss-project-")
    review.accept()
    propagate.start.value, propagate.end.value = 20, 28
    run = propagate.propagate()
    while run.is_running or not propagate.run_button.enabled:
        app.processEvents()
        time.sleep(0.02)
    print(propagate.status.value)
    viewer.dims.set_current_step(0, 26)
    viewer.layers["ground truth"].visible = False
    dock.setCurrentIndex(list(dock.panels).index("Review"))
    viewer.reset_view()
    _settle_and_shoot(viewer, "napari_propagate_1366x768.png")
    viewer.close()


def _run_layers_panel(viewer: napari.Viewer, source: str = "bundled") -> tuple:
    """Dock the workspace at 1366 x 768, open its Layers tab and run it on the CPU from ``source``; (dock, panel)
    once the run is over."""
    _, dock = viewer.window.add_plugin_dock_widget("napari-oct-wsss", "OCT workspace")
    viewer.window._qt_window.resize(1366, 768)
    dock.setCurrentIndex(list(dock.panels).index("Layers"))
    panel = dock.panels["Layers"]
    panel.device.value = "cpu"
    panel.source.value = source
    panel.run()
    app = napari.qt.get_qapp()
    while not panel.run_button.enabled:
        app.processEvents()
        time.sleep(0.05)
    return dock, panel


def _settle_and_shoot(viewer: napari.Viewer, name: str) -> None:
    """Let Qt draw for a moment, then save the whole window."""
    app = napari.qt.get_qapp()
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    imsave(OUT / name, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print("wrote", OUT / name)


def layers() -> None:
    """The Layers tab on the Bonn drusen volume at 1366 x 768: boundaries, thickness map, ETDRS grid on the fovea."""
    viewer = napari.Viewer(title="napari-oct-wsss")
    viewer.open(str(SHARED / "bonn_drusen_volume" / "OCT-Info.xml"), plugin="napari-oct-wsss")
    dock, panel = _run_layers_panel(viewer)
    viewer.dims.set_current_step(0, round(panel.enface.centre[0]))
    scroll = dock.currentWidget().verticalScrollBar()
    scroll.setValue(scroll.maximum())
    _settle_and_shoot(viewer, "napari_layers_1366x768.png")
    viewer.close()


def layers_eyesegpy(first: int = 33, count: int = 5) -> None:
    """The Layers tab with source eyesegpy (BM and RPE from the converted eyesegpy network) at 1366 x 768, on B-scans
    ``first`` .. ``first + count - 1`` of the Bonn drusen volume (the port takes 10-20 s per B-scan on a CPU)."""
    from oct_wsss.io import read_volume
    from oct_wsss.napari._layers import image_layer
    from oct_wsss.volume import OctVolume

    full = read_volume(SHARED / "bonn_drusen_volume" / "OCT-Info.xml")
    part = OctVolume(full.data[first:first + count], spacing_mm=full.spacing_mm, laterality=full.laterality,
                     meta=dict(full.meta))
    viewer = napari.Viewer(title="napari-oct-wsss")
    data, kwargs, _ = image_layer(part, f"Bonn drusen, B-scans {first}-{first + count - 1}")
    viewer.add_image(data, **kwargs)
    dock, panel = _run_layers_panel(viewer, "eyesegpy")
    viewer.dims.set_current_step(0, count // 2)
    dock.currentWidget().verticalScrollBar().setValue(0)  # the source control at the top
    _settle_and_shoot(viewer, "napari_layers_eyesegpy_1366x768.png")
    print(panel.status.value)
    viewer.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) > 1 and sys.argv[1] == "--hrf":
        hrf()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--layers-eyesegpy":
        layers_eyesegpy()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--layers":
        layers()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--propagate":
        propagation()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--workspace":
        workspace()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--grader":
        grader()
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--workflow":
        workflow(Path(sys.argv[2]))
        return 0
    viewer = napari.Viewer(title="napari-oct-wsss")
    populate_demo(viewer)
    truth = viewer.layers["ground truth"].data
    busiest = int(np.argmax([len(np.unique(b)) for b in truth]))
    viewer.dims.set_current_step(0, busiest)
    _shoot(viewer, "napari_sample_lesions.png", zoom=1.5)

    bonn = SHARED / "bonn_drusen_volume"
    if bonn.is_dir():
        viewer.layers.clear()
        viewer.open(str(bonn), plugin="napari-oct-wsss")
        viewer.dims.set_current_step(0, 59)
        _shoot(viewer, "napari_open_bonn.png", zoom=1.5)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
