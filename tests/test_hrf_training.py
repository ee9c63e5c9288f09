"""HRF trainer on a tiny phantom: counts from masks, recipe end to end, checkpoint the proposer loads; grid tool."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import HRF
from oct_wsss.propose.hrf import HrfProposer
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.hrf import HrfTrainConfig, augment, hrf_count
from oct_wsss.training.recipe import train_recipe

RECIPE = """
method: hrf
seed: 0
out: {tmp}/run
device: cpu
data:
  layout: synth
  root: {tmp}/data
  generate: {{volumes: 5, n_bscans: 4, height: 96, width: 128, healthy_fraction: 0.2, seed: 1,
             prevalence: {{hrf: 1.0}}}}
classes: [hrf]
split: {{val_fraction: 0.2, test_fraction: 0.2, seed: 0}}
input_size: [96, 128]
hrf:
  model: {model}
  label_type: {label}
  variant: cct_2
  config: {config}
  epochs: 1
  batch_size: 8
  proposer: {{iterations: 2, crop_size: 32}}
"""


def test_counts_skip_small_annotations_and_augment_keeps_shape() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[2:5, 2:5] = HRF  # 9 px
    mask[20:22, 20:22] = HRF  # 4 px: dropped like the paper's < 5 px annotations
    mask[30, 30] = 2
    assert hrf_count(mask) == 1 and hrf_count(mask, min_area=1) == 2 and hrf_count(None) == 0
    x = torch.rand(3, 1, 40, 60)
    out = augment(x, {"shift": 0.1, "flip": 1.0, "rotation": 0.0, "scale": 0.0, "intensity": 0.0},
                  torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    plain = augment(x, {"flip": 1.0}, torch.Generator().manual_seed(0))
    assert torch.allclose(plain, x.flip(-1), atol=1e-5)
    with pytest.raises(TrainingError, match="model"):
        HrfTrainConfig(model="vit")
    with pytest.raises(TrainingError, match="unknown"):
        HrfTrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(("model", "label", "config"), [
    ("cct", "binary", "{dim: 16, heads: 2, conv_channels: 8}"),
    pytest.param("mil", "three_class", "{width: 4, features: 16, attention: 8, rows: 1}", marks=pytest.mark.slow),
])
def test_recipe_trains_evaluates_and_the_proposer_loads_it(tmp_path: Path, model: str, label: str,
                                                           config: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=model, label=label, config=config, tmp=tmp_path))
    ckpt_path = train_recipe(path, log=lambda s: None)
    assert ckpt_path.name == f"hrf-{model}.safetensors"
    ckpt = Checkpoint.load(ckpt_path, expect_method=f"hrf-{model}")
    assert ckpt.meta["params"]["crop_size"] == 32 and set(ckpt.meta["normalisation"]) == {"mean", "std"}
    report = json.loads((ckpt_path.parent / "hrf-test.json").read_text())
    assert {"iterations_1", "iterations_2", "relevance_threshold", "classifier"} <= set(report)
    assert report["refiner"] == "classical"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proposer = HrfProposer.from_checkpoint(ckpt_path, device="cpu")
    assert proposer.iterations == 2 and proposer.net.config.label_type == label


def test_grid_search_cli(tmp_path: Path, capsys) -> None:
    from oct_wsss.cli import main

    assert main(["synth", "--out", str(tmp_path / "d"), "--volumes", "2", "--bscans", "6", "--healthy-fraction",
                 "0", "--seed", "4"]) == 0
    rc = main(["hrf-grid", str(tmp_path / "d"), "--crops", "32,64", "--boxes", "2,4", "--max-foci", "6",
               "--csv", str(tmp_path / "g.csv")])
    out = capsys.readouterr().out
    assert rc == 0 and "best: crop" in out
    lines = (tmp_path / "g.csv").read_text().splitlines()
    assert lines[0] == "crop,box,dice,foci" and len(lines) == 5
    assert all(0 <= float(row.split(",")[2]) <= 1 for row in lines[1:])
    assert main(["hrf-grid", str(tmp_path / "d"), "--crops", "a"]) == 2


@pytest.mark.slow
def test_more_iterations_only_add_foci_on_a_trained_mil(tmp_path: Path) -> None:
    """A real (small) training run: the N-iteration masks contain the 1-iteration ones, so recall cannot drop."""
    path = tmp_path / "r.yaml"
    config = "{width: 8, features: 32, attention: 16, rows: 1}"
    path.write_text(RECIPE.format(model="mil", label="binary", config=config, tmp=tmp_path)
                    .replace("epochs: 1", "epochs: 4").replace("volumes: 5", "volumes: 8"))
    report = json.loads((train_recipe(path, log=lambda s: None).parent / "hrf-test.json").read_text())
    one, two = report["iterations_1"], report["iterations_2"]
    if one["recall"] is not None:
        assert two["recall"] >= one["recall"]
    assert report["relevance_threshold"]["oracle"]["dice"] >= report["relevance_threshold"]["global"]["dice"] - 1e-9


def test_harmonised_intensity_is_a_checkpoint_option_the_proposer_honours(tmp_path: Path) -> None:
    from oct_wsss.models.cct import Cct, CctConfig
    from oct_wsss.preprocess.inputs import to_unit
    from oct_wsss.preprocess.intensity import harmonise
    from oct_wsss.synth import make_volume

    bscan = make_volume(3, n_bscans=1, height=96, width=128).volume.data[0]
    dim = {"dim": 16, "heads": 2, "conv_channels": 8, "layers": 1, "input_size": [96, 128]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = HrfProposer(Cct(CctConfig(**dim)), {"mean": 0.2, "std": 0.1}, device="cpu")
        harmonised = HrfProposer(Cct(CctConfig(**dim)), {"mean": 0.2, "std": 0.1, "intensity": "harmonised"},
                                 device="cpu")
    np.testing.assert_array_equal(plain.prepare(bscan), to_unit(bscan))
    np.testing.assert_array_equal(harmonised.prepare(bscan), harmonise(bscan))
    assert not np.array_equal(harmonised.prepare(bscan), to_unit(bscan))
    assert plain.provenance()["intensity"] == "unit" and harmonised.provenance()["intensity"] == "harmonised"
    with pytest.raises(TrainingError, match="intensity"):
        HrfTrainConfig(intensity="zscore")
