"""scripts/train_throughput.py, the training-speed figure of the device check: a recipe's own step for a fixed number
of steps, on the CPU here with a tiny AGM recipe and the student recipe, under one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_AGM = {"method": "agm", "seed": 0, "data": {"layout": "synth", "root": "unused"}, "classes": ["srf", "irf"],
            "input_size": [64, 64], "ganomaly": {"config": {"image_size": 64, "nc": 3, "nz": 16, "ngf": 8, "ndf": 8}},
            "agm": {"config": {"backbone": "resnet18", "encoder": "light", "heads": 2, "window": 7,
                               "image_channels": 3}, "batch_size": 4, "num_workers": 1}}


def _throughput(recipe: Path, out: Path, steps: int) -> dict:
    subprocess.run([sys.executable, str(REPO / "scripts" / "train_throughput.py"), str(recipe), "--steps", str(steps),
                    "--device", "cpu", "--batch", "4", "--json", str(out)], check=True, timeout=300, cwd=REPO,
                   capture_output=True)
    return json.loads(out.read_text())


def test_agm_steps_run_past_one_epoch(tmp_path: Path) -> None:
    recipe = tmp_path / "agm.yaml"
    recipe.write_text(yaml.safe_dump(TINY_AGM))
    figures = _throughput(recipe, tmp_path / "agm.json", steps=6)  # 16 phantom B-scans: 4 steps an epoch
    assert figures["method"] == "agm" and figures["steps"] == 6 and figures["batch_per_rank"] == 4
    assert figures["bscans_per_s"] > 0 and figures["device"] == "cpu"


def test_student_recipe(tmp_path: Path) -> None:
    figures = _throughput(REPO / "training" / "student-synth.yaml", tmp_path / "student.json", steps=3)
    assert figures["method"] == "student" and figures["input_size"] == [128, 128] and figures["bscans_per_s"] > 0
