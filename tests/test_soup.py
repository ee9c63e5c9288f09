"""Recipe key ``soup: N``: N seeds of one recipe trained and their weights averaged into one student checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_recipe

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.cli import main
from oct_wsss.training import train_recipe
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.soup import average_weights, soup_checkpoint


def _ckpt(value: float, classes: list[int] | None = None) -> Checkpoint:
    state = {"conv.weight": torch.full((2, 3), value), "bn.num_batches_tracked": torch.tensor(int(value) + 7)}
    return Checkpoint.new(state, method="student", architecture={"student": {"width": 4}}, classes=classes or [1, 2],
                          input_size=[64, 64], normalisation={}, training={"seed": int(value)})


def test_average_is_the_mean_of_the_floats_and_counters_come_from_the_first() -> None:
    mean = average_weights([_ckpt(1.0), _ckpt(2.0), _ckpt(6.0)])
    torch.testing.assert_close(mean["conv.weight"], torch.full((2, 3), 3.0))
    assert int(mean["bn.num_batches_tracked"]) == 8


def test_runs_that_are_not_one_model_are_refused() -> None:
    other = _ckpt(1.0)
    other.state_dict["conv.weight"] = torch.zeros(3, 3)
    with pytest.raises(TrainingError, match="differ in their tensors"):
        average_weights([_ckpt(1.0), other])
    with pytest.raises(TrainingError, match="differ in classes"):
        soup_checkpoint([_ckpt(1.0), _ckpt(2.0, classes=[1, 3])], [0, 1])


@pytest.mark.parametrize("bad", [0, True, 1.5, "2"])
def test_soup_must_be_a_count_of_runs(tmp_path: Path, bad: object) -> None:
    raw = {**_recipe(tmp_path), "soup": bad}
    with pytest.raises(TrainingError, match="soup must be a whole number"):
        train_recipe(write_recipe(tmp_path, raw), log=lambda _m: None)


def test_soup_trains_each_seed_and_writes_their_average(tmp_path: Path) -> None:
    """Two seeds are trained into seed-0 and seed-1, the run's checkpoint is their mean with both SHA-256s on its
    card, and a rerun reuses the finished seeds (it resumes instead of training again)."""
    raw = {**_recipe(tmp_path), "soup": 2}
    assert main(["train", str(write_recipe(tmp_path, raw))]) == 0
    run = tmp_path / "run"
    seeds = [Checkpoint.load(run / f"seed-{s}" / "student.safetensors") for s in (0, 1)]
    soup = Checkpoint.load(run / "student.safetensors")
    assert soup.meta["training"]["soup"]["ingredients"] == [c.sha256 for c in seeds]
    assert soup.meta["training"]["seed"] == [0, 1] and [c.meta["training"]["seed"] for c in seeds] == [0, 1]
    key = next(k for k, v in soup.state_dict.items() if v.is_floating_point() and v.numel() > 8)
    assert not torch.equal(seeds[0].state_dict[key], seeds[1].state_dict[key])  # the seeds did differ
    torch.testing.assert_close(soup.state_dict[key], (seeds[0].state_dict[key] + seeds[1].state_dict[key]) / 2)
    lines: list[str] = []
    train_recipe(write_recipe(tmp_path, raw), log=lines.append)
    assert sum("already trained" in line for line in lines) == 2
    assert Checkpoint.load(run / "student.safetensors").sha256 == soup.sha256


def _recipe(tmp_path: Path) -> dict:
    return {"method": "student", "seed": 0, "out": str(tmp_path / "run"), "device": "cpu",
            "data": {"layout": "synth", "root": str(tmp_path / "synth"),
                     "generate": {"volumes": 2, "n_bscans": 2, "height": 64, "width": 64, "seed": 0,
                                  "healthy_fraction": 0.0, "prevalence": {"srf": 1.0, "irf": 1.0}}},
            "classes": ["srf", "irf"], "input_size": [64, 64], "split": {"val_fraction": 0.0},
            "pseudo": {"truth": True},
            "student": {"config": {"arch": "unet", "width": 4, "depth": 3}, "epochs": 1, "batch_size": 2}}
