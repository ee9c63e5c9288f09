"""HRF stages of ``oct-wsss bench``: SAM 2 image embedding and per-prompt latency, the full iterative HRF run.

SAM 2 is built from the packaged hiera-tiny config with random weights (nothing is downloaded; timing does not
depend on the weights). The iterative run is forced to its full iteration count (threshold 0), the worst case.
"""

from __future__ import annotations

from pathlib import Path

import torch

from oct_wsss.bench.timing import Stage, timed
from oct_wsss.volume import OctVolume

CROP = 72  # the HRF proposer's default crop side (px)


def sam2_stages(volume: OctVolume, device: torch.device, repeats: int) -> list[Stage]:
    """SAM 2 (hiera tiny, random weights): image embedding of one crop, then one box prompt on the cached embedding."""
    from oct_wsss.propose.sam2_backend import Sam2Backend, sam2_available

    if not sam2_available():
        return []
    backend = Sam2Backend(device=device, allow_random=True)
    bscan = volume.data[volume.n_bscans // 2]
    y0, x0 = (bscan.shape[0] - CROP) // 2, (bscan.shape[1] - CROP) // 2
    crop = bscan[y0:y0 + CROP, x0:x0 + CROP]
    box = (CROP / 2 - 2, CROP / 2 - 2, CROP / 2 + 2, CROP / 2 + 2)

    def embed() -> None:
        backend.cache.clear()
        backend.set_image(crop, key="bench")

    embedding = Stage("sam2", f"image embedding ({CROP} x {CROP} crop, hiera tiny)", 1,
                      timed(embed, repeats, device=device))
    backend.set_image(crop, key="bench")
    prompt = Stage("sam2", "box prompt after embedding (cached)", 1,
                   timed(lambda: backend.box(crop, box, key="bench"), repeats, device=device))
    return [embedding, prompt]


def hrf_stages(volume: OctVolume, device: torch.device, repeats: int, checkpoint: str | Path | None = None,
               iterations: int = 6, sam2: bool = True) -> list[Stage]:
    """The full iterative HRF run on one native-size B-scan (LRP, region step, occlusion), classical and SAM 2."""
    from oct_wsss.models.mil import MilConfig, MilNet
    from oct_wsss.propose.hrf import HrfProposer
    from oct_wsss.propose.sam2_backend import Sam2Backend, sam2_available

    if checkpoint is not None:
        base = HrfProposer.from_checkpoint(checkpoint, device=device, threshold=0.0, iterations=iterations)
        net, norm = base.net, {"mean": base.mean, "std": base.std}
    else:
        torch.manual_seed(0)
        net, norm = MilNet(MilConfig(rows=2, width=16, features=64, attention=32)), {"mean": 0.0, "std": 1.0}
    bscan = volume.data[volume.n_bscans // 2]
    refiners: dict[str, Sam2Backend | None] = {"classical": None}
    if sam2 and sam2_available():
        refiners["SAM 2 tiny"] = Sam2Backend(device=device, allow_random=True)
    stages = []
    for name, backend in refiners.items():
        p = HrfProposer(net, norm, sam2=backend, iterations=iterations, threshold=0.0, device=device, warn=False)

        def run(p: HrfProposer = p, backend: Sam2Backend | None = backend) -> None:
            if backend is not None:  # a repeat on the same B-scan would find its crops' embeddings cached
                backend.cache.clear()
            p.segment(bscan)

        stages.append(Stage("hrf", f"full iterative run ({iterations} iterations, {name})", 1,
                            timed(run, max(1, repeats // 2), device=device)))
    return stages
