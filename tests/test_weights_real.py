"""The bundled real-data student: named and listed apart from the demo ones, small, harmonised, an honest card, and it
proposes fluid and drusen on held-out real B-scans above the floor its card states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cards import card_floor

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import DRUSEN, FLUID
from oct_wsss.evaluate import image_confusions, segmentation_scores
from oct_wsss.propose import propose
from oct_wsss.training.datasets import load_dataset
from oct_wsss.volume import OctVolume
from oct_wsss.weights import (
    WEIGHTS_DIR,
    bundled,
    bundled_checkpoints,
    model_card,
    offered,
    real_checkpoints,
    real_variants,
)

REAL = WEIGHTS_DIR / "real-student.safetensors"


def test_real_student_is_listed_apart_from_the_demo_ones() -> None:
    assert REAL.is_file()
    variants = real_variants("student")  # real-wsss (no real pixel label) first where it ships, real-student last
    assert variants[-1] == REAL and all(p.name.startswith("real-") for p in variants)
    assert real_checkpoints() == {"student": variants[0]} and bundled("student", domain="real") == variants[0]
    assert bundled("student") == bundled_checkpoints()["student"] != REAL  # callers of the demo API are unaffected
    assert all(p.name.startswith("demo-") for p in bundled_checkpoints().values())
    assert offered("student", synthetic=False) == [*variants, bundled("student")]
    assert offered("student", synthetic=True) == [bundled("student"), *variants]
    with pytest.raises(ValueError, match="unknown domain 'clinic'"):
        bundled("student", domain="clinic")


def test_everything_bundled_stays_small_and_the_checkpoint_is_harmonised() -> None:
    assert REAL.stat().st_size <= 8 * 2**20
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert total < 40 * 2**20, f"bundled weights are {total / 2**20:.1f} MiB"
    meta = Checkpoint.load(REAL, expect_method="student").meta
    assert meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    assert meta["classes"] == [DRUSEN, FLUID]
    assert "Subject_01" in meta["training"]["held_out"]["duke_patients"]


def _card() -> tuple[str, dict]:
    card = model_card(REAL)
    assert card is not None
    text = card.read_text()
    return text, card_floor(text)


def test_the_card_is_honest() -> None:
    text, floor = _card()
    for needed in ("Not for clinical use", "training/real-student.yaml", "held-out", "CPU", "Known limits",
                   "Intended use", "Subject_01", "Subject_07", Checkpoint.load(REAL).sha256[:16]):
        assert needed in text, needed
    assert set(floor["dsc"]) == {"fluid", "drusen"}


def test_proposes_on_held_out_real_bscans_above_the_card_floor(shared_data: Path) -> None:
    _, floor = _card()
    duke = {f"{s.patient}_{s.bscan:02d}": s for s in load_dataset(
        {"layout": "duke", "root": str(shared_data / "duke_dme_chiu2015")}).samples}
    bonn = {f"bonn_{s.bscan:03d}": s for s in load_dataset(
        {"layout": "bonn", "root": str(shared_data / "bonn_drusen_volume")}).samples}
    for cls, key, pool in ((FLUID, "fluid", duke), (DRUSEN, "drusen", bonn)):
        samples = [pool[name] for name in floor["bscans"][key]]
        truths, preds = [], []
        for s in samples:
            image = s.load_image()
            result = propose(OctVolume(image[None], spacing_mm=(1.0, 1.0, 1.0)), "student", REAL, device="cpu")
            assert result.labels.shape == (1, *image.shape)
            assert set(np.unique(result.labels)) <= {0, DRUSEN, FLUID}
            assert result.provenance["params"]["intensity"] == "harmonised"
            truths.append(s.load_mask())
            preds.append(result.labels[0])
        dice = segmentation_scores(image_confusions(truths, preds), (cls,)).classes[key].dice_pooled
        assert dice is not None and dice > floor["dsc"][key], f"{key}: DSC {dice} not above {floor['dsc'][key]}"
