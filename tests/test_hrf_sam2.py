"""SAM 2 backend on the real ``sam2`` package: packaged config, random weights, box prompt on a crop, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oct_wsss.checkpoint import CheckpointError
from oct_wsss.propose import ProposalError
from oct_wsss.propose.sam2_backend import Sam2Backend, config_file, to_rgb8


def test_configs_and_inputs() -> None:
    assert config_file("sam2.1_hiera_t") == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert config_file("configs/sam2.1/sam2.1_hiera_b+.yaml") == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    with pytest.raises(ProposalError, match="unknown SAM 2 config"):
        config_file("sam3_huge")
    rgb = to_rgb8(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and rgb[-1, -1, 0] == 255
    with pytest.raises(ValueError, match="grey"):
        to_rgb8(np.zeros((2, 3, 4)))
    with pytest.raises(ProposalError, match="checkpoint"):
        Sam2Backend()  # no checkpoint and random weights not allowed


@pytest.mark.slow
def test_random_sam2_box_prompt_returns_crop_sized_mask_and_loads_checkpoints(tmp_path) -> None:
    torch.manual_seed(0)
    backend = Sam2Backend("sam2.1_hiera_t", allow_random=True, device="cpu")
    crop = np.random.default_rng(0).random((70, 58)).astype(np.float32)
    out = backend.box(crop, (27.0, 33.0, 31.0, 37.0))
    assert out.mask.shape == (70, 58) and out.mask.dtype == bool and 0.0 <= out.score <= 1.5
    again = backend.box(crop, (20.0, 20.0, 40.0, 40.0))
    assert backend.embeddings_computed == 1 and again.mask.shape == (70, 58)  # the embedding came from the cache
    path = tmp_path / "sam2.pt"
    torch.save({"model": backend.predictor.model.state_dict()}, path)
    loaded = Sam2Backend("sam2.1_hiera_t", path)
    assert loaded.provenance()["sha256"] and np.array_equal(loaded.box(crop, (27.0, 33.0, 31.0, 37.0)).mask,
                                                             out.mask)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="SAM 2"):
        Sam2Backend("sam2.1_hiera_t", tmp_path / "bad.pt")
