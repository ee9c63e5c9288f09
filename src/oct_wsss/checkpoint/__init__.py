"""Checkpoint: model weights as safetensors plus JSON metadata in the same file; never unpickled.

One file ``NAME.safetensors``; the metadata (method, architecture hyper-parameters, classes, input size,
normalisation, training summary, metrics, parameters) is a JSON string under the key ``"oct_wsss"`` of the
safetensors header's ``__metadata__``. The header is parsed and checked
(:mod:`~oct_wsss.checkpoint.safetensors_file`) before any tensor is read, so a tampered or truncated file fails with
a :class:`CheckpointError` that says what is wrong. torch is imported only where tensors are made, so ``read_meta``
works without it (the napari layer may list checkpoints without touching torch). Third-party pickles come in only
through :func:`~oct_wsss.checkpoint.torch_import.import_torch_weights`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oct_wsss.checkpoint.errors import CheckpointError
from oct_wsss.checkpoint.safetensors_file import check_layout, parse_header, read_header, read_tensors
from oct_wsss.checkpoint.torch_import import import_torch_weights
from oct_wsss.classes import ONTOLOGY

if TYPE_CHECKING:
    import torch

__all__ = ["Checkpoint", "CheckpointError", "import_torch_weights", "read_meta", "validate_meta"]

FORMAT_VERSION = 1
META_KEY = "oct_wsss"
SUFFIX = ".safetensors"
KNOWN_METHODS: tuple[str, ...] = ("agm", "ganomaly", "dfp", "hrf-cct", "hrf-mil", "student", "layers")
REQUIRED_META: tuple[str, ...] = ("method", "architecture", "classes", "input_size", "normalisation", "format_version")
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
MAX_INPUT_SIDE = 16384


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
            head = read_header(path, f, size)
            meta, header = _parse(path, head, size)
            if expect_method is not None and meta["method"] != expect_method:
                raise CheckpointError(path, f"this is a {meta['method']!r} checkpoint, expected {expect_method!r}")
            digest = hashlib.sha256(head)
            state = read_tensors(path, f, header, digest, skip)
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
        return _parse(path, read_header(path, f, size), size)[0]


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


def _parse(path: Path, head: bytes, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the header (JSON, dtypes, shapes vs offsets vs file size); return the validated metadata and the tensor
    entries (name -> dtype, shape, data_offsets)."""
    extra, header = parse_header(path, head)
    if not isinstance(extra, dict) or META_KEY not in extra:
        raise CheckpointError(path, f"a safetensors file without oct-wsss metadata (__metadata__[{META_KEY!r}])")
    check_layout(path, header, size - len(head))
    try:
        meta = json.loads(extra[META_KEY])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"oct-wsss metadata is not valid JSON: {e}") from e
    return validate_meta(meta, path), header
