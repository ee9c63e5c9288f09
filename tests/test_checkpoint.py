"""Checkpoint: safetensors + JSON round trip, pickles refused (proved not unpickled), tampered/truncated files."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from oct_wsss.checkpoint import Checkpoint, CheckpointError, import_torch_weights, read_meta


def _module(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 2, 1))


def _checkpoint(module: nn.Module | None = None, **extra_tensors: torch.Tensor) -> Checkpoint:
    module = module or _module()
    state = {**module.state_dict(), **extra_tensors}
    return Checkpoint.new(
        state,
        method="student",
        architecture={"name": "toy", "width": 4},
        classes=[1, 2, 5],
        input_size=(32, 48),
        normalisation={"range": [0, 1], "channels": 1},
        training={"data": "synth", "seed": 0},
        metrics={"miou": 0.5},
        params={"tau": 0.3},
    )


def _split(path: Path) -> tuple[dict, bytes]:
    """The safetensors header (as a dict) and the tensor bytes of a file."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write(path: Path, header: dict, body: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def _tamper_meta(src: Path, dst: Path, change) -> Path:
    header, body = _split(src)
    meta = json.loads(header["__metadata__"]["oct_wsss"])
    header["__metadata__"]["oct_wsss"] = change(meta)
    return _write(dst, header, body)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    module = _module()
    module.eval()
    return _checkpoint(module).save(tmp_path / "toy.safetensors")


class _Payload:
    """Unpickling this creates ``marker`` (through ``open``): proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_round_trip_identical_tensors_meta_outputs(tmp_path: Path) -> None:
    module = _module().eval()
    ckpt = _checkpoint(module, extra_bf16=torch.randn(3, 2).bfloat16(), extra_i64=torch.arange(5))
    path = ckpt.save(tmp_path / "toy.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["toy.safetensors"]  # no temp file left behind
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = Checkpoint.load(path, expect_method="student")
    assert loaded.meta == ckpt.meta
    assert loaded.state_dict.keys() == ckpt.state_dict.keys()
    for k, v in ckpt.state_dict.items():
        assert loaded.state_dict[k].dtype == v.dtype and torch.equal(loaded.state_dict[k], v), k
    assert loaded.sha256 == ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.id == f"student-{loaded.sha256[:12]}"
    assert read_meta(path) == ckpt.meta
    with pytest.raises(CheckpointError, match="not a file"):
        read_meta(tmp_path)

    other = _module(4)
    for p in other.parameters():
        nn.init.uniform_(p)
    del loaded.state_dict["extra_bf16"], loaded.state_dict["extra_i64"]
    loaded.load_into(other).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(other(x), module(x))


def test_unsaved_hash_is_what_save_writes(tmp_path: Path) -> None:
    ckpt = _checkpoint()
    before = ckpt.sha256
    path = ckpt.save(tmp_path / "a.safetensors")
    assert before == hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_overwrites_atomically_and_refuses_other_suffix(tmp_path: Path) -> None:
    path = _checkpoint().save(tmp_path / "a.safetensors")
    _checkpoint(_module(8)).save(path)
    assert Checkpoint.load(path).state_dict["0.weight"].shape[0] == 8
    with pytest.raises(CheckpointError, match="safetensors"):
        _checkpoint().save(tmp_path / "a.pt")


def test_pickles_are_refused_without_unpickling(tmp_path: Path) -> None:
    payload = pickle.dumps(_Payload(tmp_path / "proof"), protocol=4)
    pickle.loads(payload)  # the payload works: unpickling it creates the marker file ...
    assert (tmp_path / "proof").exists()

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker), protocol=4)
    for name in ("weights.pt", "weights.pth", "weights.ckpt", "weights.pkl", "weights.bin", "weights.safetensors"):
        (tmp_path / name).write_bytes(evil)
        with pytest.raises(CheckpointError, match="refused.*(pickle|not unpickled)"):
            Checkpoint.load(tmp_path / name)
    torch.save({"w": torch.zeros(2)}, tmp_path / "zipped.safetensors")  # torch.save's zip format, renamed
    with pytest.raises(CheckpointError, match="zip"):
        Checkpoint.load(tmp_path / "zipped.safetensors")
    assert not marker.exists()  # ... and none of the loads above ran it


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(CheckpointError, match="no such checkpoint") as info:
        Checkpoint.load(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: json.dumps({**m, "method": "evil"}), "unknown method 'evil'"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "classes"}), "lacks classes"),
        (lambda m: json.dumps(m)[:-3], "not valid JSON"),
        (lambda m: json.dumps({**m, "classes": [1, 42]}), "ontology ids"),
        (lambda m: json.dumps({**m, "input_size": [10**9, 10]}), "input_size"),
        (lambda m: json.dumps({**m, "format_version": 99}), "newer"),
        (lambda m: json.dumps({**m, "architecture": "resnet"}), "architecture"),
        (lambda m: json.dumps([m]), "JSON object"),
    ],
)
def test_tampered_metadata(saved: Path, tmp_path: Path, change, message: str) -> None:
    bad = _tamper_meta(saved, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.load(bad)


def test_tied_tensors_are_saved(tmp_path: Path) -> None:
    w = torch.randn(4, 3)
    ckpt = _checkpoint(tied_a=w, tied_b=w, view=w[1])
    loaded = Checkpoint.load(ckpt.save(tmp_path / "tied.safetensors"))
    assert torch.equal(loaded.state_dict["tied_b"], w) and torch.equal(loaded.state_dict["view"], w[1])


def test_expect_method(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="'student' checkpoint, expected 'agm'"):
        Checkpoint.load(saved, expect_method="agm")


def test_absurd_tensor_sizes_refused_before_allocation(saved: Path, tmp_path: Path) -> None:
    header, body = _split(saved)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10**9, 10**9]
    with pytest.raises(CheckpointError, match=f"tensor '{name}'.*needs"):
        Checkpoint.load(_write(tmp_path / "huge.safetensors", header, body))

    header, body = _split(saved)  # shape and offsets agree, but point far past the end of the file
    begin = header[name]["data_offsets"][0]
    header[name].update(dtype="F32", shape=[10**12], data_offsets=[begin, begin + 4 * 10**12])
    with pytest.raises(CheckpointError, match="needs 4000000000000 bytes"):
        Checkpoint.load(_write(tmp_path / "past_end.safetensors", header, body))

    header, body = _split(saved)  # two tensors claiming the same bytes
    a, b = ("0.bias", "1.bias")  # both 4 x F32
    header[b]["data_offsets"] = header[a]["data_offsets"]
    with pytest.raises(CheckpointError, match="overlap or leave a gap"):
        Checkpoint.load(_write(tmp_path / "overlap.safetensors", header, body))


def test_header_length_and_truncation(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cases = {
        "cut.safetensors": (data[:-7], "ends at byte|needs"),
        "stub.safetensors": (data[:5], "truncated"),
        "tiny_header.safetensors": (struct.pack("<Q", 0) + data[8:], "header claims 0 bytes"),
        "empty.safetensors": (b"", "truncated"),
        "claims.safetensors": (struct.pack("<Q", 2**60) + data[8:], "header claims"),
        "garbage.safetensors": (struct.pack("<Q", 16) + b"\xff" * 16 + data[24:], "not valid JSON"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            Checkpoint.load(tmp_path / name)


def test_plain_safetensors_without_metadata_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="without oct-wsss metadata"):
        Checkpoint.load(tmp_path / "foreign.safetensors")


def test_load_into_lists_missing_unexpected_and_mismatched(saved: Path) -> None:
    ckpt = Checkpoint.load(saved)
    with pytest.raises(CheckpointError, match=r"shape mismatch \(\d+\): 0.bias: checkpoint \(4,\) vs model \(8,\)"):
        ckpt.load_into(_module(8))
    bigger = nn.Sequential(*_module(4), nn.Conv2d(2, 2, 1))
    with pytest.raises(CheckpointError, match=r"missing \(2\): 4.bias, 4.weight"):
        ckpt.load_into(bigger)
    ckpt.state_dict["stray"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): stray"):
        ckpt.load_into(_module(4))


def test_invalid_meta_refused_at_creation() -> None:
    with pytest.raises(CheckpointError, match="unknown method"):
        Checkpoint.new({}, method="mystery", architecture={}, classes=[], input_size=(8, 8), normalisation={})


def test_import_torch_weights_warns_and_unwraps(tmp_path: Path) -> None:
    state = _module().state_dict()
    torch.save({"model": state, "epoch": 3}, tmp_path / "sam2_like.pt")
    torch.save(state, tmp_path / "plain.pth")
    for name in ("sam2_like.pt", "plain.pth"):
        with pytest.warns(UserWarning, match="third-party pickle.*weights_only=True"):
            weights = import_torch_weights(tmp_path / name)
        assert weights.keys() == state.keys()
        assert all(torch.equal(weights[k], v) for k, v in state.items())


def test_import_torch_weights_refuses_arbitrary_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    torch.save({"w": _Payload(marker)}, tmp_path / "zipped.pt")
    for name in ("raw.pt", "zipped.pt"):
        with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="refused"):
            import_torch_weights(tmp_path / name)
    assert not marker.exists()
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="state dict"):
        import_torch_weights(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no such weights file"):
        import_torch_weights(tmp_path / "absent.pt")
