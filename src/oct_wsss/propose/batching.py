"""Batches of B-scans with a GPU out-of-memory fallback: halve the batch and retry, then go on on the CPU (or say
what to do when the proposer cannot move there)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from oct_wsss.propose.proposal import Cancel, ProposalError

T = TypeVar("T")
R = TypeVar("R")


def default_batch_size(device: torch.device) -> int:
    """B-scans per forward: 8 on CUDA (batched with autocast), 2 elsewhere (CPU gains little from more)."""
    return 8 if device.type == "cuda" else 2


def run_in_batches(items: Sequence[T], batch_size: int, work: Callable[[Sequence[T]], Sequence[R]],
                   cancel: Cancel | None = None, on_retry: Callable[[int], None] | None = None,
                   to_cpu: Callable[[], None] | None = None) -> Iterator[R]:
    """Yield ``work(batch)`` results item by item; on CUDA OOM retry the batch at half the size, down to one, then
    once more after ``to_cpu()`` has moved the model to the CPU (without it, a ProposalError says what to do)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size}")
    start = 0
    while start < len(items):
        if cancel is not None and cancel():
            return
        batch = items[start : start + batch_size]
        try:
            results = work(batch)
        except torch.OutOfMemoryError as err:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size = max(1, batch_size // 2)
                if on_retry is not None:
                    on_retry(batch_size)
            elif to_cpu is not None:
                to_cpu()
                to_cpu = None
            else:
                raise ProposalError("the GPU ran out of memory even with one B-scan per batch; close other GPU "
                                    "programs or run on the CPU: --device cpu (device 'cpu' in the widget)") from err
            continue
        yield from results
        start += len(batch)
