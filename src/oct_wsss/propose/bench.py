"""``oct-wsss bench``: time each proposal stage on a volume (warm-up, then repeats; median and spread), peak memory.

Models come from the checkpoints given, else are built with random weights at the recipe sizes (timing does not
depend on the weights). Stages are grouped by method; each row says what one repeat covers (a B-scan, a batch, a
volume) so per-B-scan figures can be compared across rows.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oct_wsss.propose.device import resolve_device
from oct_wsss.volume import OctVolume


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


def student_stages(volume: OctVolume, device: torch.device, repeats: int, checkpoint: str | Path | None = None,
                   input_size: tuple[int, int] = (256, 256)) -> list[Stage]:
    """Student proposal of one B-scan and of the whole volume (default batch); without a checkpoint a U-Net
    (width 16, depth 4) at 256 x 256, the size a student recipe for 496 x 512 B-scans uses."""
    from oct_wsss.models.student import StudentConfig, StudentNet
    from oct_wsss.propose.student import StudentProposer

    if checkpoint is not None:
        proposer = StudentProposer.from_checkpoint(checkpoint, device=device)
    else:
        torch.manual_seed(0)
        net = StudentNet(StudentConfig(n_outputs=4, arch="unet", width=16, depth=4))
        proposer = StudentProposer(net, (1, 2, 3), input_size, device=device)
    everything = list(range(volume.n_bscans))
    one = Stage("student", "propose 1 B-scan", 1,
                timed(lambda: list(proposer.run(volume, [0])), repeats, device=device))
    vol = Stage("student", f"propose volume ({volume.n_bscans} B-scans, batch {proposer.batch_size})",
                volume.n_bscans, timed(lambda: list(proposer.run(volume, everything)), max(1, repeats // 2),
                                       device=device))
    return [one, vol]


#: AGM built with random weights when no checkpoint is given: the paper's size, or (quick) the demo checkpoint's
AGM_SIZES = {"paper": ({"backbone": "resnet50"}, 512), "small": ({"backbone": "resnet18", "width": 16,
                                                                 "encoder_width": 8, "output_stride": 16}, 128)}


def agm_stages(volume: OctVolume, device: torch.device, repeats: int, checkpoint: str | Path | None = None,
               size: str = "paper", baseline: bool = True) -> list[Stage]:
    """GANomaly x̂, AGM classification, GradCAM with/without smoothing, refinement, post-processing, full proposal;
    with ``baseline`` (and the grad-cam package installed) the same CAMs the straightforward way, for the speed-up."""
    from oct_wsss.explain.augment import IDENTITY, SMOOTHING
    from oct_wsss.explain.refine import enhance
    from oct_wsss.models.agm import AgmConfig, AgmNet
    from oct_wsss.models.ganomaly import GanomalyConfig, Generator
    from oct_wsss.propose.agm import AgmProposer, network_inputs
    from oct_wsss.propose.inputs import retina_mask, soft_mask, to_unit
    from oct_wsss.propose.pseudo import class_scores, pseudo_labels

    if checkpoint is not None:
        p = AgmProposer.from_checkpoint(checkpoint, device=device)
    else:
        torch.manual_seed(0)
        arch, side = AGM_SIZES[size]
        net = AgmNet(AgmConfig(n_classes=3, image_channels=1, **arch))
        gen = Generator(GanomalyConfig(image_size=side, nc=1, **({"nz": 64, "ngf": 16} if size == "small" else {})))
        p = AgmProposer(net, gen, (1, 2, 3), (side, side), device=device)
    b = min(p.batch_size, volume.n_bscans)
    batch = [volume.data[i] for i in range(b)]
    x = torch.nn.functional.interpolate(torch.from_numpy(np.stack([to_unit(i) for i in batch]))[:, None],
                                        size=p.input_size, mode="bilinear", antialias=True).to(device)
    retina = torch.from_numpy(np.stack([retina_mask(xi[0]) for xi in x.cpu().numpy()]))[:, None].float().to(device)
    inputs = network_inputs(p.generator, x, retina, p.net.config.image_channels)
    outputs = p.lesion_outputs
    native = volume.shape[1:]

    def classify() -> None:
        with torch.inference_mode():
            p.net(*inputs)

    cams, logits = p.gradcam(inputs, outputs, augmentations=IDENTITY, output_size=native, return_logits=True)
    weights = torch.sigmoid(logits[:, outputs])
    small = torch.nn.functional.interpolate(cams, size=p.input_size, mode="bilinear")
    soft = soft_mask(np.stack([retina_mask(i) for i in batch]))
    cams_np = cams.cpu().numpy()
    stages = [
        ("GANomaly x̂", lambda: network_inputs(p.generator, x, retina, p.net.config.image_channels)),
        ("AGM classification", classify),
        ("GradCAM, no smoothing", lambda: p.gradcam(inputs, outputs, augmentations=IDENTITY, output_size=native)),
        (f"GradCAM, smoothing ({len(SMOOTHING)} augmentations, one pass)",
         lambda: p.gradcam(inputs, outputs, augmentations=SMOOTHING, output_size=native)),
        ("refinement (SM ⊙ x)", lambda: enhance(x, small, weights)),
        ("pseudo-label post-processing", lambda: pseudo_labels(class_scores(cams_np, soft), p.classes, 0.5)),
        ("full proposal", lambda: p.scores(batch)),
    ]
    keys = {"GradCAM, no smoothing": "gradcam"}
    out = [Stage("agm", name, b, timed(fn, repeats, device=device),
                 keys.get(name, "gradcam_smoothing" if name.startswith("GradCAM, smoothing") else None))
           for name, fn in stages]
    from oct_wsss.propose.bench_baseline import BaselineCam, grad_cam_available

    if baseline and grad_cam_available():
        base = BaselineCam(p)
        for smooth in (False, True):
            out.append(Stage("agm-baseline", f"GradCAM {'aug_smooth' if smooth else 'no smoothing'} "
                             "(grad-cam package, per image and class, fp32)", b,
                             timed(lambda s=smooth: base(inputs, outputs, native, smooth=s), max(1, repeats // 2),
                                   device=device), "gradcam_smoothing" if smooth else "gradcam"))
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


METHODS = ("student", "agm", "sam2", "hrf")


def run_bench(volume: OctVolume, *, device: str = "auto", repeats: int = 5, methods: tuple[str, ...] = METHODS,
              checkpoints: dict[str, str | Path] | None = None, read: Callable[[], Any] | None = None,
              agm_size: str = "paper", baseline: bool = True, hrf_iterations: int = 6,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage of the asked methods on ``volume``; ``read`` (optional) times reading the file it came from.

    ``speedup`` in the report is the baseline's median over ours for the CAM stage (when the baseline ran).
    """
    from oct_wsss.propose.bench_hrf import hrf_stages, sam2_stages

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
