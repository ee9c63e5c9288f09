"""Shared fixtures: where the real OCT data lives (``../shared/data``, never copied into the repo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oct_wsss.napari._imports import hide_triton

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# triton (which torchvision's first import pulls in through torch._dynamo) segfaults when it loads after a napari
# viewer made an OpenGL context under Mesa; the widgets hide it (oct_wsss.napari._imports), and so does the suite, so
# that a torch test run after a napari test in any order or selection (e.g. -k) cannot crash. Nothing uses
# torch.compile.
hide_triton()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real OCT samples; tests that need it skip, with the reason, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real OCT samples not present at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_vol(shared_data: Path) -> Path:
    """A real Heidelberg Spectralis .vol file (ONH circle scan, 1 B-scan)."""
    path = shared_data / "raw_format_samples" / "heidelberg_vol_retimat_onh" / "onh.vol"
    if not path.is_file():
        pytest.skip(f"{path} is missing from the shared data")
    return path


def run_torchrun(script: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """Run ``script`` on two CPU ranks with ``torch.distributed.run`` (one thread each), the repo's src importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *args], capture_output=True, text=True, env=env, timeout=timeout)


def tiny_agm_checkpoint(path: Path, classes: tuple[int, ...] = (1, 2, 3), *, gan_size: int = 64,
                        input_size: int = 64, threshold: float = 0.4) -> Path:
    """An ``agm`` checkpoint with random weights, small enough for fast tests (ResNet-18, narrow ASAM, tiny G)."""
    import torch

    from oct_wsss.checkpoint import Checkpoint
    from oct_wsss.models.agm import AgmConfig, AgmNet
    from oct_wsss.models.ganomaly import GanomalyConfig, Generator
    from oct_wsss.propose.agm import bundle_state

    torch.manual_seed(0)
    net = AgmNet(AgmConfig(n_classes=len(classes), backbone="resnet18", image_channels=1, encoder_width=4))
    gen = Generator(GanomalyConfig(image_size=gan_size, nc=1, nz=16, ngf=4, ndf=4))
    ckpt = Checkpoint.new(bundle_state(net, gen), method="agm",
                          architecture={"agm": net.config.to_dict(), "ganomaly": gen.config.to_dict()},
                          classes=list(classes), input_size=[input_size, input_size], normalisation={"input": "unit"},
                          params={"threshold": threshold, "cam_layers": ["backbone", "asam"]})
    return ckpt.save(path)


def write_recipe(folder: Path, raw: dict, **changes: object) -> Path:
    """``folder/recipe.yaml`` from a recipe mapping with ``changes`` applied on top (the tests' tiny recipes)."""
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({**raw, **changes}))
    return path


def tiny_agm_recipe(folder: Path, classes: tuple[str, ...] = ("srf", "irf"), **agm: object) -> dict:
    """The tests' tiny AGM recipe mapping (4 phantom volumes of 4 x 64 x 64 holding ``classes``); ``agm`` adds to its
    ``agm`` block."""
    return {
        "method": "agm", "seed": 0, "out": str(folder / "run"), "device": "cpu",
        "data": {"layout": "synth", "root": str(folder / "synth"),
                 "generate": {"volumes": 4, "n_bscans": 4, "height": 64, "width": 64, "healthy_fraction": 0.25,
                              "seed": 0, "prevalence": {k: 0.9 for k in classes}}},
        "classes": list(classes),
        "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
        "input_size": [64, 64],
        "ganomaly": {"config": {"image_size": 32, "nc": 1, "nz": 8, "ngf": 4, "ndf": 4}, "epochs": 1,
                     "batch_size": 4},
        "agm": {"config": {"backbone": "resnet18", "encoder_width": 4, "image_channels": 1}, "epochs": 1,
                "batch_size": 4, "optimizer": {"name": "adam", "lr": 1e-3}, "refine_epochs": 1,
                "refine_batch_size": 4, "max_steps_per_epoch": 2, **agm},
    }
