"""napari stays responsive while a proposal streams: a QTimer on the event loop measures the longest gap."""

from __future__ import annotations

import os
import time

import torch
from napari_helpers import MemorySettings
from qtpy.QtCore import QTimer

from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.napari import _propose
from oct_wsss.napari._imports import preload_method
from oct_wsss.napari._propose import ProposeWidget
from oct_wsss.synth import make_volume
from oct_wsss.training.student import student_checkpoint

#: Bounds that hold on a shared 2-core machine under load ~7 (five agents): the main thread's own CPU time inside one
#: event-loop gap (what the widget's code costs; target ~100 ms) and the wall-clock gap (which also counts the time
#: the OS gave the cores to other processes). Override with the environment variables on a quiet machine.
CPU_BOUND_MS = float(os.environ.get("OCT_WSSS_GAP_CPU_BOUND_MS", "150"))
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
    preload_method("student")  # the one-off imports (seconds) happen when the widget first proposes; not timed
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
