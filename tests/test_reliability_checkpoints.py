"""Checkpoints are data, not code: pickles refused (or, for SAM 2, read weights-only with a warning); tampered files
and metadata give a CheckpointError — through the library and through ``oct-wsss propose`` (exit 2, one line)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import npy_volume, tiny_student

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.cli import main
from oct_wsss.propose import load_proposer
from oct_wsss.propose.sam2_backend import _read_checkpoint
from oct_wsss.propose.student import StudentProposer


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled (and so could have run any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _student(path: Path, **arch_changes) -> Path:
    return tiny_student(path, tamper=arch_changes)


def _volume(tmp_path: Path) -> Path:
    return npy_volume(tmp_path / "vol.npy")


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_a_pickled_pt_is_refused_by_the_cli_with_what_to_do(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(marker)}, tmp_path / "model.pt")
    for name in ("model.pt", "disguised.safetensors"):
        if name != "model.pt":
            (tmp_path / name).write_bytes(__import__("pickle").dumps(_Payload(marker)))
        code, err = _cli(capsys, "propose", str(_volume(tmp_path)), "--method", "student", "--checkpoint",
                         str(tmp_path / name), "--out", str(tmp_path / "out"), "--device", "cpu")
        assert code == 2 and len(err.splitlines()) == 1 and "pickle" in err, err
        assert "Traceback" not in err
    assert "safetensors" in err and not marker.exists() and not (tmp_path / "out").exists()
    code, err = _cli(capsys, "propose", str(_volume(tmp_path)), "--method", "student", "--checkpoint",
                     str(tmp_path / "model.pt"), "--out", str(tmp_path / "out"))
    assert "import_torch_weights" in err  # the way to bring trusted third-party weights in


def test_sam2_pt_is_read_weights_only_with_a_warning(tmp_path: Path) -> None:
    good = tmp_path / "sam2.pt"
    torch.save({"model": {"image_encoder.w": torch.ones(3)}}, good)
    with pytest.warns(UserWarning, match=r"third-party pickle.*weights_only=True"):
        state = _read_checkpoint(good)
    assert list(state) == ["image_encoder.w"]
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="SAM 2.*refused"):
        _read_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(("method", "change"), [
    ("student", {"width": 200_000}),  # 1.4 TB of weights if built for real
    ("student", {"in_channels": 10**9}),
    ("student", {"width": 1.5}),
    ("student", {"width": 2**63}),
])
def test_tampered_architecture_fails_before_allocating(tmp_path: Path, method: str, change: dict) -> None:
    path = _student(tmp_path / "s.safetensors", **change)  # AGM, DFP and HRF build through the same Checkpoint.build
    with pytest.raises(CheckpointError, match="does not fit|cannot be built"):
        load_proposer(method, path, device="cpu")


def test_classes_that_do_not_fit_the_network_are_one_line(tmp_path: Path, capsys) -> None:
    path = _student(tmp_path / "s.safetensors")
    ckpt = Checkpoint.load(path)
    ckpt.meta["classes"] = [1, 2, 3]  # three classes declared, the network has 2 + background
    bad = Checkpoint(ckpt.state_dict, ckpt.meta).save(tmp_path / "classes.safetensors")
    code, err = _cli(capsys, "propose", str(_volume(tmp_path)), "--method", "student", "--checkpoint", str(bad),
                     "--out", str(tmp_path / "o"))
    assert code == 2 and "outputs" in err and "classes" in err and len(err.splitlines()) == 1, err


FUZZ_COUNTS: dict[str, int] = {"inputs": 0, "loaded": 0, "refused": 0}


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> bytes:
    return _student(tmp_path_factory.mktemp("seed") / "seed.safetensors").read_bytes()


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in ops:
        where %= max(1, len(buf))
        if op == "truncate":
            buf = buf[:where]
        elif op == "flip":
            if buf:
                buf[where] ^= 1 << (value % 8)
        elif op == "header_digit" and buf:  # a digit inside the JSON header: shapes, offsets, sizes
            head = bytes(buf[: min(len(buf), 8 + int.from_bytes(buf[:8], "little") if len(buf) >= 8 else 0)])
            digits = [i for i, b in enumerate(head) if 48 <= b <= 57]
            if digits:
                i = digits[where % len(digits)]
                buf[i : i + 1] = str(value % 10**9).encode()
        elif op == "length":  # the 8-byte header length
            buf[:8] = (value * 7919).to_bytes(8, "little")
    return bytes(buf)


OPS = st.lists(st.tuples(st.sampled_from(["truncate", "flip", "flip", "header_digit", "header_digit", "length"]),
                         st.integers(0, 10**6), st.integers(0, 2**31)), min_size=1, max_size=3)


def _fuzz(seed_file: bytes, tmp_path: Path, ops) -> None:
    path = tmp_path / f"m{random.random()}.safetensors"
    path.write_bytes(_mutate(seed_file, ops))
    FUZZ_COUNTS["inputs"] += 1
    try:
        StudentProposer.from_checkpoint(path, device="cpu")
        FUZZ_COUNTS["loaded"] += 1
    except CheckpointError:
        FUZZ_COUNTS["refused"] += 1
    finally:
        path.unlink()


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_mutated_checkpoints_load_or_raise_checkpoint_error(seed_file: bytes, tmp_path: Path, ops) -> None:
    _fuzz(seed_file, tmp_path, ops)


def test_fuzz_counts_reported() -> None:
    """Runs after the fuzz test in file order; records its counts (``OCT_RELIABILITY_REPORT``)."""
    target = os.environ.get("OCT_RELIABILITY_REPORT")
    if target and FUZZ_COUNTS["inputs"]:
        data = json.loads(Path(target).read_text()) if Path(target).is_file() else {}
        data["checkpoint_fuzz"] = dict(FUZZ_COUNTS)
        Path(target).write_text(json.dumps(data, indent=2))
    assert FUZZ_COUNTS["inputs"] in (0, 120)
