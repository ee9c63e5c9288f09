"""SAM 2 assist for graders: positive/negative points or a box on one B-scan -> a mask, embeddings cached per B-scan.

The napari SAM 2 widget, scripts and ``oct-wsss sam2-assist`` call this. The B-scan's image embedding is computed
once (``embed``, seconds on a CPU) and kept in an LRU cache keyed by (volume key, B-scan index); every further
prompt on that B-scan only runs SAM 2's prompt encoder and mask decoder. With ``cache_dir`` (a folder of the
project) embeddings also go to disk per (volume hash, model hash, B-scan), so reopening a volume reads them back
instead of recomputing them (``sam2_cache``). Coordinates are (row, column) pixels.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oct_wsss.propose.sam2_backend import DEFAULT_CONFIG, Sam2Backend, SamMask
from oct_wsss.propose.sam2_cache import DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Prompt:
    """Points (row, col) with labels (1 positive, 0 negative) and/or a box (row0, col0, row1, col1), in pixels."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise ValueError(f"{len(self.points)} points but {len(self.labels)} point labels (1 positive, 0 negative)")
        if not self.points and self.box is None:
            raise ValueError("a SAM 2 prompt needs at least one point or a box")
        if set(self.labels) - {0, 1}:
            raise ValueError(f"point labels are 1 (positive) or 0 (negative); got {sorted(set(self.labels))}")


class Sam2Assist:
    """Interactive SAM 2 on whole B-scans with cached embeddings (``last_embed_s``, ``last_prompt_s``: timings)."""

    def __init__(self, checkpoint: str | Path | None, config: str = DEFAULT_CONFIG, device: str = "cpu",
                 cache_size: int = 16, allow_random: bool = False, cache_dir: str | Path | None = None,
                 cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.backend = Sam2Backend(config, checkpoint, device=device, cache_size=cache_size, allow_random=allow_random,
                                   cache_dir=cache_dir, cache_bytes=cache_bytes)
        self.last_embed_s = 0.0
        self.last_prompt_s = 0.0

    def embed(self, bscan: np.ndarray, key: Hashable, where: tuple[str, int] | None = None) -> bool:
        """Make ``bscan`` current (embedding computed unless cached under ``key``, or on disk under ``where``: volume
        hash and B-scan index); True when it was computed now."""
        before = self.backend.embeddings_computed
        start = time.perf_counter()
        self.backend.set_image(bscan, key, where)
        computed = self.backend.embeddings_computed > before
        if computed:
            self.last_embed_s = time.perf_counter() - start
        return computed

    def segment(self, bscan: np.ndarray, prompt: Prompt, key: Hashable,
                where: tuple[str, int] | None = None) -> SamMask:
        """SAM 2's mask (bool, B-scan size) for ``prompt`` on ``bscan``; one point alone picks the best of three."""
        self.embed(bscan, key, where)
        start = time.perf_counter()
        coords = np.asarray([(c, r) for r, c in prompt.points], np.float32).reshape(-1, 2)  # SAM 2 takes (x, y)
        out = self.backend.predict(points=coords if len(coords) else None,
                                   point_labels=np.asarray(prompt.labels, np.int32) if len(coords) else None,
                                   box=None if prompt.box is None else _xyxy(prompt.box),
                                   multimask=len(prompt.points) + (prompt.box is not None) == 1)
        self.last_prompt_s = time.perf_counter() - start
        return out


def paint(page: np.ndarray, mask: np.ndarray, class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels of ``page`` that writing ``class_id`` under ``mask`` changes (what to write)."""
    rows, cols = np.nonzero(np.asarray(mask, bool) & (np.asarray(page) != class_id))
    return rows, cols


def segment_bscan(checkpoint: str | Path, bscan: np.ndarray, *, points: Sequence[tuple[float, float]] = (),
                  labels: Sequence[int] = (), box: tuple[float, float, float, float] | None = None,
                  config: str = DEFAULT_CONFIG, device: str = "cpu") -> SamMask:
    """One-shot: SAM 2 mask of one B-scan for points and/or a box (the Python API of the widget's action)."""
    assist = Sam2Assist(checkpoint, config=config, device=device)
    return assist.segment(bscan, Prompt(tuple(map(tuple, points)), tuple(labels), box), key=0)


def _xyxy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    r0, c0, r1, c1 = box
    return min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1)
