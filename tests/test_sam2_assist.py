"""SAM 2 assist: a random-weight SAM 2 (packaged tiny config, saved to a temp .pt; no downloads) answers point and box
prompts on a B-scan from one cached embedding; the napari widget paints the mask into the chosen class, undoably,
and explains what to do without a checkpoint. Per-prompt latency after the embedding is printed (figure for docs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari_helpers import MemorySettings

from oct_wsss.napari import _sam2
from oct_wsss.napari._imports import preload_sam2
from oct_wsss.napari._sam2 import BOX, HOW, POSITIVE, Sam2Widget
from oct_wsss.propose.sam2_assist import Prompt, Sam2Assist, paint
from oct_wsss.synth import make_volume


@pytest.fixture(scope="module")
def sam2_pt(tmp_path_factory: pytest.TempPathFactory):
    preload_sam2()  # as the widget does: SAM 2 imported with triton hidden (a viewer's GL context may exist)
    torch.manual_seed(0)
    assist = Sam2Assist(None, allow_random=True)
    path = tmp_path_factory.mktemp("sam2") / "sam2_random.pt"
    torch.save({"model": assist.backend.predictor.model.state_dict()}, path)
    return path


def test_prompt_validation() -> None:
    with pytest.raises(ValueError, match="at least one point or a box"):
        Prompt()
    with pytest.raises(ValueError, match="point labels"):
        Prompt(((1.0, 2.0),), (1, 0))
    page = np.array([[0, 1], [2, 1]], np.uint8)
    rows, cols = paint(page, np.array([[True, True], [False, False]]), 1)
    assert rows.tolist() == [0] and cols.tolist() == [0]  # only pixels that change


def test_without_checkpoint_the_widget_explains(make_napari_viewer, monkeypatch) -> None:
    monkeypatch.setattr(_sam2, "QSettings", lambda *a: MemorySettings())
    shown: list[str] = []
    monkeypatch.setattr(_sam2, "show_info", shown.append)
    w = Sam2Widget(make_napari_viewer())
    assert w.status.value == HOW and not w.segment_button.enabled
    assert w.segment() is None and shown == [HOW] and "sam2.1_hiera_tiny.pt" in HOW


@pytest.mark.slow  # one SAM 2 image embedding on CPU: ~20-30 s on two shared cores
def test_points_and_box_from_one_cached_embedding(sam2_pt, make_napari_viewer, qtbot, monkeypatch) -> None:
    monkeypatch.setattr(_sam2, "QSettings", lambda *a: MemorySettings())
    torch.set_num_threads(1)
    volume = make_volume(9, n_bscans=3, height=128, width=160).volume
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, name="oct")
    labels = viewer.add_labels(np.zeros(volume.shape, np.uint8), name="lesions (proposed)")
    w = Sam2Widget(viewer)
    w.checkpoint.value, w.auto.value, w.lesion.value = str(sam2_pt), False, 2
    w.add_prompt_layers()
    viewer.dims.set_current_step(0, 1)
    viewer.layers[POSITIVE].add([1, 60, 80])
    worker = w.segment()
    assert worker is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    embed_s = w.assist.last_embed_s
    reference = Sam2Assist(sam2_pt).segment(volume.data[1], Prompt(((60.0, 80.0),), (1,)), key=0).mask
    np.testing.assert_array_equal(labels.data[1] == 2, reference)  # what the library gives, in the chosen class
    assert reference.any() and not labels.data[[0, 2]].any()
    painted = labels.data.copy()
    labels.undo()  # napari's own undo takes the SAM 2 mask back out, redo puts it back
    assert not labels.data.any()
    labels.redo()
    np.testing.assert_array_equal(labels.data, painted)

    latencies = []
    viewer.layers[BOX].add_rectangles(np.array([[1, 30, 40], [1, 30, 130], [1, 90, 130], [1, 90, 40]]))
    for _ in range(3):  # further prompts on the same B-scan reuse the embedding
        worker = w.segment()
        assert worker is not None, w.status.value
        qtbot.waitUntil(lambda: not w.busy, timeout=60_000)
        latencies.append(w.last["prompt_ms"])
    assert w.assist.backend.embeddings_computed == 1 and w.last["embed_s"] is None
    assert "embedding cached" in w.status.value
    print(f"\nSAM 2 (hiera tiny, random weights, CPU, 1 thread): embedding {embed_s:.1f} s, prompt after the embedding "
          f"{min(latencies):.0f}-{max(latencies):.0f} ms")


def test_stride_deconv_is_the_transposed_convolution() -> None:
    """SAM 2's decoder upscaling runs as matmul + pixel shuffle (faster prompts on a CPU): the same values to float32
    rounding (the sums run in another order; bitwise on some CPUs, not all), the same layout and state-dict keys,
    for SAM 2's own input layout (a transposed view) and a contiguous one."""
    from oct_wsss.propose.sam2_backend import StrideDeconv, _fast_upscaling

    torch.manual_seed(0)
    for c, o, side in ((256, 64, 16), (64, 32, 32)):
        conv = torch.nn.ConvTranspose2d(c, o, 2, 2)
        sam_view = torch.randn(1, side * side, c).transpose(1, 2).view(1, c, side, side)
        for x in (sam_view, torch.randn(2, c, side, side)):
            with torch.inference_mode():
                ref, got = conv(x), StrideDeconv(conv)(x)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            assert ref.stride() == got.stride()
    layers = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 2, 2), torch.nn.GELU(),
                                 torch.nn.ConvTranspose2d(4, 2, 3))
    keys = list(layers.state_dict())
    fast = _fast_upscaling(layers)
    assert isinstance(fast[0], StrideDeconv) and isinstance(fast[2], torch.nn.ConvTranspose2d)  # 3x3/1 overlaps
    assert list(fast.state_dict()) == keys


def test_a_failed_segmentation_says_failed(make_napari_viewer, qtbot, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(_sam2, "QSettings", lambda *a: MemorySettings())
    shown: list[str] = []
    monkeypatch.setattr(_sam2, "show_error", shown.append)
    volume = make_volume(9, n_bscans=2, height=64, width=64).volume
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, name="oct")
    viewer.add_labels(np.zeros(volume.shape, np.uint8), name="lesions (proposed)")
    bad = tmp_path / "sam2.pt"
    bad.write_bytes(b"not a checkpoint")
    w = Sam2Widget(viewer)
    w.checkpoint.value, w.auto.value = str(bad), False
    w.add_prompt_layers()
    viewer.layers[POSITIVE].add([0, 30, 30])
    assert w.segment() is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert shown and "SAM 2 failed" in shown[-1]
    assert "failed" in w.status.value and "computing" not in w.status.value
