"""Issue 21, item 6: each defect fixed with a test that failed before the fix."""

from __future__ import annotations

from pathlib import Path

from oct_wsss.cli import main
from oct_wsss.cli.batch import is_batch
from oct_wsss.io import read_volume


def test_a_synth_volume_folder_with_bscans_is_one_volume_not_a_batch(tmp_path: Path) -> None:
    assert main(["synth", "--out", str(tmp_path / "ds"), "--volumes", "1", "--bscans", "2", "--seed", "1"]) == 0
    volume = tmp_path / "ds" / "synth_0000"
    assert {p.name for p in volume.iterdir()} >= {"bscans", "masks", "volume.json"}
    assert read_volume(volume).n_bscans == 2
    assert not is_batch(volume)  # the reader opens it as one volume; propose must not see bscans/ and masks/
    assert is_batch(tmp_path / "ds")  # the dataset folder holds volumes
