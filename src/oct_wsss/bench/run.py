"""``oct-wsss bench``: every stage of the asked methods timed on one volume (warm-up, repeats; median and spread),
peak memory and the machine, as a report and a text table. Untrained models get random weights at recipe sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from oct_wsss.bench.hrf import hrf_stages, sam2_stages
from oct_wsss.bench.stages import agm_stages, layers_stages, student_stages
from oct_wsss.bench.timing import Stage, machine, peak_memory, speedups, timed
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.volume import OctVolume

METHODS = ("student", "agm", "sam2", "hrf", "layers")


def run_bench(volume: OctVolume, *, device: str = "auto", repeats: int = 5, methods: tuple[str, ...] = METHODS,
              checkpoints: dict[str, str | Path] | None = None, read: Callable[[], Any] | None = None,
              agm_size: str = "paper", baseline: bool = True, hrf_iterations: int = 6,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage of the asked methods on ``volume``; ``read`` (optional) times reading the file it came from.

    ``speedup`` in the report is the baseline's median over ours for the CAM stage (when the baseline ran).
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    checkpoints = checkpoints or {}
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"no benchmark for method {unknown[0]!r}; available: {', '.join(METHODS)}")
    stages: list[Stage] = []
    if read is not None:
        stages.append(Stage("io", "read volume", volume.n_bscans, timed(read, repeats)))
    for method in methods:
        log(f"bench: {method} ...")
        if method == "student":
            stages += student_stages(volume, dev, repeats, checkpoints.get(method))
        elif method == "agm":
            stages += agm_stages(volume, dev, repeats, checkpoints.get(method), size=agm_size, baseline=baseline)
        elif method == "sam2":
            stages += sam2_stages(volume, dev, repeats)
        elif method == "layers":
            stages += layers_stages(volume, dev, repeats, checkpoints.get(method))
        else:
            stages += hrf_stages(volume, dev, repeats, checkpoints.get(method), iterations=hrf_iterations,
                                 sam2="sam2" in methods)
    return {"machine": machine(dev), "volume": list(volume.shape), "repeats": repeats,
            "stages": [s.row() for s in stages], "speedup": speedups(stages), **peak_memory(dev)}


def table(report: dict[str, Any]) -> str:
    """The report as an aligned text table."""
    head = f"{'method':<12} {'stage':<64} {'B-scans':>7} {'median s':>9} {'min s':>8} {'max s':>8} {'s/B-scan':>9}"
    lines = [head, "-" * len(head)]
    for s in report["stages"]:
        lines.append(f"{s['method']:<12} {s['name']:<64} {s['bscans']:>7} {s['median_s']:>9.4f} {s['min_s']:>8.4f} "
                     f"{s['max_s']:>8.4f} {s['per_bscan_s']:>9.4f}")
    m = report["machine"]
    for key, value in report.get("speedup", {}).items():
        lines.append(f"speed-up of {key} over the grad-cam baseline: {value}x")
    lines.append(f"peak RSS {report['peak_rss_mib']} MiB; peak GPU {report['peak_gpu_mib']} MiB; "
                 f"{m['device']}, {m['threads']} threads, torch {m['torch']}")
    return "\n".join(lines)
