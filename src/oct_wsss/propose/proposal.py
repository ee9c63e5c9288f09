"""What a proposer returns: per-B-scan results as they stream, and the assembled :class:`Proposal`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from oct_wsss.volume import OctVolume

Progress = Callable[[int, int], None]  # (B-scans done, B-scans to do)
Cancel = Callable[[], bool]  # True when the user asked to stop


class ProposalError(RuntimeError):
    """A proposal could not be made (bad checkpoint for the method, bad volume, device failure); says what to try."""


class ProposalCancelled(RuntimeError):
    """The user cancelled; ``partial`` holds the B-scans finished before the cancel."""

    def __init__(self, partial: Proposal) -> None:
        super().__init__(f"cancelled after {int(partial.done.sum())} of {partial.done.size} B-scans")
        self.partial = partial


@dataclass
class BscanResult:
    """One proposed B-scan: ontology ids (H, W), image-level probabilities (K,), optional class scores (K, H, W)."""

    index: int
    labels: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray | None = None


@dataclass
class Proposal:
    """Labels (n, H, W) uint8 in ontology ids for a volume; ``done`` marks the B-scans that were proposed.

    ``classes`` are the ontology ids the model predicts, the column order of ``probabilities`` (n, K) and of
    ``scores`` (n, K, H, W) float16 when kept. ``provenance`` says method, checkpoint, parameters, device, timings.
    """

    labels: np.ndarray
    classes: tuple[int, ...]
    probabilities: np.ndarray
    done: np.ndarray
    scores: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, volume: OctVolume, classes: Sequence[int], keep_scores: bool = False,
              labels: np.ndarray | None = None) -> Proposal:
        """All-background labels for ``volume``, nothing done yet; ``labels`` may be a zeroed array to fill (e.g. a
        ``np.memmap``, so a volume's labels need not be held in memory)."""
        n, h, w = volume.shape
        k = len(classes)
        if labels is not None and (labels.shape != (n, h, w) or labels.dtype != np.uint8):
            raise ValueError(f"labels must be uint8 {(n, h, w)}; got {labels.dtype} {labels.shape}")
        return cls(labels=np.zeros((n, h, w), np.uint8) if labels is None else labels,
                   classes=tuple(int(c) for c in classes),
                   probabilities=np.full((n, k), np.nan, np.float32), done=np.zeros(n, bool),
                   scores=np.zeros((n, k, h, w), np.float16) if keep_scores else None)

    def add(self, result: BscanResult) -> None:
        """Put one streamed B-scan result in place."""
        i = result.index
        self.labels[i] = result.labels
        self.probabilities[i] = result.probabilities
        if self.scores is not None and result.scores is not None:
            self.scores[i] = result.scores.astype(np.float16)
        self.done[i] = True


@contextmanager
def scratch_labels(shape: tuple[int, int, int], folder: str | Path) -> Iterator[np.ndarray]:
    """A zeroed uint8 memory map in ``folder`` (hidden name, removed on exit) for ``propose(labels=...)``: the labels
    of a large volume then live in the page cache, not in the process's own memory."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".labels-{os.getpid()}.scratch.npy"
    try:
        yield np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=tuple(shape))
    finally:
        path.unlink(missing_ok=True)


class Proposer(Protocol):
    """A loaded model that proposes lesions B-scan by B-scan (the contract every method implements)."""

    method: str
    classes: tuple[int, ...]

    def provenance(self) -> dict[str, Any]:
        """Method, checkpoint id and hash, parameters and device: what a result must record to be reproducible."""
        ...

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        """Yield one result per requested B-scan, in order, as soon as each batch is done."""
        ...
