"""SAM 2 embeddings on disk (issue 21): reopening a volume reads them back instead of computing them, a changed
checkpoint file invalidates them, and the folder's size bound holds (least recently used files go first)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from oct_wsss.propose.sam2_cache import EmbeddingCache, volume_hash

pytest.importorskip("sam2")


def _tensors(seed: int, n: int = 1000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image_embed": torch.randn(n, generator=g), "orig_hw": torch.tensor([64, 80])}


def test_disk_cache_keys_dtype_and_size_bound(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "emb", max_bytes=5_000)
    v, m = "a" * 64, "b" * 64
    cache.put(v, m, 0, _tensors(0))
    got = cache.get(v, m, 0)
    assert got["image_embed"].dtype == torch.float32 and got["orig_hw"].tolist() == [64, 80]
    assert torch.allclose(got["image_embed"], _tensors(0)["image_embed"], atol=2e-3)  # stored as float16
    assert cache.get(v, "c" * 64, 0) is None and cache.get("d" * 64, m, 0) is None and cache.get(v, m, 1) is None
    os.replace(cache.path(v, m, 0), cache.path(v[:16] + "e" * 48, m, 0))  # a file whose header names another key
    assert cache.get(v[:16] + "e" * 48, m, 0) is None
    for p in cache.files():
        p.unlink()
    for i in (0, 1):  # ~2.3 kB each: the bound holds two
        cache.put(v, m, i, _tensors(i))
        os.utime(cache.path(v, m, i), ns=((i + 1) * 10**9,) * 2)  # 0 older than 1
    assert cache.get(v, m, 0) is not None  # used now: 1 is the least recently used
    cache.put(v, m, 2, _tensors(2))
    assert sorted(p.name[-17:-12] for p in cache.files()) == ["00000", "00002"] and cache.size() <= 5_000


def test_volume_hash_sees_voxels_and_shape() -> None:
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    b[1, 2, 2] = 1
    assert volume_hash(a) == volume_hash(a.copy()) != volume_hash(b) != volume_hash(a.reshape(1, 8, 4))


@pytest.fixture(scope="module")
def random_pt(tmp_path_factory: pytest.TempPathFactory):
    from oct_wsss.napari._imports import hide_triton
    from oct_wsss.propose.sam2_assist import Sam2Assist

    hide_triton()
    torch.manual_seed(0)
    assist = Sam2Assist(None, allow_random=True)
    path = tmp_path_factory.mktemp("sam2") / "sam2_random.pt"
    torch.save({"model": assist.backend.predictor.model.state_dict()}, path)
    return path


@pytest.fixture
def encoder(monkeypatch) -> list[tuple[int, int]]:
    """SAM 2's image encoder replaced by a stand-in with its feature shapes (the real one takes ~20 s an image on a
    CPU; scripts/sam2_cache_bench.py times the real thing); the list grows by the image's shape at every call."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    calls: list[tuple[int, int]] = []

    def fake_set_image(self, image) -> None:
        calls.append(image.shape[:2])
        g = torch.Generator().manual_seed(int(image.sum()) % 1000)
        self._features = {"image_embed": torch.randn(1, 256, 64, 64, generator=g),
                          "high_res_feats": [torch.randn(1, 32, 256, 256, generator=g),
                                             torch.randn(1, 64, 128, 128, generator=g)]}
        self._orig_hw, self._is_image_set = [image.shape[:2]], True

    monkeypatch.setattr(SAM2ImagePredictor, "set_image", fake_set_image)
    return calls


def _other_weights(path) -> None:
    """The same file name, other weights (a retrained or replaced checkpoint)."""
    state = torch.load(path, weights_only=True)
    next(iter(state["model"].values())).add_(1e-3)
    torch.save(state, path)


def test_reopening_reads_embeddings_and_a_new_checkpoint_recomputes(random_pt, tmp_path, encoder) -> None:
    from oct_wsss.propose.sam2_assist import Prompt, Sam2Assist

    data = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    vh, folder, prompt = volume_hash(data), tmp_path / "project" / "sam2-embeddings", Prompt(((30.0, 40.0),), (1,))
    first = Sam2Assist(random_pt, cache_dir=folder)
    masks = [first.segment(data[i], prompt, key=i, where=(vh, i)).mask for i in range(3)]
    assert first.backend.embeddings_computed == 3 and len(EmbeddingCache(folder).files()) == 3

    reopened = Sam2Assist(random_pt, cache_dir=folder)  # a new session on the same volume and checkpoint
    again = [reopened.segment(data[i], prompt, key=i, where=(vh, i)).mask for i in range(3)]
    assert reopened.backend.embeddings_computed == 0 and reopened.backend.embeddings_loaded == 3
    assert len(encoder) == 3  # the encoder ran once per B-scan, in the first session only
    for a, b in zip(masks, again, strict=True):  # the first session used the stored (float16) embedding too
        np.testing.assert_array_equal(a, b)

    _other_weights(random_pt)
    changed = Sam2Assist(random_pt, cache_dir=folder)
    changed.embed(data[0], key=0, where=(vh, 0))
    assert changed.backend.embeddings_computed == 1 and changed.backend.embeddings_loaded == 0


def test_the_sam2_widget_keeps_embeddings_in_the_open_project(random_pt, tmp_path, encoder, make_napari_viewer,
                                                               qtbot, monkeypatch) -> None:
    """The SAM 2 assist widget with a project open (Review): a reopened volume reads its embedding from
    PROJECT/sam2-embeddings, a replaced checkpoint file computes it again, and without a project nothing is kept."""
    from napari_helpers import MemorySettings

    from oct_wsss.napari import _sam2
    from oct_wsss.napari._sam2 import POSITIVE, Sam2Widget
    from oct_wsss.napari._session import session
    from oct_wsss.store import CorrectionStore

    monkeypatch.setattr(_sam2, "QSettings", lambda *a: MemorySettings())
    pt, project = tmp_path / "sam2.pt", tmp_path / "project"
    shutil.copy(random_pt, pt)
    data = np.random.default_rng(1).integers(0, 255, (3, 64, 80), dtype=np.uint8)

    def segment(w: Sam2Widget) -> np.ndarray:
        assert w.segment() is not None
        qtbot.waitUntil(lambda: not w.busy, timeout=60_000)
        return np.asarray(w.labels.value.data[1]).copy()

    def open_volume(with_project: bool = True) -> Sam2Widget:
        viewer = make_napari_viewer()
        viewer.add_image(data.copy(), name="oct")  # another array, the same voxels
        viewer.add_labels(np.zeros(data.shape, np.uint8), name="lesions (proposed)")
        if with_project:
            session(viewer).store = CorrectionStore(project)
        w = Sam2Widget(viewer)
        w.checkpoint.value, w.auto.value = str(pt), False
        w.add_prompt_layers()
        viewer.dims.set_current_step(0, 1)
        viewer.layers[POSITIVE].add([1, 30, 40])
        return w

    first = open_volume()
    painted = segment(first)
    assert len(encoder) == 1 and len(EmbeddingCache(project / "sam2-embeddings").files()) == 1
    assert painted.any() and "embedding" in first.status.value

    again = open_volume()
    assert np.array_equal(segment(again), painted)  # the very same mask from the stored embedding
    assert len(encoder) == 1 and again.assist.backend.embeddings_loaded == 1
    assert "read from the project" in again.status.value

    _other_weights(pt)
    again.labels.value.data[:] = 0
    segment(again)  # the same widget: the replaced file is another model, with no stored embeddings
    assert len(encoder) == 2 and again.assist.backend.embeddings_computed == 1
    assert len(EmbeddingCache(project / "sam2-embeddings").files()) == 2

    alone = open_volume(with_project=False)
    segment(alone)
    assert len(encoder) == 3 and alone.assist.backend.disk is None
    assert len(EmbeddingCache(project / "sam2-embeddings").files()) == 2


def test_hrf_proposals_keep_sam2_embeddings_in_the_project(random_pt, tmp_path, encoder, capsys) -> None:
    """``oct-wsss propose --method hrf --sam2-checkpoint PT --project DIR``: a second run on the volume reads every
    crop's embedding from DIR/sam2-embeddings and proposes the same; a replaced checkpoint computes them again."""
    from test_hrf_pipeline import _ckpt

    from oct_wsss.cli import main
    from oct_wsss.io import read_labels, write_volume
    from oct_wsss.store import CorrectionStore
    from oct_wsss.synth import make_volume

    pt, project = tmp_path / "sam2.pt", tmp_path / "project"
    shutil.copy(random_pt, pt)
    CorrectionStore(project)
    vol = write_volume(make_volume(3, n_bscans=2, height=96, width=128, prevalence={"hrf": 1.0}).volume,
                       tmp_path / "v.tif")
    hrf = _ckpt(tmp_path, 20.0)  # always finds HRF: two crops per B-scan with two iterations

    def propose(out: str, *extra: str) -> int:
        return main(["propose", str(vol), "--method", "hrf", "--checkpoint", str(hrf), "--out", str(tmp_path / out),
                     "--device", "cpu", "--iterations", "2", "--crop-size", "48", "--sam2-checkpoint", str(pt),
                     *extra])

    assert propose("one", "--project", str(project)) == 0
    assert len(encoder) == 4 and len(EmbeddingCache(project / "sam2-embeddings").files()) == 4
    assert propose("two", "--project", str(project)) == 0
    assert len(encoder) == 4  # every crop's embedding was read back
    np.testing.assert_array_equal(read_labels(tmp_path / "two" / "labels.tif"),
                                  read_labels(tmp_path / "one" / "labels.tif"))
    assert (tmp_path / "two" / "instances.csv").read_text() == (tmp_path / "one" / "instances.csv").read_text()
    _other_weights(pt)
    assert propose("three", "--project", str(project)) == 0
    assert len(encoder) == 8
    assert propose("four", "--project", str(tmp_path / "nowhere")) == 2  # refused before anything is written
    assert "not a project folder" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
