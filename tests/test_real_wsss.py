"""Weak adaptation to real B-scans (issue 19): the image-level filter, the refusal of real pixel labels, bad input,
and a tiny end-to-end run of the real-wsss recipe on the phantom plus shared Duke B-scans (image labels only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import write_recipe

from oct_wsss.checkpoint import Checkpoint
from oct_wsss.classes import DRUSEN, FLUID, IRF, PED, SRF
from oct_wsss.cli import main
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.training import Recipe
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.loader import Augment
from oct_wsss.training.real_wsss import real_sets
from oct_wsss.training.student import student_checkpoint, student_loss
from oct_wsss.training.student_data import IGNORE, WEAK, StudentDataset, Target
from oct_wsss.training.weak_labels import Confidence, image_level_target, verdicts

CLASSES = (SRF, IRF, PED, DRUSEN)


def _probs(winner: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(1 + 4, H, W) softmax-like maps where channel ``winner`` holds ``p`` and the rest share 1 - p."""
    out = np.repeat(((1.0 - p) / 4)[None], 5, 0)
    for j in range(5):
        out[j][winner == j] = p[winner == j]
    return out.astype(np.float32)


def test_the_image_level_filter_drops_every_class_the_label_excludes() -> None:
    """Constructed case: a Duke-like label (fluid known) on a B-scan without fluid turns SRF and IRF into background
    at any confidence; PED (the label says nothing of it) is left out; unsure pixels are left out, not background.
    On a B-scan that shows fluid only the confident fluid is a target, unless positive_background asks for more."""
    winner = np.array([[0, 0, 1, 1, 2, 3]])
    p = np.array([[0.95, 0.6, 0.99, 0.5, 0.99, 0.99]])
    probs = _probs(winner, p)
    no_fluid = image_level_target(probs, CLASSES, labels=set(), known={FLUID})
    assert no_fluid.tolist() == [[0, IGNORE, 0, 0, 0, IGNORE]]
    fluid = image_level_target(probs, CLASSES, labels={FLUID}, known={FLUID})
    assert fluid.tolist() == [[IGNORE, IGNORE, SRF, IGNORE, IRF, IGNORE]]
    naive = image_level_target(probs, CLASSES, labels={FLUID}, known={FLUID}, confidence=Confidence(0.7, 0.9, True))
    assert naive.tolist() == [[0, IGNORE, SRF, IGNORE, IRF, IGNORE]]
    drusen = image_level_target(_probs(np.array([[4, 4]]), np.array([[0.9, 0.9]])), CLASSES, {DRUSEN}, {DRUSEN})
    assert drusen.tolist() == [[DRUSEN, DRUSEN]]


def test_top_k_teaches_the_likeliest_pixels_of_a_shown_class_and_nothing_on_other_bscans() -> None:
    """Multiple-instance targets: on a B-scan labelled fluid the k pixels of highest SRF + IRF probability become
    their likelier fluid class even below the lesion confidence; confident targets and B-scans without fluid are
    unchanged."""
    probs = _probs(np.array([[0, 0, 1, 1, 2, 3]]), np.array([[0.95, 0.6, 0.99, 0.5, 0.99, 0.99]]))
    mil = Confidence(top_k=4)
    assert image_level_target(probs, CLASSES, {FLUID}, {FLUID}, mil).tolist() == [[IGNORE, SRF, SRF, SRF, IRF, IGNORE]]
    assert image_level_target(probs, CLASSES, set(), {FLUID}, mil).tolist() == [[0, IGNORE, 0, 0, 0, IGNORE]]
    with pytest.raises(ValueError, match="top_k"):
        Confidence(top_k=-1)


def test_verdicts_follow_the_ontology_cover_of_fluid() -> None:
    """SRF shown (SJTU-like, IRF unknown): fluid allowed, IRF unknown; fluid absent (Duke-like) excludes SRF and IRF;
    a student's fluid class is excluded only when both SRF and IRF are known absent."""
    assert verdicts((SRF, IRF, FLUID), {SRF}, {SRF}) == ["allowed", "unknown", "allowed"]
    assert verdicts((SRF, IRF, FLUID), set(), {FLUID}) == ["excluded", "excluded", "excluded"]
    assert verdicts((FLUID,), set(), {SRF}) == ["unknown"]
    assert verdicts((FLUID,), set(), {SRF, IRF}) == ["excluded"]


def test_ignored_pixels_stay_out_of_the_loss_and_out_of_augmentation() -> None:
    """An IGNORE pixel is all-zero after rotation (corners become background); the loss does not see it."""
    target = np.zeros((32, 32), np.uint8)
    target[8:24, 8:24] = IGNORE
    t = Target(lambda: np.full((32, 32), 0.5, np.float32), lambda: target, 1.0, WEAK, ("v", 0))
    item = StudentDataset([t], (SRF,), (32, 32), Augment(rotation=30.0, flip=0.0))[0]
    y = item["target"]
    assert float(y[:, 14:18, 14:18].sum()) == 0.0 and float(y[:, 0, 0].sum()) == pytest.approx(1.0)
    logits = torch.randn(1, 2, 32, 32)
    changed = logits.clone()
    changed[:, :, 8:24, 8:24] += 50 * torch.randn(1, 2, 16, 16)
    y0 = StudentDataset([t], (SRF,), (32, 32)).prepared(0)[1][None]
    w, cw = torch.ones(1), torch.ones(2)
    assert float(student_loss(logits, y0, w, cw)) == pytest.approx(float(student_loss(changed, y0, w, cw)), rel=1e-5)


def _manifest(folder: Path, *, mask: bool, labels: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = ["image", "patient"] + (["mask"] if mask else []) + (["fluid"] if labels else [])
    rows = [",".join(header)]
    for i in range(2):
        iio.imwrite(folder / f"b{i}.png", np.full((32, 32), 60 * i, np.uint8))
        iio.imwrite(folder / f"m{i}.png", np.zeros((32, 32), np.uint8))
        rows.append(",".join([f"b{i}.png", f"P{i}"] + ([f"m{i}.png"] if mask else []) + ([str(i)] if labels else [])))
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def _recipe(tmp_path: Path, real: list[dict], **changes: object) -> dict:
    raw = {"method": "real-wsss", "seed": 0, "out": str(tmp_path / "run"), "device": "cpu",
           "data": {"layout": "synth", "root": str(tmp_path / "synth"),
                    "generate": {"volumes": 2, "n_bscans": 2, "height": 64, "width": 64, "seed": 0, "look": "random",
                                 "healthy_fraction": 0.0, "prevalence": {"srf": 1.0, "irf": 1.0}}},
           "classes": ["srf", "irf"], "input_size": [64, 64], "split": {"val_fraction": 0.0},
           "init": str(tmp_path / "init.safetensors"), "real": real, "rounds": 1,
           "student": {"epochs": 1, "batch_size": 2}}
    return {**raw, **changes}


def test_the_recipe_refuses_real_pixel_masks_and_unlabelled_folders(tmp_path: Path) -> None:
    """A real entry with pixel masks is refused unless it says pixel_masks: drop (then no sample keeps a mask);
    an entry without image-level labels and an unknown class are clear errors."""
    masked = _manifest(tmp_path / "masked", mask=True, labels=True)
    with pytest.raises(TrainingError, match="carry pixel masks"):
        real_sets(Recipe.from_dict(_recipe(tmp_path, [{"layout": "csv", "root": str(masked)}])))
    sets = real_sets(Recipe.from_dict(_recipe(tmp_path, [{"layout": "csv", "root": str(masked),
                                                          "pixel_masks": "drop"}])))
    assert all(s.mask is None for s in sets[0].samples) and sets[0].info["pixel_masks"] == "dropped unread"
    bare = _manifest(tmp_path / "bare", mask=False, labels=False)
    with pytest.raises(TrainingError, match="no image-level labels"):
        real_sets(Recipe.from_dict(_recipe(tmp_path, [{"layout": "csv", "root": str(bare)}])))
    with pytest.raises(TrainingError, match="unknown lesion class"):
        _ = Recipe.from_dict(_recipe(tmp_path, [], classes=["srf", "cnv"])).classes


def test_a_phantom_of_another_generator_version_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The recipe's phantom folder was written by another generator: a clear error, no run folder."""
    synth = tmp_path / "synth"
    synth.mkdir()
    (synth / "labels.csv").write_text("image\n")
    (synth / "generation.json").write_text(json.dumps({"generator_version": 1}))
    real = _manifest(tmp_path / "real", mask=False, labels=True)
    path = write_recipe(tmp_path, _recipe(tmp_path, [{"layout": "csv", "root": str(real)}]))
    assert main(["train", str(path)]) != 0
    assert not (tmp_path / "run").exists()


def test_a_tiny_real_wsss_run_on_the_phantom_and_shared_duke_bscans(tmp_path: Path, shared_data: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Phantom truth + one Duke patient's B-scans with has_fluid only (masks dropped unread), from a random-weight
    init: the log gives the image-level criterion each round, the checkpoint says what went in, and it proposes
    through the CLI."""
    net = StudentNet(StudentConfig(n_outputs=3, width=4, depth=3))
    student_checkpoint(net, (SRF, IRF), (64, 64), training={"init": "random"},
                       intensity="harmonised").save(tmp_path / "init.safetensors")
    duke = shared_data / "duke_dme_chiu2015"
    others = ["Subject_03", "Subject_04", "Subject_07", "Subject_09"]
    real = [{"layout": "duke", "root": str(duke), "pixel_masks": "drop", "exclude_patients": others}]
    path = write_recipe(tmp_path, _recipe(tmp_path, real))
    assert main(["train", str(path)]) == 0
    shown = re.findall(r"on (\d+) of (\d+) B-scans labelled with one and (\d+) of (\d+) labelled without",
                       capsys.readouterr().out)
    assert shown, "no image-level line in the log"
    assert all(int(a) <= int(b) and int(c) <= int(d) and int(b) + int(d) == 11 for a, b, c, d in shown), shown
    ckpt = Checkpoint.load(tmp_path / "run" / "student.safetensors")
    entry = ckpt.meta["training"]["real_data"][0]
    assert entry["image_labels"] == ["fluid"] and entry["pixel_masks"] == "dropped unread" and entry["patients"] == 1
    assert ckpt.meta["training"]["init"]["file"] == "init.safetensors" and ckpt.meta["classes"] == [SRF, IRF]
    assert "Subject_01" not in json.dumps(ckpt.meta)
    out = tmp_path / "proposal"
    image = sorted((duke / "images").glob("Subject_01_*.png"))[0]
    assert main(["propose", str(image), "--method", "student", "--checkpoint",
                 str(tmp_path / "run" / "student.safetensors"), "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "labels.tif").is_file()


def test_a_student_with_retina_layers_keeps_lesions_inside_the_retina_only(shared_data: Path) -> None:
    """A student that calls every pixel SRF: with ``retina="layers"`` (recorded in its checkpoint) the proposal on a
    real Duke B-scan is cleared above the ILM and below BM, and kept inside the retina."""
    from oct_wsss.propose.student import StudentProposer

    net = StudentNet(StudentConfig(n_outputs=2, width=4, depth=3))
    for p in net.parameters():
        p.data.zero_()
    list(net.parameters())[-1].data[1] = 5.0  # the head's bias: SRF wins everywhere
    ckpt = student_checkpoint(net, (SRF,), (64, 64), training={}, retina="layers")
    proposer = StudentProposer.from_checkpoint(ckpt, device="cpu")
    assert proposer.retina == "layers" and proposer.provenance()["params"]["retina"] == "layers"
    image = iio.imread(sorted((shared_data / "duke_dme_chiu2015" / "images").glob("Subject_01_*.png"))[5])
    image = image if image.ndim == 2 else image[..., 0]
    raw = StudentProposer(net, (SRF,), (64, 64), device="cpu").predict(image)
    inside = proposer.predict(image)
    assert (raw == SRF).all()
    assert not inside[:20].any() and not inside[-20:].any() and 0.1 < (inside == SRF).mean() < 0.6


def test_the_sjtu_layout_speaks_about_srf_only_and_its_masks_need_dropping(tmp_path: Path, shared_data: Path) -> None:
    """layout: sjtu reads the shared SJTU eye (11 B-scans with SRF); as a real-wsss entry its masks are refused
    until dropped."""
    from oct_wsss.training.datasets import load_dataset

    root = shared_data / "sjtu_srf_fewshot"
    data = load_dataset({"layout": "sjtu", "root": str(root)})
    assert data.classes == (SRF,) and len(data.samples) == 11 and all(s.labels == {SRF} for s in data.samples)
    assert (data.samples[0].load_mask() == SRF).any()
    with pytest.raises(TrainingError, match="carry pixel masks"):
        real_sets(Recipe.from_dict(_recipe(tmp_path, [{"layout": "sjtu", "root": str(root)}])))


@pytest.mark.parametrize("name", ["real-wsss.yaml", "real-wsss-native.yaml", "real-wsss-phantom240.yaml"])
def test_the_shipped_recipe_reads_no_real_pixel_label(name: str) -> None:
    """training/real-wsss*.yaml: every real entry drops its masks unread and the phantom is the only pixel truth."""
    recipe = Recipe.load(Path(__file__).resolve().parents[1] / "training" / name)
    assert recipe.raw["method"] == "real-wsss" and recipe.raw["data"]["layout"] == "synth"
    assert [e["pixel_masks"] for e in recipe.raw["real"]] == ["drop"] * len(recipe.raw["real"])
