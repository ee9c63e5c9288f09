"""Memory of loaded models (the paper-size AGM must propose under 2 GB on a CPU): no second copy of the weights."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import tiny_agm_checkpoint

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.propose.agm import AgmProposer


def _storage_ptrs(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}


def test_loaded_proposer_holds_one_copy_of_the_weights(tmp_path: Path) -> None:
    """The AGM network and GANomaly generator use the checkpoint's own tensors (built on meta, assigned), and
    those are views of the file's bytes: the weights are in memory once, not once per copy made while loading."""
    ckpt = Checkpoint.load(tiny_agm_checkpoint(tmp_path / "agm.safetensors"))
    proposer = AgmProposer.from_checkpoint(ckpt, device="cpu")
    held = {t.untyped_storage().data_ptr() for t in ckpt.state_dict.values() if t.numel()}
    assert _storage_ptrs(proposer.net) | _storage_ptrs(proposer.generator) <= held | {0}
    base = min(held)
    assert max(held) - base < (tmp_path / "agm.safetensors").stat().st_size  # all inside one file-sized buffer
    assert all(t.dtype == torch.float32 for t in ckpt.state_dict.values() if t.is_floating_point())


def test_a_proposal_does_not_hold_ganomalys_second_encoder(tmp_path: Path) -> None:
    """Encoder 2 (ẑ) is a training term: the proposer loads without its weights, and the file's hash is unchanged,
    and x̂ is bitwise what the full generator makes."""
    import hashlib

    from oct_wsss.models.ganomaly import GanomalyConfig, Generator, healthy_counterpart

    path = tiny_agm_checkpoint(tmp_path / "agm.safetensors")
    full = Checkpoint.load(path)
    assert any(k.startswith("generator.encoder2.") for k in full.state_dict)
    proposer = AgmProposer.from_checkpoint(path, device="cpu")
    held = proposer.checkpoint.state_dict
    assert held and not any(k.startswith("generator.encoder2.") for k in held)
    assert set(held) == {k for k in full.state_dict if not k.startswith("generator.encoder2.")}
    assert proposer.checkpoint.sha256 == full.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    generator = Generator(GanomalyConfig.from_dict(full.meta["architecture"]["ganomaly"]))
    generator.load_state_dict({k[len("generator."):]: v for k, v in full.state_dict.items()
                               if k.startswith("generator.")})
    x = torch.rand(2, 1, 40, 48)
    with torch.no_grad():
        assert torch.equal(healthy_counterpart(proposer.generator, x), healthy_counterpart(generator.eval(), x))


def test_loaded_tensors_equal_the_saved_ones(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.zeros(0, 4),
             "d": torch.randn(4, dtype=torch.float64).to(torch.bfloat16), "e": torch.tensor(2.5)}
    path = Checkpoint.new(state, method="student", architecture={}, classes=[1], input_size=[8, 8],
                          normalisation={}).save(tmp_path / "x.safetensors")
    loaded = Checkpoint.load(path).state_dict
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        assert torch.equal(loaded[key], value)


def test_cpu_gradcam_forwards_two_paper_size_images_at_a_time() -> None:
    """Twelve augmented 512 x 512 images per forward cost ~0.4 GB more peak memory on a CPU than two, for no speed."""
    from oct_wsss.models.agm import AgmConfig, AgmNet

    net = AgmNet(AgmConfig(n_classes=1, backbone="resnet18", image_channels=1, encoder_width=4, width=8))
    assert AgmProposer(net, None, (1,), (512, 512), device="cpu").gradcam.max_batch == 2
    assert AgmProposer(net, None, (1,), (128, 128), device="cpu").gradcam.max_batch == 12
