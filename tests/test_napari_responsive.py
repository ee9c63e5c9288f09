"""napari stays responsive while a proposal streams and while a correction is propagated: a QTimer on the event
loop measures the longest gap."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from napari.utils import progress
from napari_helpers import MemorySettings
from qtpy.QtCore import QTimer

from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.napari import _propagate, _propose, _review
from oct_wsss.napari._imports import preload_method
from oct_wsss.napari._layers import labels_layer, refresh_bscan
from oct_wsss.napari._propagate import PropagateWidget
from oct_wsss.napari._propose import ProposeWidget
from oct_wsss.napari._review import ReviewWidget
from oct_wsss.synth import make_volume
from oct_wsss.training.student import student_checkpoint

#: Bounds: the main thread's own CPU time inside one event-loop gap (what the widget's code costs; the target is
#: ~100 ms; measured 16-23 ms on 2 cores, quiet or with six busy loops competing) and the wall-clock gap (which also
#: counts the time the OS gave the cores to other processes). Override with the environment variables.
CPU_BOUND_MS = float(os.environ.get("OCT_WSSS_GAP_CPU_BOUND_MS", "100"))
WALL_BOUND_MS = float(os.environ.get("OCT_WSSS_GAP_BOUND_MS", "1500"))


def test_longest_event_loop_gap_while_proposing(make_napari_viewer, tmp_path, qtbot, monkeypatch) -> None:
    monkeypatch.setattr(_propose, "QSettings", lambda *a: MemorySettings())
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=8, depth=3))
    ckpt = student_checkpoint(net, (1, 2, 3), (128, 128), training={}).save(tmp_path / "student.safetensors")
    viewer = make_napari_viewer(show=True)
    volume = make_volume(2, n_bscans=16, height=248, width=256).volume
    viewer.add_image(volume.data, name="oct", scale=volume.spacing_mm)
    w = ProposeWidget(viewer)
    w.method.value, w.checkpoint.value, w.device.value = "student", str(ckpt), "cpu"
    # The first Propose of a napari session pays two one-off costs that are not the widget's and are not timed: the
    # imports (seconds, preload_method) and napari's first progress bar, whose activity indicator appearing in the
    # status bar re-lays out the window and repaints the canvas (~135 ms of main-thread CPU on a quiet 2-core machine;
    # later bars cost ~12 ms). A grader meets both once, at the first click; every later Propose is what is timed.
    preload_method("student")
    progress(total=1, desc="warm-up").close()
    qtbot.wait(300)

    ticks: list[tuple[float, float]] = []  # (wall, main-thread CPU) at each tick, in ms
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter() * 1000, time.thread_time() * 1000)))
    timer.start()
    qtbot.wait(100)
    worker = w.propose()  # the click: the layer is made here, the model is built in the worker
    assert worker is not None
    qtbot.waitUntil(lambda: w.run_button.enabled and not worker.is_running, timeout=120_000)
    qtbot.wait(100)
    timer.stop()
    pairs = list(zip(ticks, ticks[1:], strict=False))
    gaps = sorted(b[0] - a[0] for a, b in pairs)
    cpu = sorted(b[1] - a[1] for a, b in pairs)
    print(f"\nevent-loop gaps while proposing 16 B-scans: wall max {gaps[-1]:.0f} ms, median {gaps[len(gaps) // 2]:.1f}"
          f" ms over {len(gaps)} ticks, worst five {[round(g) for g in gaps[-5:]]}; main-thread CPU in one gap: max "
          f"{cpu[-1]:.0f} ms, worst five {[round(c) for c in cpu[-5:]]}; load average {os.getloadavg()[0]:.1f}")
    assert w.status.value == "done"
    assert cpu[-1] <= CPU_BOUND_MS, f"the main thread was busy {cpu[-1]:.0f} ms in one go (bound {CPU_BOUND_MS:.0f})"
    assert gaps[-1] <= WALL_BOUND_MS, f"the UI froze for {gaps[-1]:.0f} ms (bound {WALL_BOUND_MS:.0f} ms)"


def test_streamed_bscan_is_drawn_when_on_screen_and_when_stepped_to(make_napari_viewer, qtbot) -> None:
    """refresh_bscan skips the redraw of B-scans napari does not show; the canvas must still show every write."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.full((6, 40, 60), 0.2, np.float32), name="oct", contrast_limits=(0, 1))
    data, kwargs, _ = labels_layer(np.zeros((6, 40, 60), np.uint8), (1.0, 1.0, 1.0), "lesions (proposed)")
    labels = viewer.add_labels(data, **kwargs)
    viewer.dims.set_current_step(0, 3)
    qtbot.wait(100)
    blank = viewer.screenshot(canvas_only=True, flash=False)

    labels.data[5] = 2  # off screen: no redraw now, and none needed
    refresh_bscan(viewer, labels, 5)
    assert np.array_equal(viewer.screenshot(canvas_only=True, flash=False), blank)
    labels.data[3] = 2  # on screen: drawn at once
    refresh_bscan(viewer, labels, 3)
    on_screen = viewer.screenshot(canvas_only=True, flash=False)
    assert np.abs(on_screen.astype(int) - blank).max() > 50
    viewer.dims.set_current_step(0, 5)
    qtbot.wait(100)
    assert np.array_equal(viewer.screenshot(canvas_only=True, flash=False), on_screen)


@pytest.mark.parametrize("project", [False, True], ids=["no-project", "project"])
def test_longest_event_loop_gap_while_propagating(make_napari_viewer, qtbot, monkeypatch, tmp_path, project) -> None:
    """The Propagate worker carries a phantom SRF lesion over k ± 3 (flow engine) while a QTimer measures the event
    loop; each propagated B-scan is written into the layer (with napari's undo) on the main thread, and with a project
    open also into the store (a proposed version, fsync'ed). The first click of the session is timed.
    OCT_WSSS_PROPAGATE_SIZE=496x512 times native-size B-scans (~6 s; default 248x256, ~1.5 s)."""
    monkeypatch.setattr(_propagate, "QSettings", lambda *a: MemorySettings())
    monkeypatch.setattr(_review, "QSettings", lambda *a: MemorySettings())
    size = tuple(int(v) for v in os.environ.get("OCT_WSSS_PROPAGATE_SIZE", "248x256").split("x"))
    s = make_volume(101, n_bscans=12, height=size[0], width=size[1], prevalence={"srf": 1.0, "irf": 0.0, "ped": 0.0})
    k = int(np.argmax((s.labels == 1).sum(axis=(1, 2))))
    viewer = make_napari_viewer(show=True)
    viewer.add_image(s.volume.data, name="oct", scale=s.volume.spacing_mm)
    start = np.zeros(s.labels.shape, np.uint8)
    start[k][s.labels[k] == 1] = 1
    layer = viewer.add_labels(start, name="lesions (proposed)", scale=s.volume.spacing_mm)
    w = PropagateWidget(viewer)
    if project:
        review = ReviewWidget(viewer)
        review.project.value = str(tmp_path / "project")
        assert review.open()
    viewer.dims.set_current_step(0, k)
    qtbot.wait(300)
    ticks: list[tuple[float, float]] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter() * 1000, time.thread_time() * 1000)))
    timer.start()
    qtbot.wait(100)
    t0 = time.perf_counter()
    worker = w.propagate()  # the click
    assert worker is not None
    qtbot.waitUntil(lambda: w.run_button.enabled and not worker.is_running, timeout=120_000)
    seconds = time.perf_counter() - t0
    qtbot.wait(100)
    timer.stop()
    pairs = list(zip(ticks, ticks[1:], strict=False))
    gaps = sorted(b[0] - a[0] for a, b in pairs)
    cpu = sorted(b[1] - a[1] for a, b in pairs)
    done = sorted(w.previous)
    into = " into a project" if project else ""
    print(f"\nevent-loop gaps while propagating {len(done)} B-scans{into} of {size[0]} x {size[1]} ({seconds:.1f} s): "
          f"wall "
          f"max {gaps[-1]:.0f} ms, median {gaps[len(gaps) // 2]:.1f} ms over {len(gaps)} ticks, worst five "
          f"{[round(g) for g in gaps[-5:]]}; main-thread CPU in one gap: max {cpu[-1]:.0f} ms, worst five "
          f"{[round(c) for c in cpu[-5:]]}; load average {os.getloadavg()[0]:.1f}")
    assert len(done) >= 4 and all((layer.data[i] == 1).any() for i in done)
    if project:
        assert set(review.session.store.status(review.session.volume_id)) == set(done)
    assert cpu[-1] <= CPU_BOUND_MS, f"the main thread was busy {cpu[-1]:.0f} ms in one go (bound {CPU_BOUND_MS:.0f})"
    assert gaps[-1] <= WALL_BOUND_MS, f"the UI froze for {gaps[-1]:.0f} ms (bound {WALL_BOUND_MS:.0f} ms)"
