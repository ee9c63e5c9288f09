"""The bundled demo checkpoints: each loads, proposes on the demo phantom above the DSC floor its model card states,
and its card says what it is (not for clinical use, the data, the recipe); together they stay small."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from cards import card_floor

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate import evaluate_labels
from oct_wsss.propose import propose
from oct_wsss.synth import demo_phantom
from oct_wsss.weights import bundled, bundled_checkpoints, model_card

BUNDLED = bundled_checkpoints()
ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_student_is_bundled_and_everything_is_small() -> None:
    assert bundled("student") is not None, "the demo's default proposer must ship"
    total = sum(p.stat().st_size for p in BUNDLED.values())
    assert total < 40 * 2**20, f"bundled weights are {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("method", sorted(BUNDLED))
def test_every_bundled_checkpoint_has_an_honest_card(method: str) -> None:
    card = model_card(BUNDLED[method])
    assert card is not None
    text = card.read_text()
    for needed in ("Not for clinical use", "held-out", "CPU", "Known limits", "Intended use",
                   "smaller than the full-size recipe"):
        assert needed in text, needed
    assert card_floor(text)["dsc"], "a floor for at least one class"
    ckpt = Checkpoint.load(BUNDLED[method])
    assert ckpt.method.startswith(method)
    # the card names the recipe that made the checkpoint (as the checkpoint records it), and that recipe ships
    recipe = re.search(r"Recipe: \[`training/([\w.-]+\.yaml)`\]", text)
    assert recipe, "the card names no recipe"
    assert recipe.group(1) == ckpt.meta.get("training", {}).get("recipe", f"demo-{method}.yaml")
    assert (ROOT / "training" / recipe.group(1)).is_file(), recipe.group(1)


@pytest.mark.parametrize("method", sorted(BUNDLED))
def test_bundled_checkpoint_proposes_above_the_floor_in_its_card(method: str) -> None:
    path = BUNDLED[method]
    floor = card_floor(model_card(path).read_text())
    phantom = demo_phantom()
    bscans = floor["bscans"]
    result = propose(phantom.volume, method=method, checkpoint=path, bscans=bscans, device="cpu")
    classes = tuple(result.classes)
    truth = phantom.labels[bscans]
    if by_key("fluid").id in classes:  # a fluid model is scored against SRF + IRF
        truth = np.where(np.isin(truth, (by_key("srf").id, by_key("irf").id)), by_key("fluid").id, truth)
    scores = evaluate_labels(truth.astype(np.uint8), result.labels[bscans], classes)
    assert set(floor["dsc"]) <= {ONTOLOGY[c].key for c in classes}
    for key, minimum in floor["dsc"].items():
        dsc = scores.classes[key].dice_pooled
        assert dsc is not None and dsc > minimum, f"{method} {key}: DSC {dsc} not above the card's floor {minimum}"


def test_the_demo_student_proposes_every_lesion_class_on_harmonised_inputs() -> None:
    """The demo's default proposer is the phantom multi-class student: six lesion classes, no "fluid" (7), and the
    harmonised intensities and the flip averaging its checkpoint records are what the proposer applies."""
    from oct_wsss.propose import load_proposer

    ckpt = Checkpoint.load(bundled("student"))
    keys = ("srf", "irf", "ped", "ez", "hrf", "drusen")
    assert tuple(ckpt.meta["classes"]) == tuple(by_key(k).id for k in keys)
    assert ckpt.meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    assert ckpt.meta["training"]["recipe"] == "phantom-student.yaml"
    proposer = load_proposer("student", bundled("student"), device="cpu")
    assert proposer.intensity == "harmonised" and by_key("fluid").id not in proposer.classes
    assert proposer.flip  # flip averaging, chosen on the phantom (docs/results-real.md 10.8)
    phantom = demo_phantom(n_bscans=49)
    result = propose(phantom.volume, proposer=proposer, bscans=[24, 27, 32])
    assert result.provenance["params"]["intensity"] == "harmonised"
    found = set(np.unique(result.labels[[24, 27, 32]]).tolist()) - {0}
    assert {by_key(k).id for k in ("srf", "irf", "ped", "drusen")} <= found, found
