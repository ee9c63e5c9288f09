"""What ``oct-wsss bench`` measures with: a stage's timings, the timer (warm-up, repeats, CUDA synchronised), peak
memory, the machine, and the speed-up over the baseline; every stage module uses it, so it imports none of them."""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class Stage:
    """Timings of one stage: ``seconds`` per repeat, each covering ``bscans`` B-scans."""

    method: str
    name: str
    bscans: int
    seconds: list[float]
    compare: str | None = None  # stages with the same key are ours vs the baseline's ("gradcam", ...)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "median_s": round(self.median, 5), "min_s": round(min(self.seconds), 5),
                "max_s": round(max(self.seconds), 5), "per_bscan_s": round(self.median / max(self.bscans, 1), 5)}


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones (CUDA synchronised around each)."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def speedups(stages: list[Stage]) -> dict[str, float]:
    """Baseline median / our median for each compared stage (the CAM stage without and with smoothing)."""
    ours = {s.compare: s.median for s in stages if s.compare and s.method != "agm-baseline"}
    base = {s.compare: s.median for s in stages if s.compare and s.method == "agm-baseline"}
    return {k: round(base[k] / ours[k], 2) for k in ours if k in base and ours[k] > 0}


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """Peak resident memory of this process and, on CUDA, peak allocated GPU memory (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mib": round(rss, 1), "peak_gpu_mib": None if gpu is None else round(gpu, 1)}


def machine(device: torch.device) -> dict[str, Any]:
    """Where the figures came from."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
