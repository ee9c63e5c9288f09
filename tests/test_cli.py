"""The ``oct-wsss`` command line as a user runs it: real console script, real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oct_wsss.cli import build_parser, main

SCRIPT = str(Path(sys.executable).with_name("oct-wsss"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300)


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """The console script answers --help; each subcommand's --help (in-process, through the script's own ``main``:
    one subprocess per subcommand took about 75 s of CI) exits 0 with its usage."""
    top = run("--help")
    assert top.returncode == 0 and "usage: oct-wsss" in top.stdout
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in choices:
        with pytest.raises(SystemExit) as stop:
            main([name, "--help"])
        assert stop.value.code == 0 and f"usage: oct-wsss {name}" in capsys.readouterr().out, name


def test_read_prints_a_phi_free_summary_of_a_real_vol(real_vol: Path) -> None:
    result = run("read", str(real_vol), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "heidelberg-vol"
    assert summary["shape"] == [1, 496, 768]
    assert summary["laterality"] == "OD"
    assert summary["spacing_mm"][2] == pytest.approx(0.015613, rel=1e-3)
    assert "E01" not in result.stdout  # the file's (anonymised) patient id stays out

    table = run("read", str(real_vol))
    assert table.returncode == 0 and "spacing_mm" in table.stdout and "E01" not in table.stdout


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("scan.xyz", b"hello", "unknown"), ("scan.vol", b"HSF-OCT-103\x00" + b"\x00" * 20, "scan.vol")],
)
def test_read_bad_input_exits_non_zero_with_one_line(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run("read", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0].lower() and "Traceback" not in result.stderr


def test_synth_writes_the_documented_layout(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = run("synth", "--out", str(out), "--volumes", "2", "--healthy-fraction", "0.5", "--seed", "4",
                 "--bscans", "3")
    assert result.returncode == 0, result.stderr
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {"volume", "bscan", "image", "mask", "patient", "srf", "irf", "ped", "ez", "hrf", "drusen"} <= set(rows[0])
    for row in rows:
        assert (out / row["image"]).is_file() and (out / row["mask"]).is_file()
    assert json.loads((out / "generation.json").read_text())["seed"] == 4

    again = run("read", str(out / rows[0]["volume"]), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["shape"][0] == 3


def test_synth_rejects_bad_arguments(tmp_path: Path) -> None:
    result = run("synth", "--out", str(tmp_path), "--volumes", "0")
    assert result.returncode == 2 and "--volumes" in result.stderr
