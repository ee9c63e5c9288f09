"""Carry a grader's correction on B-scan k to its neighbours k ± n: neighbouring B-scans of a volume are nearly the
same picture, so a cyst drawn once need not be redrawn on every B-scan it crosses.

Streaming: ``propagate_stream`` yields one :class:`PropagatedBscan` at a time, outward from k (first towards the
end of the range, then towards its start), and stops a class in a direction as soon as its mask vanishes or its
confidence drops below ``min_confidence``. ``propagate`` collects the stream into a :class:`Propagation` whose pages
are *proposed* (never accepted): the grader still accepts them. The engines (``flow`` here, ``sam2`` in
``propagate_sam2``) share one signature, :data:`Engine`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY
from oct_wsss.propose.proposal import Cancel, Progress

ENGINES: tuple[str, ...] = ("flow", "sam2")
#: (B-scan index, class id) -> the active student's probability of that class (H, W) in [0, 1], or None.
Prior = Callable[[int, int], "np.ndarray | None"]
#: One direction: (voxels, source index, seed masks per class, target indices in order, classes still carried) ->
#: per target (index, mask per carried class, confidence per carried class). Classes removed from the set by the
#: caller are no longer carried.
Engine = Callable[[np.ndarray, int, dict[int, np.ndarray], Sequence[int], set[int]],
                  Iterator[tuple[int, dict[int, np.ndarray], dict[int, float]]]]


class PropagationError(ValueError):
    """A propagation request that cannot be run (bad B-scan range, labels of another shape, unknown ids)."""


@dataclass
class PropagatedBscan:
    """One propagated B-scan: the carried classes' masks (ids, 0 elsewhere) and each class's confidence."""

    index: int
    page: np.ndarray
    confidence: dict[int, float]


@dataclass
class Stop:
    """Where carrying one class in one direction ended: the last B-scan filled (None: none) and why."""

    class_id: int
    direction: int
    last: int | None
    reason: str


@dataclass
class Propagation:
    """Labels with the propagated B-scans filled, which B-scans are proposed, confidences, stops and provenance."""

    labels: np.ndarray
    proposed: np.ndarray
    confidence: dict[int, dict[int, float]] = field(default_factory=dict)
    stops: list[Stop] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


def check_request(shape: tuple[int, int, int], labels: np.ndarray, source: int, start: int, end: int) -> None:
    """Raise :class:`PropagationError` (one line) unless ``labels`` fit the volume and ``start <= source <= end``
    lie inside it, and B-scan ``source`` holds something to carry."""
    n = shape[0]
    if tuple(labels.shape) != tuple(shape):
        raise PropagationError(f"labels of shape {tuple(labels.shape)} do not fit the volume {tuple(shape)}")
    unknown = sorted(set(np.unique(labels).tolist()) - {c.id for c in ONTOLOGY})
    if unknown:
        raise PropagationError(f"labels hold ids {unknown} outside the ontology (0..{ONTOLOGY[-1].id})")
    if not (0 <= start <= end < n):
        raise PropagationError(f"range {start}:{end} is outside the volume's B-scans 0..{n - 1}")
    if not start <= source <= end:
        raise PropagationError(f"B-scan {source} is outside the range {start}:{end}")
    if not labels[source].any():
        raise PropagationError(f"B-scan {source} holds no lesion to carry")


def propagate_stream(data: np.ndarray, labels: np.ndarray, source: int, start: int, end: int, engine: Engine, *,
                     classes: Sequence[int] | None = None, min_confidence: float = 0.5, min_area: int = 10,
                     cancel: Cancel | None = None, stops: list[Stop] | None = None) -> Iterator[PropagatedBscan]:
    """Yield the propagated B-scans outward from ``source`` over ``start..end``; ``stops`` (when given) receives
    where each class ended in each direction and why ("range end", "mask vanished", "confidence ...", "cancelled")."""
    check_request(data.shape, labels, source, start, end)
    present = [int(c) for c in np.unique(labels[source]) if c and (classes is None or c in classes)]
    if not present:
        raise PropagationError(f"B-scan {source} holds none of the classes {sorted(classes or [])}")
    stops = [] if stops is None else stops
    cancelled = cancel if cancel is not None else lambda: False
    for direction, order in ((1, range(source + 1, end + 1)), (-1, range(source - 1, start - 1, -1))):
        alive = set(present)
        last = dict.fromkeys(present)
        seeds = {c: labels[source] == c for c in present}
        steps = engine(data, source, seeds, list(order), alive) if len(order) and not cancelled() else iter(())
        for index, masks, conf in steps:
            if cancelled():  # the B-scan computed meanwhile is dropped
                break
            page = np.zeros(labels.shape[1:], np.uint8)
            kept = {}
            for c in sorted(alive):
                mask, score = masks.get(c), float(conf.get(c, 0.0))
                reason = ("mask vanished" if mask is None or int(mask.sum()) < min_area else
                          f"confidence {score:.2f} < {min_confidence:.2f}" if score < min_confidence else None)
                if reason is not None:
                    stops.append(Stop(c, direction, last[c], f"{reason} at B-scan {index}"))
                    alive.discard(c)
                    continue
                page[mask & (page == 0)] = c
                kept[c], last[c] = round(score, 4), index
            if kept:
                yield PropagatedBscan(index, page, kept)
            if not alive or cancelled():  # cancelled: the engine computes no further B-scan
                break
        why = "cancelled" if cancelled() else "range end"
        stops += [Stop(c, direction, last[c], why) for c in sorted(alive)]


def propagate(data: np.ndarray, labels: np.ndarray, source: int, start: int, end: int, engine: str = "flow", *,
              engine_fn: Engine | None = None, params: dict[str, Any] | None = None, progress: Progress | None = None,
              cancel: Cancel | None = None, accepted: Collection[int] = (), **options: Any) -> Propagation:
    """Propagate B-scan ``source`` of ``labels`` over ``start..end`` with ``engine`` ("flow", or "sam2" with
    ``engine_fn`` from ``propagate_sam2.sam2_engine``) and return the filled labels (a copy) and provenance. B-scans in
    ``accepted`` (the grader's) are carried through but never written."""
    if engine not in ENGINES:
        raise PropagationError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine_fn is None:
        if engine != "flow":
            raise PropagationError("the sam2 engine needs a SAM 2 checkpoint (--sam2-checkpoint)")
        engine_fn = flow_engine(**(params or {}))
    out, proposed, confidence, stops = np.array(labels, np.uint8), np.zeros(len(labels), bool), {}, []
    total, t0 = end - start, time.perf_counter()
    for done, result in enumerate(propagate_stream(data, labels, source, start, end, engine_fn, cancel=cancel,
                                                   stops=stops, **options), start=1):
        if result.index not in accepted:
            apply_page(out[result.index], result)
            proposed[result.index] = True
            confidence[result.index] = result.confidence
        if progress is not None:
            progress(done, total)
    prov = {"method": "propagate", "engine": engine, "source_bscan": int(source), "range": [int(start), int(end)],
            "parameters": {**(params or {}), **{k: v for k, v in options.items() if k != "classes"},
                           "classes": sorted({c for conf in confidence.values() for c in conf}
                                             | {s.class_id for s in stops})},
            "proposed_bscans": [int(i) for i in np.flatnonzero(proposed)],
            **({"accepted_kept": sorted(int(i) for i in accepted)} if accepted else {}),
            "confidence": {str(i): {str(c): v for c, v in conf.items()} for i, conf in sorted(confidence.items())},
            "stops": [{"class": s.class_id, "direction": "forward" if s.direction > 0 else "backward",
                       "last_filled": s.last, "reason": s.reason} for s in stops],
            "timings": {"total_s": round(time.perf_counter() - t0, 3)}}
    return Propagation(out, proposed, confidence, stops, prov)


def apply_page(page: np.ndarray, result: PropagatedBscan) -> None:
    """Write one propagated B-scan into its ``page`` (H, W) in place: each carried class replaces that class there;
    other classes stay where the carried masks do not cover them."""
    for c in result.confidence:
        page[page == c] = 0
    page[result.page > 0] = result.page[result.page > 0]


def flow_engine(*, smooth: float = 1.5, scale: float = 0.5, refine: bool = True, ring: int = 8, reach: int = 3,
                prior: Prior | None = None) -> Engine:
    """The weight-free engine: TV-L1 optical flow between neighbouring B-scans (at ``scale``) warps each class's mask,
    which is then refined on the target B-scan by the lesion's intensity against its surroundings on the source
    (and by the student's probabilities when ``prior`` gives them). Confidence: the share of the warped mask that
    the target's pixels still support (registration agreement when the lesion has no intensity contrast)."""
    from oct_wsss.propose.flow import carry

    def run(data: np.ndarray, source: int, seeds: dict[int, np.ndarray], order: Sequence[int],
            alive: set[int]) -> Iterator[tuple[int, dict[int, np.ndarray], dict[int, float]]]:
        yield from carry(data, source, seeds, order, alive, smooth=smooth, scale=scale, refine=refine, ring=ring,
                         reach=reach, prior=prior)

    return run
