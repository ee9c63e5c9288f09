"""scripts/device_check.sh, the one prepared GPU check: valid bash, and a dry run on the CPU announces every step
(install, gpu, the cuda tests, bench, the two torchrun recipes) and runs none of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.sh"
STEPS = ["install", "gpu", "tests", "bench", "train-agm", "train-student"]


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_a_dry_run_announces_every_step_and_runs_none(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["dry_run"] and [s["name"] for s in report["steps"]] == STEPS
    assert {s["exit"] for s in report["steps"]} == {"dry-run"}
    for marker in ("-m cuda", "bench --device cuda", "agm-synth-full.yaml", "student-synth.yaml"):
        assert marker in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device_check.json", "device_check.log"]
    assert report["gpu"] is None and report["bench"] is None and "tests" not in report
