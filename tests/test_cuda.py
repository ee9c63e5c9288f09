"""The CUDA paths, on a GPU only (``-m cuda``; deselected by default, run by scripts/device_check.sh): bf16 autocast
and channels-last agree with the CPU, out of memory halves the batch and then moves to the CPU under a forced memory
cap, and SAM 2 embeds and answers prompts on the GPU with random weights."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from reliability_helpers import tiny_student

from oct_wsss.propose import propose
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.propose.student import StudentProposer
from oct_wsss.synth import make_volume
from oct_wsss.weights import bundled

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def gpu() -> Iterator[None]:
    """A GPU, or a failure that says these tests need one (they are never skipped into a green run)."""
    assert torch.cuda.is_available(), "tests marked cuda need a CUDA GPU; run them with -m cuda on such a machine"
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def test_student_bf16_channels_last_agrees_with_the_cpu() -> None:
    bscans = list(make_volume(3, n_bscans=4, height=496, width=512).volume.data)
    cpu = StudentProposer.from_checkpoint(bundled("student"), device="cpu")
    gpu = StudentProposer.from_checkpoint(bundled("student"), device="cuda")
    conv = next(m.weight for m in gpu.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    p_cpu, p_gpu = cpu.probabilities(bscans), gpu.probabilities(bscans)
    assert np.abs(p_cpu - p_gpu).mean() < 0.01
    assert (cpu.labels(p_cpu) == gpu.labels(p_gpu)).mean() > 0.99


def test_agm_autocast_agrees_with_the_cpu() -> None:
    bscans = list(make_volume(4, n_bscans=2, height=496, width=512).volume.data)
    cpu = AgmProposer.from_checkpoint(bundled("agm"), device="cpu")
    gpu = AgmProposer.from_checkpoint(bundled("agm"), device="cuda")
    (s_cpu, pr_cpu), (s_gpu, pr_gpu) = cpu.scores(bscans), gpu.scores(bscans)
    assert np.abs(pr_cpu - pr_gpu).max() < 0.05
    both = (s_cpu.std() > 0) and (s_gpu.std() > 0)
    assert both and np.corrcoef(s_cpu.ravel(), s_gpu.ravel())[0, 1] > 0.95


def test_retina_masks_on_the_gpu_equal_the_cpu() -> None:
    from oct_wsss.preprocess.inputs import retina_masks

    x = torch.from_numpy(make_volume(7, n_bscans=4, height=496, width=512).volume.data / 255.0).float()[:, None]
    np.testing.assert_array_equal(retina_masks(x.cuda()), retina_masks(x))


def test_out_of_memory_halves_the_batch_then_moves_to_the_cpu(tmp_path) -> None:
    ckpt = tiny_student(tmp_path / "big-input.safetensors", width=32, depth=3, input_size=(1024, 1024))
    volume = make_volume(5, n_bscans=6, height=248, width=256).volume
    expected = propose(volume, proposer=StudentProposer.from_checkpoint(ckpt, device="cpu", batch_size=1)).labels
    proposer = StudentProposer.from_checkpoint(ckpt, device="cuda", batch_size=8)
    sizes: list[int] = []
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 2**20)
                                              / torch.cuda.get_device_properties(0).total_memory)
    original = proposer.probabilities

    def watched(bscans):
        sizes.append(len(bscans))
        return original(bscans)

    proposer.probabilities = watched
    got = propose(volume, proposer=proposer)
    assert sizes[:4] == [6, 4, 2, 1] and proposer.device.type == "cpu"  # 8 (6 left) -> 4 -> 2 -> 1 -> the CPU
    assert got.provenance["device"] == "cpu" and proposer.batch_size == 1
    np.testing.assert_array_equal(got.labels, expected)


def test_sam2_embeds_and_answers_prompts_on_the_gpu() -> None:
    from oct_wsss.propose.sam2_backend import Sam2Backend

    torch.manual_seed(0)
    backend = Sam2Backend(device="cuda", allow_random=True)
    crop = make_volume(6, n_bscans=1, height=256, width=256).volume.data[0]
    first = backend.box(crop, (100.0, 100.0, 140.0, 130.0))
    second = backend.predict(points=np.array([[120.0, 115.0]], np.float32), point_labels=np.array([1]))
    assert first.mask.shape == crop.shape == second.mask.shape and first.mask.dtype == bool
    assert backend.embeddings_computed == 1 and np.isfinite(first.score)
    features = backend.predictor._features["image_embed"]
    assert features.is_cuda
