"""SAM 2 embeddings on disk (issue 21): reopening a volume reads them back instead of computing them, a changed
checkpoint file invalidates them, and the folder's size bound holds (least recently used files go first)."""

from __future__ import annotations

import os

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


def test_reopening_reads_embeddings_and_a_new_checkpoint_recomputes(random_pt, tmp_path, monkeypatch) -> None:
    """The encoder is replaced by a stand-in with SAM 2's feature shapes (the real one takes ~20 s a B-scan on a CPU;
    scripts/sam2_cache_bench.py times the real thing)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from oct_wsss.propose.sam2_assist import Prompt, Sam2Assist

    def fake_set_image(self, image) -> None:
        g = torch.Generator().manual_seed(int(image.sum()) % 1000)
        self._features = {"image_embed": torch.randn(1, 256, 64, 64, generator=g),
                          "high_res_feats": [torch.randn(1, 32, 256, 256, generator=g),
                                             torch.randn(1, 64, 128, 128, generator=g)]}
        self._orig_hw, self._is_image_set = [image.shape[:2]], True

    monkeypatch.setattr(SAM2ImagePredictor, "set_image", fake_set_image)
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    vh, folder, prompt = volume_hash(data), tmp_path / "project" / "sam2-embeddings", Prompt(((30.0, 40.0),), (1,))
    first = Sam2Assist(random_pt, cache_dir=folder)
    masks = [first.segment(data[i], prompt, key=i, where=(vh, i)).mask for i in range(3)]
    assert first.backend.embeddings_computed == 3 and len(EmbeddingCache(folder).files()) == 3

    reopened = Sam2Assist(random_pt, cache_dir=folder)  # a new session on the same volume and checkpoint
    again = [reopened.segment(data[i], prompt, key=i, where=(vh, i)).mask for i in range(3)]
    assert reopened.backend.embeddings_computed == 0 and reopened.backend.embeddings_loaded == 3
    assert all((a == b).mean() > 0.99 for a, b in zip(masks, again, strict=True))  # float16 on disk

    state = torch.load(random_pt, weights_only=True)
    next(iter(state["model"].values())).add_(1e-3)
    torch.save(state, random_pt)  # the same file name, other weights
    changed = Sam2Assist(random_pt, cache_dir=folder)
    changed.embed(data[0], key=0, where=(vh, 0))
    assert changed.backend.embeddings_computed == 1 and changed.backend.embeddings_loaded == 0
