"""SAM 2 image embeddings on disk, so that reopening a volume does not recompute them (seconds per B-scan on a CPU).

One safetensors file per (volume hash, model hash, B-scan) in a cache folder of the project; its header repeats the
full key, and a file whose header disagrees is a miss. A changed volume or checkpoint has another hash, so its old
embeddings are never read again; the folder is bounded by total bytes, least recently used files evicted first.
Embeddings are stored as float16 (half the disk; CUDA computes them in bfloat16 anyway) and read back in the dtype
they were computed in.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

#: Part of every model hash: bump it when what is cached (or how a B-scan becomes SAM 2's input) changes.
CACHE_VERSION = "1"
DEFAULT_MAX_BYTES = 2 * 1024 ** 3


def volume_hash(data: np.ndarray) -> str:
    """SHA-256 of a volume's voxels, shape and dtype (the key of its embeddings)."""
    a = np.ascontiguousarray(data)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def model_hash(config: str, checkpoint: str | Path) -> str:
    """SHA-256 of the checkpoint file's bytes, the config name and :data:`CACHE_VERSION`."""
    with open(checkpoint, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.sha256(f"{config}|{CACHE_VERSION}|".encode())).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a SAM 2 checkpoint's hash in provenance records)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class EmbeddingCache:
    """A folder of embeddings keyed by (volume hash, model hash, B-scan), LRU-evicted above ``max_bytes``."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, volume: str, model: str, index: int) -> Path:
        """Where the embedding of B-scan ``index`` lives (short hashes in the name, full ones in the header)."""
        return self.folder / model[:16] / f"{volume[:16]}-{index:05d}.safetensors"

    def get(self, volume: str, model: str, index: int) -> dict[str, torch.Tensor] | None:
        """The tensors stored for the key (in their computed dtype), or None; a hit counts as a use for LRU."""
        path = self.path(volume, model, index)
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if (meta.get("volume"), meta.get("model"), meta.get("index")) != (volume, model, str(index)):
                return None
            tensors = load_file(str(path))
            os.utime(path)
        except (OSError, ValueError, RuntimeError):  # missing, half-deleted or unreadable: compute it again
            return None
        dtype = getattr(torch, meta.get("dtype", "float32"))
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}

    def put(self, volume: str, model: str, index: int, tensors: dict[str, torch.Tensor]) -> Path:
        """Store ``tensors`` (floats as float16) atomically under the key, then evict down to the bound."""
        path = self.path(volume, model, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        floats = [t for t in tensors.values() if t.is_floating_point()]
        dtype = str(floats[0].dtype).removeprefix("torch.") if floats else "float32"
        stored = {k: (t.to(torch.float16) if t.is_floating_point() else t).detach().cpu().contiguous()
                  for k, t in tensors.items()}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(stored, str(tmp), metadata={"volume": volume, "model": model, "index": str(index), "dtype": dtype})
        os.replace(tmp, path)
        self.evict(keep=path)
        return path

    def files(self) -> list[Path]:
        """Every cached embedding file."""
        return list(self.folder.glob("*/*.safetensors"))

    def size(self) -> int:
        """Total bytes of the cached embeddings."""
        return sum(_size(p) for p in self.files())

    def evict(self, keep: Path | None = None) -> None:
        """Delete least recently used files until the total fits ``max_bytes`` (``keep``, the newest, stays)."""
        entries = sorted(((_mtime(p), _size(p), p) for p in self.files()), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if total <= self.max_bytes:
                break
            if p != keep:
                p.unlink(missing_ok=True)
                total -= size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
