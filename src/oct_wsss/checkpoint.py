"""Checkpoint: model weights as safetensors plus JSON metadata in the same file; never unpickled.

One file ``NAME.safetensors``; the metadata (method, architecture hyper-parameters, classes, input
size, normalisation, training summary, metrics, parameters) is a JSON string under the key
``"oct_wsss"`` of the safetensors header's ``__metadata__``. The header is parsed and checked here
before any tensor is read, so a tampered or truncated file fails with a :class:`CheckpointError`
that says what is wrong. torch is imported only where tensors are made, so ``read_meta`` works
without it (the napari layer may list checkpoints without touching torch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from oct_wsss.classes import ONTOLOGY

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
META_KEY = "oct_wsss"
SUFFIX = ".safetensors"
KNOWN_METHODS: tuple[str, ...] = ("agm", "ganomaly", "dfp", "hrf-cct", "hrf-mil", "student", "layers")
REQUIRED_META: tuple[str, ...] = ("method", "architecture", "classes", "input_size", "normalisation", "format_version")
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
MAX_INPUT_SIDE = 16384
# safetensors dtype name -> bytes per element
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint file is missing, not safetensors, tampered with, or does not fit the model; names the path."""

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")

    def __reduce__(self):  # keep picklable (workers re-raise it in the main process)
        return (type(self), (self.path, self.reason))


@dataclass(eq=False)
class Checkpoint:
    """Weights plus the metadata needed to rebuild, run and cite the model; validated on creation."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    _file_sha256: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        validate_meta(self.meta, None)

    @classmethod
    def new(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        *,
        method: str,
        architecture: dict[str, Any],
        classes: list[int],
        input_size: tuple[int, int] | list[int],
        normalisation: dict[str, Any],
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Build a checkpoint from a module's state dict, stamping format version and creation time (UTC)."""
        meta = {
            "method": method,
            "architecture": architecture,
            "classes": [int(c) for c in classes],
            "input_size": [int(s) for s in input_size],
            "normalisation": normalisation,
            "training": training or {},
            "metrics": metrics or {},
            "params": params or {},
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return cls(_plain_tensors(state_dict), meta)

    @property
    def method(self) -> str:
        """The method that produced the weights (``"agm"``, ``"ganomaly"``, ...)."""
        return self.meta["method"]

    @property
    def sha256(self) -> str:
        """SHA-256 of the file it was loaded from or last saved to, else of the bytes ``save`` would write."""
        return self._file_sha256 or hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def id(self) -> str:
        """Short citable id: method plus the first 12 hex digits of ``sha256``."""
        return f"{self.method}-{self.sha256[:12]}"

    def to_bytes(self) -> bytes:
        """Serialise to safetensors bytes (deterministic: same tensors and meta give the same bytes)."""
        from safetensors.torch import save

        validate_meta(self.meta, None)
        text = json.dumps(self.meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return save(_plain_tensors(self.state_dict), metadata={META_KEY: text})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (suffix ``.safetensors``) atomically: a temp file in the same folder, then rename."""
        path = Path(path)
        if path.suffix != SUFFIX:
            raise CheckpointError(path, f"checkpoints are written as {SUFFIX} files")
        data = self.to_bytes()
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644  # mkstemp's 0600 would hide it from others
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._file_sha256 = hashlib.sha256(data).hexdigest()
        return path

    @classmethod
    def load(cls, path: str | Path, expect_method: str | None = None, skip: tuple[str, ...] = ()) -> Checkpoint:
        """Read a ``.safetensors`` checkpoint, checking header, metadata and sizes before any tensor is made.

        Tensors whose names start with a prefix in ``skip`` are read and hashed but not kept (a proposer that never
        runs a sub-network need not hold its weights); ``sha256`` is always the whole file's.
        """
        path = _checked_path(path)
        with path.open("rb") as f:  # read once: what is checked, hashed and loaded are the same bytes
            size = os.fstat(f.fileno()).st_size
            head = _read_header(path, f, size)
            meta, header = _parse(path, head, size)
            if expect_method is not None and meta["method"] != expect_method:
                raise CheckpointError(path, f"this is a {meta['method']!r} checkpoint, expected {expect_method!r}")
            digest = hashlib.sha256(head)
            state = _read_tensors(path, f, header, digest, skip)
        return cls(state, meta, digest.hexdigest())

    def build(self, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """``factory()`` holding these very tensors (no copy: the module's parameters share their memory), built on
        torch's meta device first, so an architecture that does not fit the weights (a tampered width) fails here."""
        import torch

        try:
            with torch.device("meta"):
                probe = factory()
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise CheckpointError(None, f"checkpoint {self.id}: its architecture {self.meta['architecture']} cannot "
                                        f"be built ({str(err).splitlines()[0][:200]})") from err
        self._check_fits(probe)
        own = probe.state_dict()
        probe.load_state_dict({k: v.to(own[k].dtype) for k, v in self.state_dict.items()}, strict=True, assign=True)
        if any(t.is_meta for t in (*probe.parameters(), *probe.buffers())):  # a buffer the state dict lacks
            return self.load_into(factory())
        return probe

    def load_into(self, module: torch.nn.Module) -> torch.nn.Module:
        """Strictly load the weights into ``module``; a mismatch lists missing, unexpected and mis-shaped keys."""
        self._check_fits(module)
        module.load_state_dict(self.state_dict, strict=True)
        return module

    def _check_fits(self, module: torch.nn.Module) -> None:
        own = module.state_dict()
        missing = sorted(set(own) - set(self.state_dict))
        unexpected = sorted(set(self.state_dict) - set(own))
        mis_shaped = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in sorted(self.state_dict.items())
            if k in own and v.shape != own[k].shape
        ]
        if missing or unexpected or mis_shaped:
            parts = [
                f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped))
                if keys
            ]
            raise CheckpointError(
                None,
                f"checkpoint {self.id} does not fit {type(module).__name__} built from its architecture "
                f"{self.meta['architecture']}: " + "; ".join(parts),
            )


def read_meta(path: str | Path) -> dict[str, Any]:
    """Validated metadata of a checkpoint without loading tensors or importing torch (for listings and UIs)."""
    path = _checked_path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _parse(path, _read_header(path, f, size), size)[0]


def validate_meta(meta: Any, path: str | Path | None) -> dict[str, Any]:
    """Check the metadata keys, method, classes and input size; raise :class:`CheckpointError` naming the problem."""
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"metadata must be a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(path, f"metadata lacks {', '.join(missing)}")
    if meta["method"] not in KNOWN_METHODS:
        raise CheckpointError(path, f"unknown method {meta['method']!r}; known: {', '.join(KNOWN_METHODS)}")
    version = meta["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(path, f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"format_version {version} is newer than this oct-wsss reads ({FORMAT_VERSION})")
    for key in ("architecture", "normalisation"):
        if not isinstance(meta[key], dict):
            raise CheckpointError(path, f"metadata {key!r} must be a JSON object, got {meta[key]!r}")
    known_ids = {c.id for c in ONTOLOGY}
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, int) and c in known_ids for c in classes):
        raise CheckpointError(path, f"classes must be a list of ontology ids {sorted(known_ids)}, got {classes!r}")
    size = meta["input_size"]
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_INPUT_SIDE for s in size)
    ):
        raise CheckpointError(path, f"input_size must be [height, width] in 1..{MAX_INPUT_SIDE}, got {size!r}")
    return meta


#: terminal control sequences (torch bolds part of its weights-only refusal with ANSI escapes)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _torch_refusal(message: str) -> str:
    """One plain line for torch's weights-only refusal: the global it refused when named, else its first line; no
    terminal escapes (they print as garbage in notifications and logs)."""
    text = _ANSI.sub("", message)
    refused = re.search(r"GLOBAL (\S+)", text)
    if refused:
        return f"it holds {refused.group(1)}, which is not a tensor or plain container"
    return next((line.strip() for line in text.splitlines() if line.strip()), "unreadable")


def import_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a third-party pickled ``.pt`` (e.g. SAM 2), loaded with ``weights_only=True`` and a warning."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such weights file")
    warnings.warn(
        f"{path.name} is a third-party pickle; loading it with torch.load(weights_only=True), which only "
        "rebuilds tensors and plain containers. Convert it to .safetensors once you trust it.",
        UserWarning,
        stacklevel=2,
    )
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(
            path, f"refused: not plain tensors (weights-only unpickling failed: {_torch_refusal(str(e))})"
        ) from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(path, "does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


_TORCH_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                 "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
                 "U32": "uint32", "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64"}


def _read_tensors(path: Path, f: BinaryIO, header: dict[str, Any], digest: Any,
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


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are copied (safetensors refuses aliasing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state_dict.items():
        t = v.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()
        seen.add(ptr)
        out[k] = t
    return out


def _checked_path(path: str | Path) -> Path:
    """``path`` as a Path, after refusing pickle suffixes, missing files and other suffixes."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            path,
            f"refused: {path.suffix} files are Python pickles, which can run code when loaded. oct-wsss checkpoints "
            f"are {SUFFIX}; for trusted third-party weights use oct_wsss.checkpoint.import_torch_weights",
        )
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    if path.suffix.lower() != SUFFIX:
        raise CheckpointError(path, f"checkpoints must be {SUFFIX} files")
    return path


def _read_header(path: Path, f: BinaryIO, size: int) -> bytes:
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


def _parse(path: Path, head: bytes, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the header (JSON, dtypes, shapes vs offsets vs file size); return the validated metadata and the tensor
    entries (name -> dtype, shape, data_offsets)."""
    try:
        header = json.loads(head[8:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"header is not valid JSON ({e}); not a safetensors file or corrupted") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, "header is not a JSON object")
    extra = header.pop("__metadata__", None) or {}
    if not isinstance(extra, dict) or META_KEY not in extra:
        raise CheckpointError(path, f"a safetensors file without oct-wsss metadata (__metadata__[{META_KEY!r}])")
    _check_layout(path, header, size - len(head))
    try:
        meta = json.loads(extra[META_KEY])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"oct-wsss metadata is not valid JSON: {e}") from e
    return validate_meta(meta, path), header


def _check_layout(path: Path, header: dict[str, Any], data_bytes: int) -> None:
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
