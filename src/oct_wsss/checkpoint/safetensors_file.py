"""Reading a safetensors file without trusting it: the header is checked (length, JSON, dtypes, shapes against
offsets against the file size) before any tensor is made, and the tensors are read in one pass that also hashes them.
torch is imported only where tensors are made."""

from __future__ import annotations

import json
import math
import struct
from typing import TYPE_CHECKING, Any, BinaryIO

from oct_wsss.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
# safetensors dtype name -> bytes per element
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip

_TORCH_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                 "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
                 "U32": "uint32", "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64"}


def read_tensors(path: Path, f: BinaryIO, header: dict[str, Any], digest: Any,
                 skip: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of a checked safetensors file, read in file order into one buffer (each slot 8-byte aligned, the
    tensors are views of it: no second copy); skipped tensors only feed ``digest``."""
    import torch

    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name, info) for name, info in header.items())
    keep = [(name, end - begin) for begin, end, name, _ in spans if not name.startswith(skip)]
    slots, position = {}, 0
    for name, n in keep:
        slots[name], position = position, position + -(-n // 8) * 8
    data = bytearray(position)
    out = {}
    for begin, end, name, info in spans:
        view = memoryview(data)[slots[name]:slots[name] + end - begin] if name in slots else None
        _read_exactly(path, f, end - begin, digest, view)
        if view is not None:
            dtype, width = getattr(torch, _TORCH_DTYPES[info["dtype"]]), DTYPE_SIZES[info["dtype"]]
            flat = (torch.frombuffer(data, dtype=dtype, offset=slots[name], count=(end - begin) // width)
                    if end > begin else torch.empty(0, dtype=dtype))
            out[name] = flat.reshape(info["shape"])
    return out


def _read_exactly(path: Path, f: BinaryIO, n: int, digest: Any, into: memoryview | None) -> None:
    """Read ``n`` bytes into ``into`` (or a bounded scratch buffer when None), feeding ``digest``."""
    if into is not None:
        if f.readinto(into) != n:
            raise CheckpointError(path, "the file changed while it was read")
        digest.update(into)
        return
    while n > 0:
        chunk = f.read(min(n, 16 << 20))
        if not chunk:
            raise CheckpointError(path, "the file changed while it was read")
        digest.update(chunk)
        n -= len(chunk)


def read_header(path: Path, f: BinaryIO, size: int) -> bytes:
    """The 8-byte length plus JSON header, after refusing zip/pickle contents and impossible lengths."""
    start = f.read(9)
    if start[:4] == b"PK\x03\x04":
        raise CheckpointError(path, "refused: this is a zip archive (torch.save format, pickled), not safetensors")
    if len(start) < 9:
        raise CheckpointError(path, f"truncated: {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", start[:8])
    fits = 2 <= n <= min(MAX_HEADER_BYTES, size - 8)
    if not (fits and start[8:9] == b"{") and start[0] == 0x80 and 2 <= start[1] <= 5:
        raise CheckpointError(path, "refused: this is a Python pickle, not safetensors; it was not unpickled")
    if not fits:
        raise CheckpointError(path, f"header claims {n} bytes; the file has {size} (truncated or not safetensors)")
    return start + f.read(8 + n - len(start))


def parse_header(path: Path, head: bytes) -> tuple[Any, dict[str, Any]]:
    """The header's ``__metadata__`` (unchecked) and its tensor entries (name -> dtype, shape, data_offsets)."""
    try:
        header = json.loads(head[8:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"header is not valid JSON ({e}); not a safetensors file or corrupted") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, "header is not a JSON object")
    return header.pop("__metadata__", None) or {}, header


def check_layout(path: Path, header: dict[str, Any], data_bytes: int) -> None:
    """Each tensor's byte range matches dtype x shape; ranges tile the data section exactly (no gaps, no overrun)."""
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(path, f"tensor {name!r}: malformed header entry {info!r}") from e
        if dtype not in DTYPE_SIZES:
            raise CheckpointError(path, f"tensor {name!r}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise CheckpointError(path, f"tensor {name!r}: invalid shape {shape!r}")
        if not all(isinstance(o, int) for o in (begin, end)):
            raise CheckpointError(path, f"tensor {name!r}: invalid offsets {[begin, end]!r}")
        need = math.prod(shape) * DTYPE_SIZES[dtype]
        if need > data_bytes or end - begin != need:
            raise CheckpointError(
                path,
                f"tensor {name!r}: shape {shape} {dtype} needs {need} bytes but the header gives {end - begin} "
                f"and the file holds {data_bytes} bytes of tensor data (tampered or truncated)",
            )
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise CheckpointError(path, f"tensor {name!r}: data offsets overlap or leave a gap at byte {position}")
        position = end
    if position != data_bytes:
        raise CheckpointError(
            path, f"tensor data ends at byte {position} but the file holds {data_bytes} (truncated or padded)"
        )
