"""The bundled demo checkpoints: each loads, proposes on the demo phantom above the DSC floor its model card states,
and its card says what it is (not for clinical use, the data, the recipe); together they stay small."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.evaluate import evaluate_labels
from oct_wsss.propose import propose
from oct_wsss.synth import demo_phantom
from oct_wsss.weights import bundled, bundled_checkpoints, model_card

BUNDLED = bundled_checkpoints()


def card_floor(text: str) -> dict:
    """The JSON after "**Test floor**" in a model card."""
    match = re.search(r"\*\*Test floor\*\*.*?: `(\{.*\})`", text)
    assert match, "the model card states no test floor"
    return json.loads(match.group(1))


def test_the_demo_student_is_bundled_and_everything_is_small() -> None:
    assert bundled("student") is not None, "the demo's default proposer must ship"
    total = sum(p.stat().st_size for p in BUNDLED.values())
    assert total < 40 * 2**20, f"bundled weights are {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("method", sorted(BUNDLED))
def test_every_bundled_checkpoint_has_an_honest_card(method: str) -> None:
    card = model_card(BUNDLED[method])
    assert card is not None
    text = card.read_text()
    for needed in ("Not for clinical use", f"training/demo-{method}.yaml", "held-out", "CPU", "Known limits",
                   "Intended use", "smaller than the full-size recipe"):
        assert needed in text, needed
    assert card_floor(text)["dsc"], "a floor for at least one class"
    assert Checkpoint.load(BUNDLED[method]).method.startswith(method)


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
