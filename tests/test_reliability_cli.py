"""Inputs from the UI and the CLI: paths with spaces and non-ASCII characters work; read-only folders, missing
checkpoints and class sets that do not fit give one line and exit status 2 (no traceback)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import npy_volume, tiny_student

from oct_wsss.cli import main
from oct_wsss.io import read_labels
from oct_wsss.store import CorrectionStore, StoreError


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()


def _one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("oct-wsss "), err


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: mode 0555, or (root ignores modes) sysfs, which the kernel refuses."""
    folder = tmp_path / "read only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/sys/fs")


def test_paths_with_spaces_and_unicode(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "Auswertung 2024" / "ünïcødé 眼科"
    folder.mkdir(parents=True)
    vol = npy_volume(folder / "scan ü 1.npy", (3, 32, 32))
    ckpt = tiny_student(folder / "mödel v1.safetensors")
    code, out, err = _run(capsys, "read", vol)
    assert code == 0 and "shape" in out, err
    code, out, err = _run(capsys, "propose", vol, "--method", "student", "--checkpoint", ckpt, "--out",
                          folder / "résultats ①", "--device", "cpu")
    assert code == 0 and (folder / "résultats ①" / "labels.tif").is_file(), err
    code, out, err = _run(capsys, "export", folder / "résultats ①" / "labels.tif", "--out", folder / "export ②",
                          "--volume", vol, "--name", "Fall ü 7")
    assert code == 0, err
    assert read_labels(folder / "export ②" / "Fall_7.tif").shape == (3, 32, 32)  # name made safe, files readable


def test_read_only_output_folders(tmp_path: Path, capsys) -> None:
    ro = read_only_folder(tmp_path)
    vol = npy_volume(tmp_path / "v.npy")
    ckpt = tiny_student(tmp_path / "s.safetensors")
    labels = tmp_path / "p"
    assert main(["propose", str(vol), "--method", "student", "--checkpoint", str(ckpt), "--out", str(labels),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    for argv in (["propose", vol, "--method", "student", "--checkpoint", ckpt, "--out", ro / "out", "--device",
                  "cpu"],
                 ["export", labels / "labels.tif", "--out", ro / "export"],
                 ["synth", "--out", ro / "synth", "--volumes", "1", "--bscans", "1"],
                 ["finetune", "--store", ro / "project", "--from", ckpt, "--device", "cpu"]):
        code, _, err = _run(capsys, *argv)
        _one_line_error(code, err)
        assert "ermission" in err or "not permitted" in err or "cannot create" in err, err
    with pytest.raises(StoreError, match="cannot create the project folder"):
        CorrectionStore(ro / "project")


def test_missing_checkpoints_and_volumes(tmp_path: Path, capsys) -> None:
    vol = npy_volume(tmp_path / "v.npy")
    for argv, expect in (
        (["propose", vol, "--method", "student", "--checkpoint", tmp_path / "nope.safetensors", "--out", tmp_path],
         "no such checkpoint file"),
        (["propose", tmp_path / "nope.npy", "--method", "student", "--checkpoint", vol, "--out", tmp_path],
         "no such file"),
        (["finetune", "--store", tmp_path / "project", "--from", tmp_path / "gone.safetensors"],
         "no such checkpoint file"),
        (["read", tmp_path / "missing folder" / "x.vol"], "no such file"),
    ):
        code, _, err = _run(capsys, *argv)
        _one_line_error(code, err)
        assert expect in err, err


def test_store_classes_the_checkpoint_does_not_predict(tmp_path: Path, capsys) -> None:
    store = CorrectionStore(tmp_path / "project")
    for i in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[5:10, 5:10] = 3  # PED, which a (SRF, IRF) student cannot learn
        store.accept("v", i, mask, image=np.full((32, 32), 80, np.uint8))
    ckpt = tiny_student(tmp_path / "s.safetensors", classes=(1, 2))
    code, _, err = _run(capsys, "finetune", "--store", store.root, "--from", ckpt, "--device", "cpu")
    _one_line_error(code, err)
    assert "ped (3)" in err and "does not predict" in err
    assert not (store.root / "checkpoints").exists() or not list((store.root / "checkpoints").glob("*.safetensors"))


def test_read_only_input_folder_is_still_readable(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "ro in"
    folder.mkdir()
    vol = npy_volume(folder / "v.npy")
    folder.chmod(0o555)
    code, out, err = _run(capsys, "read", vol)
    assert code == 0 and "shape" in out, err
