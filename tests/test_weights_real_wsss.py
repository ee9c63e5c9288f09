"""The bundled weakly supervised real-OCT student (``real-wsss``): the phantom student adapted with real image-level
labels only. Its checkpoint says so and names no patient; it is small and harmonised, its card is honest, and it
proposes fluid on real B-scans it never saw (the Keshav masks) above the floor its card states."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from cards import card_floor

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import IRF, SRF, by_key
from oct_wsss.propose import propose
from oct_wsss.volume import OctVolume
from oct_wsss.weights import WEIGHTS_DIR, model_card, real_variants

WSSS = WEIGHTS_DIR / "real-wsss.safetensors"
LESIONS = ("srf", "irf", "ped", "ez", "hrf", "drusen")


def _card() -> tuple[str, dict]:
    card = model_card(WSSS)
    assert card is not None
    text = card.read_text()
    return text, card_floor(text)


def test_it_is_offered_first_for_real_scans_and_learnt_no_real_pixel_label() -> None:
    assert WSSS.is_file() and WSSS.stat().st_size <= 10 * 2**20
    assert real_variants("student")[0] == WSSS
    meta = Checkpoint.load(WSSS, expect_method="student").meta
    assert meta["classes"] == [by_key(k).id for k in LESIONS]
    assert meta["normalisation"] == {"input": "unit", "intensity": "harmonised"}
    training = meta["training"]
    assert training["recipe"] == "real-wsss.yaml" and training["rounds"] >= 1
    # it started from the phantom student bundled as demo-student at the time, whose hash the card names
    assert training["init"]["file"] == "demo-student.safetensors"
    assert f"SHA-256 `{training['init']['sha256'][:8]}" in _card()[0]
    assert any(d["name"].startswith("duke:") and d["image_labels"] == ["fluid"] for d in training["real_data"])
    assert all(d["pixel_masks"] in ("dropped unread", "none") for d in training["real_data"])
    assert "Subject_" not in json.dumps(meta), "the checkpoint names no patient"


def test_the_card_is_honest() -> None:
    text, floor = _card()
    for needed in ("Not for clinical use", "training/real-wsss.yaml", "image-level", "leave-one-patient-out", "CPU",
                   "Known limits", "Intended use", Checkpoint.load(WSSS).sha256[:16]):
        assert needed in text, needed
    assert set(floor["dsc"]) == {"fluid"}


def test_proposes_fluid_on_unseen_real_bscans_above_the_card_floor(shared_data: Path) -> None:
    _, floor = _card()
    keshav = shared_data / "keshav_fau_amd_oct"
    inter = total = 0
    for row in csv.DictReader(open(keshav / "pixel_masks" / "index.csv")):
        image, truth = iio.imread(keshav / row["image"]), iio.imread(keshav / row["mask"]) > 0
        result = propose(OctVolume(image[None], spacing_mm=(1.0, 1.0, 1.0)), "student", WSSS, device="cpu")
        assert result.provenance["params"]["intensity"] == "harmonised"
        wet = np.isin(result.labels[0], (SRF, IRF))
        inter, total = inter + int((wet & truth).sum()), total + int(wet.sum() + truth.sum())
    dice = 2 * inter / max(total, 1)
    assert dice > floor["dsc"]["fluid"], f"Keshav fluid DSC {dice:.3f} not above {floor['dsc']['fluid']}"
