"""Phantom or real: which checkpoints learnt from real scans (read from their metadata, the bundled ones included),
which volumes are the phantom, the one warning when the two meet wrongly, and `oct-wsss propose` saying it once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from oct_wsss.checkpoint import read_meta
from oct_wsss.cli import main
from oct_wsss.io import read_volume, write_volume
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.propose.domain import phantom_warning, saw_real_data
from oct_wsss.synth import make_volume
from oct_wsss.synth.dataset import write_dataset
from oct_wsss.training.recipe import Recipe
from oct_wsss.training.student import student_checkpoint
from oct_wsss.volume import OctVolume
from oct_wsss.weights import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def _student(folder: Path, name: str, training: dict) -> Path:
    """A random-weight tiny student whose training record is ``training``."""
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=3))
    return student_checkpoint(net, (1, 2, 3), (64, 64), training=training).save(folder / f"{name}.safetensors")


@pytest.mark.parametrize("stem", sorted(BUNDLED))
def test_bundled_checkpoints_demo_ones_are_phantom_only_and_the_others_saw_real_scans(stem: str) -> None:
    assert saw_real_data(read_meta(BUNDLED[stem])) == (not stem.startswith("demo-"))


def test_fine_tuned_children_inherit_their_parents_answer_and_recipe_layouts_count() -> None:
    real, demo = (read_meta(BUNDLED[s])["training"] for s in ("real-wsss", "demo-student"))
    assert saw_real_data({"training": {"finetune": {"epochs": 3}, "parent_training": real}})
    assert not saw_real_data({"training": {"finetune": {"epochs": 3}, "parent_training": demo}})
    grandchild = {"finetune": {}, "parent_training": {"finetune": {}, "parent_training": real}}
    assert saw_real_data({"training": grandchild})
    assert saw_real_data({"training": {"layouts": ["duke", "kermany"]}})
    assert not saw_real_data({"training": {"layouts": ["synth"], "data": "synthetic phantom, generator v5"}})
    assert not saw_real_data({"training": {"data": {"phantom": 48, "duke": 0}}})
    assert not saw_real_data({"training": {}}) and not saw_real_data({})
    assert Recipe.load(ROOT / "training" / "demo-agm.yaml").layouts() == ["synth"]
    assert Recipe.load(ROOT / "training" / "agm-duke.yaml").layouts() == ["duke", "kermany"]


def test_phantoms_are_told_from_real_scans(tmp_path, real_vol) -> None:
    phantom = make_volume(1, n_bscans=2, height=48, width=40).volume
    assert phantom.is_phantom and read_volume(write_volume(phantom, tmp_path / "exported.tif")).is_phantom
    write_dataset(tmp_path / "set", 1, n_bscans=2, height=48, width=40)
    assert read_volume(tmp_path / "set" / "synth_0000").is_phantom  # a `synth --out` folder read back
    assert not read_volume(real_vol).is_phantom
    assert not read_volume(write_volume(OctVolume(phantom.data), tmp_path / "scan.tif")).is_phantom  # no marks left


def test_the_warning_names_a_phantom_only_checkpoint_on_a_real_scan_only(tmp_path) -> None:
    message = phantom_warning(BUNDLED["demo-student"], real_scan=True)
    assert message is not None and "demo-student.safetensors" in message and "phantom only" in message
    assert phantom_warning(BUNDLED["demo-student"], real_scan=False) is None
    assert phantom_warning(BUNDLED["real-wsss"], real_scan=True) is None
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert phantom_warning(junk, real_scan=True) is None  # loading it says what is wrong, not this warning


def test_cli_warns_once_per_run_on_real_scans_only(tmp_path, capsys) -> None:
    phantom_only = _student(tmp_path, "phantom-only", {})
    trained_on_duke = _student(tmp_path, "duke", {"layouts": ["duke"]})
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):  # two real-looking scans (no phantom marks) in a batch manifest
        write_volume(OctVolume(rng.integers(0, 255, (2, 64, 56), dtype=np.uint8)), scans / f"{name}.tif")
    (scans / "batch.csv").write_text(f"path\n{scans / 'a.tif'}\n{scans / 'b.tif'}\n")
    phantom = write_volume(make_volume(1, n_bscans=2, height=64, width=56).volume, tmp_path / "phantom.tif")

    def warnings(volume: Path, ckpt: Path) -> list[str]:
        out = tmp_path / "out" / f"{volume.stem}-{ckpt.stem}"
        assert main(["propose", str(volume), "--method", "student", "--checkpoint", str(ckpt), "--device", "cpu",
                     "--out", str(out)]) == 0
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]

    (line,) = warnings(scans / "batch.csv", phantom_only)  # once for the run, not once per volume
    assert "phantom-only.safetensors" in line and "phantom only" in line
    assert len(warnings(scans / "a.tif", phantom_only)) == 1
    assert warnings(phantom, phantom_only) == []
    assert warnings(scans / "a.tif", trained_on_duke) == []
