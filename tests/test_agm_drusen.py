"""AGM trains with drusen (ontology id 6) as a class and harmonised inputs: a tiny recipe on a phantom with drusen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import tiny_agm_recipe, write_recipe

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import DRUSEN, SRF
from oct_wsss.propose import propose
from oct_wsss.synth import make_volume
from oct_wsss.training import Recipe, train_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_agm_recipe_with_drusen_trains_and_proposes_class_6(tmp_path: Path) -> None:
    raw = tiny_agm_recipe(tmp_path, ("srf", "drusen"), intensity="harmonised")
    recipe = Recipe.load(write_recipe(tmp_path, raw))
    assert recipe.classes == (SRF, DRUSEN)
    train = recipe.splits()[0]
    assert any(DRUSEN in s.labels for s in train), "the phantom must hold drusen for this test to mean anything"
    path = train_recipe(recipe.path, log=lambda _m: None)
    ckpt = Checkpoint.load(path, expect_method="agm")
    assert ckpt.meta["classes"] == [SRF, DRUSEN]
    # the recipe asked for harmonised inputs: the AGM checkpoint and its GANomaly stage record it
    assert ckpt.meta["normalisation"] == {"input": "unit", "x_hat": "unit", "intensity": "harmonised"}
    gan = Checkpoint.load(path.parent / "ganomaly.safetensors", expect_method="ganomaly")
    assert gan.meta["normalisation"]["intensity"] == "harmonised"
    vol = make_volume(5, n_bscans=2, height=64, width=64, prevalence={"drusen": 1.0}).volume
    result = propose(vol, "agm", path, device="cpu", keep_scores=True)
    assert result.classes == (SRF, DRUSEN) and set(np.unique(result.labels)) <= {0, SRF, DRUSEN}
    assert result.scores.shape == (2, 2, 64, 64) and np.isfinite(result.probabilities).all()
    assert result.provenance["params"]["intensity"] == "harmonised"
    assert Recipe.load(ROOT / "training" / "agm-synth-drusen.yaml").classes[-1] == DRUSEN
